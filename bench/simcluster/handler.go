package simcluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/applyconfigurations"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
)

// Version is what /version reports.
var Version = version.Info{Major: "1", Minor: "36", GitVersion: "v1.36.3", GitCommit: "simcluster", GitTreeState: "clean",
	BuildDate: "2026-01-01T00:00:00Z", GoVersion: "go1.26", Compiler: "gc", Platform: "linux/amd64"}

var (
	scheme        = clientgoscheme.Scheme
	codecs        = serializer.NewCodecFactory(scheme)
	typeConverter = applyconfigurations.NewTypeConverter(scheme)

	fieldManagers sync.Map // fmKey -> *managedfields.FieldManager
)

type fmKey struct {
	gvk schema.GroupVersionKind
	sub string
}

func fieldManager(r *resource, sub string) (*managedfields.FieldManager, error) {
	k := fmKey{r.gvk(), sub}
	if f, ok := fieldManagers.Load(k); ok {
		return f.(*managedfields.FieldManager), nil
	}
	f, err := managedfields.NewDefaultFieldManager(typeConverter, scheme, scheme, scheme, r.gvk(), r.gvk().GroupVersion(), sub, nil)
	if err != nil {
		return nil, err
	}
	fieldManagers.Store(k, f)
	return f, nil
}

// request is one parsed resource request.
type request struct {
	res       *resource
	namespace string
	name      string
	sub       string
	id        Identity
}

func (c *Cluster) serve(w http.ResponseWriter, r *http.Request, p string) {
	if !c.authenticate(r) {
		writeError(w, apierrors.NewUnauthorized("Unauthorized"))
		return
	}
	id := adminIdentity()
	if u := r.Header.Get("Impersonate-User"); u != "" {
		id = Identity{User: u, Groups: append(r.Header.Values("Impersonate-Group"), "system:authenticated")}
	}
	switch p {
	case "/version", "/version/":
		c.count("get")
		writeJSON(w, http.StatusOK, Version)
		return
	case "/readyz", "/livez", "/healthz":
		c.count("get")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
		return
	case "/api", "/api/":
		c.count("get")
		writeJSON(w, http.StatusOK, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
		return
	case "/apis", "/apis/":
		c.count("get")
		writeJSON(w, http.StatusOK, apiGroupList())
		return
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	var gv schema.GroupVersion
	var rest []string
	switch {
	case segs[0] == "api" && len(segs) >= 2:
		gv, rest = schema.GroupVersion{Version: segs[1]}, segs[2:]
	case segs[0] == "apis" && len(segs) == 2:
		for _, g := range apiGroupList().Groups {
			if g.Name == segs[1] {
				c.count("get")
				g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
				writeJSON(w, http.StatusOK, g)
				return
			}
		}
		writeError(w, apierrors.NewNotFound(schema.GroupResource{}, p))
		return
	case segs[0] == "apis" && len(segs) >= 3:
		gv, rest = schema.GroupVersion{Group: segs[1], Version: segs[2]}, segs[3:]
	default:
		writeError(w, apierrors.NewNotFound(schema.GroupResource{}, p))
		return
	}
	if len(rest) == 0 {
		l := apiResourceList(gv)
		if len(l.APIResources) == 0 {
			writeError(w, apierrors.NewNotFound(schema.GroupResource{}, p))
			return
		}
		c.count("get")
		writeJSON(w, http.StatusOK, l)
		return
	}
	req := request{id: id}
	if rest[0] == "namespaces" && len(rest) >= 3 && byGVR[gv.WithResource(rest[2])] != nil && byGVR[gv.WithResource(rest[2])].namespaced {
		req.namespace, rest = rest[1], rest[2:]
	}
	req.res = byGVR[gv.WithResource(rest[0])]
	if req.res == nil || len(rest) > 3 || (req.namespace != "" && !req.res.namespaced) {
		writeError(w, apierrors.NewNotFound(schema.GroupResource{Group: gv.Group, Resource: rest[0]}, ""))
		return
	}
	if len(rest) > 1 {
		req.name = rest[1]
	}
	if len(rest) > 2 {
		req.sub = rest[2]
		if req.sub != "status" || !req.res.status {
			writeError(w, apierrors.NewNotFound(req.res.gvr.GroupResource(), req.name))
			return
		}
	}
	c.serveResource(w, r, req)
}

func (c *Cluster) serveResource(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	verb := ""
	switch r.Method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			verb = "watch"
		case req.name == "":
			verb = "list"
		default:
			verb = "get"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
	default:
		writeError(w, apierrors.NewMethodNotSupported(req.res.gvr.GroupResource(), r.Method))
		return
	}
	counted := verb
	if verb == "patch" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/apply-patch") {
		counted = "apply"
	}
	c.count(counted)
	if req.res.review {
		if verb != "create" {
			writeError(w, apierrors.NewMethodNotSupported(req.res.gvr.GroupResource(), r.Method))
			return
		}
		c.serveReview(w, r, req)
		return
	}
	if ok, _ := c.Allowed(req.id, Attributes{Verb: verb, Group: req.res.gvr.Group, Resource: req.res.gvr.Resource, Subresource: req.sub,
		Namespace: req.namespace, Name: req.name}); !ok {
		writeError(w, apierrors.NewForbidden(req.res.gvr.GroupResource(), req.name,
			fmt.Errorf("user %q cannot %s resource %q in API group %q", req.id.User, verb, req.res.gvr.Resource, req.res.gvr.Group)))
		return
	}
	switch verb {
	case "get":
		c.serveGet(w, r, req)
	case "list":
		c.serveList(w, r, req)
	case "watch":
		c.serveWatch(w, r, req)
	case "create":
		c.serveCreate(w, r, req)
	case "update":
		c.serveUpdate(w, r, req)
	case "patch":
		c.servePatch(w, r, req)
	case "delete":
		c.serveDelete(w, r, req)
	}
}

func apiGroupList() *metav1.APIGroupList {
	l := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, gv := range groupVersions() {
		if gv.Group == "" {
			continue
		}
		v := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
		l.Groups = append(l.Groups, metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v})
	}
	return l
}

// asMetadata tells whether the client asked for PartialObjectMetadata(List).
func asMetadata(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadata")
}

func partial(e *entry) *metav1.PartialObjectMetadata {
	om := e.obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: *om}
}

func (c *Cluster) serveGet(w http.ResponseWriter, r *http.Request, req request) {
	c.mu.Lock()
	e := c.get(req.res, req.namespace, req.name)
	c.mu.Unlock()
	if e == nil {
		writeError(w, apierrors.NewNotFound(req.res.gvr.GroupResource(), req.name))
		return
	}
	if asMetadata(r) {
		writeJSON(w, http.StatusOK, partial(e))
		return
	}
	writeRaw(w, http.StatusOK, e.raw)
}

// selectors parses labelSelector and fieldSelector.
func selectors(r *http.Request) (labels.Selector, fields.Selector, error) {
	q := r.URL.Query()
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest("invalid labelSelector: " + err.Error())
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest("invalid fieldSelector: " + err.Error())
	}
	for _, req := range fs.Requirements() {
		if req.Field != "metadata.name" && req.Field != "metadata.namespace" {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", req.Field))
		}
	}
	return ls, fs, nil
}

func (c *Cluster) serveList(w http.ResponseWriter, r *http.Request, req request) {
	ls, fs, err := selectors(r)
	if err != nil {
		writeError(w, err)
		return
	}
	wt := &watcher{res: req.res, namespace: req.namespace, labels: ls, fields: fs}
	c.mu.Lock()
	var items []*entry
	for _, e := range c.objects[req.res] {
		if (req.namespace == "" || e.meta.GetNamespace() == req.namespace) && ls.Matches(e.labels) && wt.fieldsMatch(e) {
			items = append(items, e)
		}
	}
	rv := strconv.FormatUint(c.rv, 10)
	c.mu.Unlock()
	sortEntries(items)
	var buf bytes.Buffer
	if asMetadata(r) {
		l := metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadataList", APIVersion: "meta.k8s.io/v1"},
			ListMeta: metav1.ListMeta{ResourceVersion: rv}}
		for _, e := range items {
			l.Items = append(l.Items, *partial(e))
		}
		writeJSON(w, http.StatusOK, l)
		return
	}
	fmt.Fprintf(&buf, `{"kind":%q,"apiVersion":%q,"metadata":{"resourceVersion":%q},"items":[`, req.res.kind+"List", req.res.gvr.GroupVersion().String(), rv)
	for i, e := range items {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(e.raw)
	}
	buf.WriteString("]}")
	writeRaw(w, http.StatusOK, buf.Bytes())
}

func sortEntries(es []*entry) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && key(es[j].meta.GetNamespace(), es[j].meta.GetName()) < key(es[j-1].meta.GetNamespace(), es[j-1].meta.GetName()); j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func (c *Cluster) serveWatch(w http.ResponseWriter, r *http.Request, req request) {
	ls, fs, err := selectors(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	if req.name != "" {
		fs = fields.AndSelectors(fs, fields.OneTermEqualSelector("metadata.name", req.name))
	}
	wt := &watcher{res: req.res, namespace: req.namespace, labels: ls, fields: fs, ch: make(chan event, 1024)}
	rvParam := q.Get("resourceVersion")
	initial := q.Get("sendInitialEvents") == "true" || rvParam == "" || rvParam == "0"
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	var first []event
	c.mu.Lock()
	if initial {
		for _, e := range c.objects[req.res] {
			if (req.namespace == "" || e.meta.GetNamespace() == req.namespace) && ls.Matches(e.labels) && wt.fieldsMatch(e) {
				first = append(first, event{typ: watch.Added, res: req.res, cur: e})
			}
		}
	} else {
		from, perr := strconv.ParseUint(rvParam, 10, 64)
		if perr != nil {
			c.mu.Unlock()
			writeError(w, apierrors.NewBadRequest("invalid resourceVersion"))
			return
		}
		if from < c.oldest {
			c.mu.Unlock()
			writeError(w, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", from, c.oldest)))
			return
		}
		for _, ev := range c.history {
			if ev.rv > from {
				if out, ok := wt.filter(ev); ok {
					first = append(first, out)
				}
			}
		}
	}
	rv := c.rv
	c.watchers[wt] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.dropWatcher(wt)
		c.mu.Unlock()
	}()

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	enc := func(typ watch.EventType, raw []byte) error {
		var buf bytes.Buffer
		fmt.Fprintf(&buf, `{"type":%q,"object":`, typ)
		buf.Write(raw)
		buf.WriteString("}\n")
		_, err := w.Write(buf.Bytes())
		return err
	}
	for _, ev := range first {
		if enc(ev.typ, ev.cur.raw) != nil {
			return
		}
	}
	if q.Get("sendInitialEvents") == "true" && bookmarks {
		bm := fmt.Sprintf(`{"kind":%q,"apiVersion":%q,"metadata":{"resourceVersion":"%d","annotations":{%q:"true"}}}`,
			req.res.kind, req.res.gvr.GroupVersion().String(), rv, metav1.InitialEventsAnnotationKey)
		if enc(watch.Bookmark, []byte(bm)) != nil {
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	timeout := 30 * time.Minute
	if s, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && s > 0 {
		timeout = time.Duration(s) * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-wt.ch:
			if !ok {
				return
			}
			if enc(ev.typ, ev.cur.raw) != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		case <-timer.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// decodeBody decodes a request body into a new object of the resource's kind.
func decodeBody(r *http.Request, res *resource) (runtime.Object, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
	if err != nil {
		return nil, apierrors.NewBadRequest("cannot read the body")
	}
	obj, err := scheme.New(res.gvk())
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	gvk := res.gvk()
	out, got, err := codecs.UniversalDeserializer().Decode(body, &gvk, obj)
	if err != nil {
		return nil, apierrors.NewBadRequest("the body cannot be decoded: " + err.Error())
	}
	if got.Kind != res.kind || got.GroupVersion() != res.gvr.GroupVersion() {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the body holds %s, not %s", got, res.gvk()))
	}
	return out, nil
}

// managerName is the field manager of a write: ?fieldManager, else the user
// agent's first part, as the API server names it.
func managerName(r *http.Request) string {
	if m := r.URL.Query().Get("fieldManager"); m != "" {
		return m
	}
	ua, _, _ := strings.Cut(r.Header.Get("User-Agent"), "/")
	if ua == "" {
		return "unknown"
	}
	return ua
}

func dryRun(r *http.Request) bool { return len(r.URL.Query()["dryRun"]) > 0 }

func (c *Cluster) serveCreate(w http.ResponseWriter, r *http.Request, req request) {
	if req.name != "" || req.sub != "" {
		writeError(w, apierrors.NewMethodNotSupported(req.res.gvr.GroupResource(), "POST"))
		return
	}
	obj, err := decodeBody(r, req.res)
	if err != nil {
		writeError(w, err)
		return
	}
	m, _ := meta.Accessor(obj)
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + strings.ToLower(string(types.UID(randSuffix()))))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkPlace(req, m); err != nil {
		writeError(w, err)
		return
	}
	if c.get(req.res, m.GetNamespace(), m.GetName()) != nil {
		writeError(w, apierrors.NewAlreadyExists(req.res.gvr.GroupResource(), m.GetName()))
		return
	}
	prepareCreate(req.res, m, time.Now())
	m.SetResourceVersion("")
	m.SetManagedFields(nil)
	m.SetDeletionTimestamp(nil)
	created(obj)
	if f, ferr := fieldManager(req.res, ""); ferr == nil {
		empty, _ := scheme.New(req.res.gvk())
		obj = f.UpdateNoErrors(empty, obj, managerName(r))
	}
	if dryRun(r) {
		writeJSON(w, http.StatusCreated, obj)
		return
	}
	e := c.commit(req.res, watch.Added, obj, nil)
	writeRaw(w, http.StatusCreated, e.raw)
}

// created sets what the API server sets on a new object of some kinds.
func created(obj runtime.Object) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[corev1.LabelMetadataName] = ns.Name
		ns.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
		ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
	}
}

// checkPlace checks an object's name and namespace against the request, under c.mu.
func (c *Cluster) checkPlace(req request, m metav1.Object) error {
	if req.res.namespaced {
		switch {
		case m.GetNamespace() == "":
			m.SetNamespace(req.namespace)
		case req.namespace != "" && m.GetNamespace() != req.namespace:
			return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		if m.GetNamespace() == "" {
			return apierrors.NewBadRequest("the namespace of the object is missing")
		}
	} else {
		m.SetNamespace("")
	}
	if m.GetName() == "" {
		return apierrors.NewInvalid(req.res.gvk().GroupKind(), "", nil)
	}
	if req.name != "" && m.GetName() != req.name {
		return apierrors.NewBadRequest("the name of the object does not match the name on the URL")
	}
	if req.res.namespaced {
		ns := c.get(byGVR[gvr("", "namespaces")], "", m.GetNamespace())
		if ns == nil {
			return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, m.GetNamespace())
		}
		if ns.meta.GetDeletionTimestamp() != nil {
			return apierrors.NewForbidden(req.res.gvr.GroupResource(), m.GetName(),
				fmt.Errorf("unable to create new content in namespace %s because it is being terminated", m.GetNamespace()))
		}
	}
	return nil
}

func (c *Cluster) serveUpdate(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := decodeBody(r, req.res)
	if err != nil {
		writeError(w, err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, _ := meta.Accessor(obj)
	if err := c.checkPlace(req, m); err != nil {
		writeError(w, err)
		return
	}
	old := c.get(req.res, m.GetNamespace(), m.GetName())
	if old == nil {
		writeError(w, apierrors.NewNotFound(req.res.gvr.GroupResource(), m.GetName()))
		return
	}
	if rv := m.GetResourceVersion(); rv != "" && rv != old.meta.GetResourceVersion() {
		writeError(w, apierrors.NewConflict(req.res.gvr.GroupResource(), m.GetName(),
			errors.New("the object has been modified; please apply your changes to the latest version and try again")))
		return
	}
	c.finishWrite(w, r, req, old, obj, http.StatusOK)
}

// finishWrite stores obj as the new state of old (update, patch or apply): it keeps
// what the request may not change, records managed fields, and writes nothing when
// nothing changed.
func (c *Cluster) finishWrite(w http.ResponseWriter, r *http.Request, req request, old *entry, obj runtime.Object, code int) {
	m, _ := meta.Accessor(obj)
	om := old.meta
	m.SetUID(om.GetUID())
	m.SetCreationTimestamp(om.GetCreationTimestamp())
	m.SetDeletionTimestamp(om.GetDeletionTimestamp())
	m.SetResourceVersion(om.GetResourceVersion())
	m.SetGeneration(om.GetGeneration())
	if req.res.status {
		obj = keepParts(old.obj, obj, req.sub == "status")
		m, _ = meta.Accessor(obj)
	}
	if ns, ok := obj.(*corev1.Namespace); ok {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[corev1.LabelMetadataName] = ns.Name
	}
	if r.Header.Get("Content-Type") != "application/apply-patch+yaml" {
		if f, err := fieldManager(req.res, req.sub); err == nil {
			obj = f.UpdateNoErrors(old.obj.DeepCopyObject(), obj, managerName(r))
			m, _ = meta.Accessor(obj)
		}
	}
	if req.res.generation && specChanged(old.obj, obj) {
		m.SetGeneration(om.GetGeneration() + 1)
	}
	if apiequality.Semantic.DeepEqual(old.obj, obj) {
		writeRaw(w, http.StatusOK, old.raw)
		return
	}
	if dryRun(r) {
		writeJSON(w, code, obj)
		return
	}
	if om.GetDeletionTimestamp() != nil && len(m.GetFinalizers()) == 0 {
		e := c.commit(req.res, watch.Deleted, obj, old)
		writeRaw(w, http.StatusOK, e.raw)
		return
	}
	e := c.commit(req.res, watch.Modified, obj, old)
	writeRaw(w, code, e.raw)
}

// keepParts keeps old's status in a write of the object, or everything but the
// status in a write of /status.
func keepParts(old, cur runtime.Object, statusWrite bool) runtime.Object {
	ou, err1 := runtime.DefaultUnstructuredConverter.ToUnstructured(old)
	nu, err2 := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	if err1 != nil || err2 != nil {
		return cur
	}
	var out map[string]any
	if statusWrite {
		out = runtime.DeepCopyJSON(ou)
		if st, ok := nu["status"]; ok {
			out["status"] = st
		} else {
			delete(out, "status")
		}
		// Managed fields follow the write.
		if mf, ok, _ := unstructured.NestedFieldCopy(nu, "metadata", "managedFields"); ok {
			_ = unstructured.SetNestedField(out, mf, "metadata", "managedFields")
		}
	} else {
		out = nu
		if st, ok := ou["status"]; ok {
			out["status"] = st
		} else {
			delete(out, "status")
		}
	}
	res := cur.DeepCopyObject()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out, res); err != nil {
		return cur
	}
	return res
}

func specChanged(old, cur runtime.Object) bool {
	ou, err1 := runtime.DefaultUnstructuredConverter.ToUnstructured(old)
	nu, err2 := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	if err1 != nil || err2 != nil {
		return false
	}
	delete(ou, "metadata")
	delete(ou, "status")
	delete(nu, "metadata")
	delete(nu, "status")
	return !apiequality.Semantic.DeepEqual(ou, nu)
}

func (c *Cluster) servePatch(w http.ResponseWriter, r *http.Request, req request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
	if err != nil {
		writeError(w, apierrors.NewBadRequest("cannot read the body"))
		return
	}
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.get(req.res, req.namespace, req.name)
	if ct == string(types.ApplyPatchType) || ct == "application/apply-patch+yaml" {
		c.serveApply(w, r, req, old, body)
		return
	}
	if old == nil {
		writeError(w, apierrors.NewNotFound(req.res.gvr.GroupResource(), req.name))
		return
	}
	var patched []byte
	switch types.PatchType(ct) {
	case types.MergePatchType:
		patched, err = jsonpatch.MergePatch(old.raw, body)
	case types.StrategicMergePatchType:
		patched, err = strategicpatch.StrategicMergePatch(old.raw, body, old.obj)
	case types.JSONPatchType:
		var p jsonpatch.Patch
		if p, err = jsonpatch.DecodePatch(body); err == nil {
			patched, err = p.Apply(old.raw)
		}
	default:
		writeError(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason: metav1.StatusReasonUnsupportedMediaType, Message: "the body of the request was in an unknown format: " + ct}})
		return
	}
	if err != nil {
		writeError(w, apierrors.NewBadRequest("the patch cannot be applied: "+err.Error()))
		return
	}
	obj, _ := scheme.New(req.res.gvk())
	gvk := req.res.gvk()
	if _, _, err := codecs.UniversalDeserializer().Decode(patched, &gvk, obj); err != nil {
		writeError(w, apierrors.NewBadRequest("the patched object cannot be decoded: "+err.Error()))
		return
	}
	m, _ := meta.Accessor(obj)
	if rv := m.GetResourceVersion(); rv != "" && rv != old.meta.GetResourceVersion() {
		writeError(w, apierrors.NewConflict(req.res.gvr.GroupResource(), req.name,
			errors.New("the object has been modified; please apply your changes to the latest version and try again")))
		return
	}
	if m.GetName() != req.name || m.GetNamespace() != req.namespace {
		writeError(w, apierrors.NewBadRequest("a patch cannot change the name or namespace"))
		return
	}
	c.finishWrite(w, r, req, old, obj, http.StatusOK)
}

// serveApply is server-side apply, under c.mu.
func (c *Cluster) serveApply(w http.ResponseWriter, r *http.Request, req request, old *entry, body []byte) {
	q := r.URL.Query()
	manager := q.Get("fieldManager")
	if manager == "" {
		writeError(w, apierrors.NewBadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"))
		return
	}
	js, err := yaml.YAMLToJSON(body)
	if err != nil {
		writeError(w, apierrors.NewBadRequest("the apply body cannot be decoded: "+err.Error()))
		return
	}
	applied := &unstructured.Unstructured{}
	if err := json.Unmarshal(js, &applied.Object); err != nil {
		writeError(w, apierrors.NewBadRequest("the apply body cannot be decoded: "+err.Error()))
		return
	}
	if applied.GroupVersionKind() != req.res.gvk() {
		writeError(w, apierrors.NewBadRequest(fmt.Sprintf("the apply body holds %s, not %s", applied.GroupVersionKind(), req.res.gvk())))
		return
	}
	if applied.GetName() != req.name || (applied.GetNamespace() != "" && applied.GetNamespace() != req.namespace) {
		writeError(w, apierrors.NewBadRequest("the name or namespace of the apply body does not match the request"))
		return
	}
	f, err := fieldManager(req.res, req.sub)
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	var live runtime.Object
	if old != nil {
		live = old.obj.DeepCopyObject()
	} else {
		live, _ = scheme.New(req.res.gvk())
	}
	out, err := f.Apply(live, applied, manager, q.Get("force") == "true")
	if err != nil {
		var st apierrors.APIStatus
		if errors.As(err, &st) {
			writeError(w, err)
			return
		}
		writeError(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	obj, err := typed(req.res, out)
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	m, _ := meta.Accessor(obj)
	m.SetName(req.name)
	if old == nil {
		if err := c.checkPlace(req, m); err != nil {
			writeError(w, err)
			return
		}
		prepareCreate(req.res, m, time.Now())
		created(obj)
		if dryRun(r) {
			writeJSON(w, http.StatusCreated, obj)
			return
		}
		e := c.commit(req.res, watch.Added, obj, nil)
		writeRaw(w, http.StatusCreated, e.raw)
		return
	}
	m.SetNamespace(req.namespace)
	c.finishWrite(w, r, req, old, obj, http.StatusOK)
}

// typed converts the field manager's output to the resource's Go type.
func typed(res *resource, obj runtime.Object) (runtime.Object, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		out, err := scheme.New(res.gvk())
		if err != nil {
			return nil, err
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	return obj, nil
}

func (c *Cluster) serveDelete(w http.ResponseWriter, r *http.Request, req request) {
	if req.name == "" {
		writeError(w, apierrors.NewMethodNotSupported(req.res.gvr.GroupResource(), "deletecollection"))
		return
	}
	var opts metav1.DeleteOptions
	if body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20)); len(bytes.TrimSpace(body)) > 0 {
		// JSON or protobuf, as the client sent it.
		if _, _, err := codecs.UniversalDeserializer().Decode(body, nil, &opts); err != nil {
			writeError(w, apierrors.NewBadRequest("the DeleteOptions cannot be decoded"))
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.get(req.res, req.namespace, req.name)
	if old == nil {
		writeError(w, apierrors.NewNotFound(req.res.gvr.GroupResource(), req.name))
		return
	}
	if p := opts.Preconditions; p != nil {
		if (p.UID != nil && *p.UID != old.meta.GetUID()) || (p.ResourceVersion != nil && *p.ResourceVersion != old.meta.GetResourceVersion()) {
			writeError(w, apierrors.NewConflict(req.res.gvr.GroupResource(), req.name,
				errors.New("the precondition of the delete does not hold")))
			return
		}
	}
	if dryRun(r) {
		writeRaw(w, http.StatusOK, old.raw)
		return
	}
	obj := old.obj.DeepCopyObject()
	m, _ := meta.Accessor(obj)
	if len(m.GetFinalizers()) > 0 && req.res.gvr.Resource != "namespaces" {
		if m.GetDeletionTimestamp() == nil {
			now := metav1.Now()
			m.SetDeletionTimestamp(&now)
			zero := int64(0)
			m.SetDeletionGracePeriodSeconds(&zero)
			old = c.commit(req.res, watch.Modified, obj, old)
		}
		writeRaw(w, http.StatusOK, old.raw)
		return
	}
	if req.res.gvr.Resource == "namespaces" {
		// A namespace goes at once with everything in it, as if its namespace
		// controller had run.
		for _, res := range resources {
			if !res.namespaced {
				continue
			}
			for _, e := range c.objects[res] {
				if e.meta.GetNamespace() == req.name {
					c.commit(res, watch.Deleted, e.obj.DeepCopyObject(), e)
				}
			}
		}
	}
	e := c.commit(req.res, watch.Deleted, obj, old)
	writeRaw(w, http.StatusOK, e.raw)
}

func (c *Cluster) serveReview(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := decodeBody(r, req.res)
	if err != nil {
		writeError(w, err)
		return
	}
	switch rev := obj.(type) {
	case *authorizationv1.SubjectAccessReview:
		if rev.Spec.User == "" && len(rev.Spec.Groups) == 0 {
			writeError(w, apierrors.NewInvalid(req.res.gvk().GroupKind(), "", nil))
			return
		}
		if rev.Spec.ResourceAttributes == nil && rev.Spec.NonResourceAttributes == nil {
			writeError(w, apierrors.NewInvalid(req.res.gvk().GroupKind(), "", nil))
			return
		}
		if ok, _ := c.Allowed(req.id, Attributes{Verb: "create", Group: "authorization.k8s.io", Resource: "subjectaccessreviews"}); !ok {
			writeError(w, apierrors.NewForbidden(req.res.gvr.GroupResource(), "", errors.New("cannot create subjectaccessreviews")))
			return
		}
		rev.Status = c.review(Identity{User: rev.Spec.User, Groups: rev.Spec.Groups}, rev.Spec)
	case *authorizationv1.SelfSubjectAccessReview:
		spec := authorizationv1.SubjectAccessReviewSpec{ResourceAttributes: rev.Spec.ResourceAttributes, NonResourceAttributes: rev.Spec.NonResourceAttributes}
		if spec.ResourceAttributes == nil && spec.NonResourceAttributes == nil {
			writeError(w, apierrors.NewInvalid(req.res.gvk().GroupKind(), "", nil))
			return
		}
		rev.Status = c.review(req.id, spec)
	}
	obj.GetObjectKind().SetGroupVersionKind(req.res.gvk())
	writeJSON(w, http.StatusCreated, obj)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, apierrors.NewInternalError(err))
		return
	}
	writeRaw(w, code, b)
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, err error) {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		st = apierrors.NewInternalError(err)
	}
	s := st.Status()
	s.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	b, _ := json.Marshal(s)
	writeRaw(w, int(s.Code), b)
}

var suffixMu sync.Mutex
var suffixN uint64

func randSuffix() string {
	suffixMu.Lock()
	defer suffixMu.Unlock()
	suffixN++
	return strconv.FormatUint(suffixN+uint64(time.Now().UnixNano()%100000), 36)
}
