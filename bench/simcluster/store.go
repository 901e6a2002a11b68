package simcluster

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"
)

// historySize is how many events each cluster keeps for watches that resume from a
// resourceVersion; an older one gets 410 Gone and relists, as from a real server.
const historySize = 2048

// Cluster is one simulated cluster.
type Cluster struct {
	server *Server
	name   string
	token  string

	requests sync.Map // verb -> *atomic.Int64

	mu      sync.Mutex
	rv      uint64
	objects map[*resource]map[string]*entry
	history []event
	// oldest is the resourceVersion before the first event history holds.
	oldest   uint64
	watchers map[*watcher]struct{}
	// changed is closed, and replaced, on every write.
	changed chan struct{}
}

// entry is a stored object and its JSON.
type entry struct {
	obj    runtime.Object
	meta   metav1.Object
	raw    []byte
	labels labels.Set
}

type event struct {
	rv        uint64
	typ       watch.EventType
	res       *resource
	namespace string
	name      string
	cur       *entry
	// oldLabels are the labels before the change, for selectors.
	oldLabels labels.Set
}

type watcher struct {
	res       *resource
	namespace string
	labels    labels.Selector
	fields    fields.Selector
	ch        chan event
	closed    bool
}

func newCluster(s *Server, name, token string) *Cluster {
	c := &Cluster{server: s, name: name, token: token, rv: 1000, oldest: 1000,
		objects: map[*resource]map[string]*entry{}, watchers: map[*watcher]struct{}{}, changed: make(chan struct{})}
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{corev1.LabelMetadataName: ns}},
			Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
		c.seed(n)
	}
	c.seed(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cluster-admin",
		Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}, {NonResourceURLs: []string{"*"}, Verbs: []string{"*"}}}})
	return c
}

// seed stores an object at creation, with no event.
func (c *Cluster) seed(obj runtime.Object) {
	gvks, _, _ := scheme.ObjectKinds(obj)
	for _, r := range resources {
		if r.gvk() == gvks[0] {
			m, _ := meta.Accessor(obj)
			prepareCreate(r, m, time.Now())
			c.rv++
			m.SetResourceVersion(strconv.FormatUint(c.rv, 10))
			c.oldest = c.rv
			c.put(r, newEntry(r, obj))
			return
		}
	}
}

func prepareCreate(r *resource, m metav1.Object, now time.Time) {
	m.SetUID(uuid.NewUUID())
	m.SetCreationTimestamp(metav1.NewTime(now.Truncate(time.Second)))
	if r.generation {
		m.SetGeneration(1)
	}
}

func newEntry(r *resource, obj runtime.Object) *entry {
	obj.GetObjectKind().SetGroupVersionKind(r.gvk())
	m, _ := meta.Accessor(obj)
	raw, err := json.Marshal(obj)
	if err != nil {
		raw = []byte("{}")
	}
	return &entry{obj: obj, meta: m, raw: raw, labels: labels.Set(m.GetLabels())}
}

func key(namespace, name string) string { return namespace + "/" + name }

func (c *Cluster) put(r *resource, e *entry) {
	m := c.objects[r]
	if m == nil {
		m = map[string]*entry{}
		c.objects[r] = m
	}
	m[key(e.meta.GetNamespace(), e.meta.GetName())] = e
}

func (c *Cluster) get(r *resource, namespace, name string) *entry {
	return c.objects[r][key(namespace, name)]
}

// commit stores (or, for watch.Deleted, removes) an object under c.mu, gives it the
// next resourceVersion and tells the watches. obj is the new state.
func (c *Cluster) commit(r *resource, typ watch.EventType, obj runtime.Object, old *entry) *entry {
	c.rv++
	m, _ := meta.Accessor(obj)
	m.SetResourceVersion(strconv.FormatUint(c.rv, 10))
	e := newEntry(r, obj)
	k := key(m.GetNamespace(), m.GetName())
	if typ == watch.Deleted {
		delete(c.objects[r], k)
	} else {
		c.put(r, e)
	}
	ev := event{rv: c.rv, typ: typ, res: r, namespace: m.GetNamespace(), name: m.GetName(), cur: e}
	if old != nil {
		ev.oldLabels = old.labels
	}
	c.history = append(c.history, ev)
	if len(c.history) > historySize {
		drop := len(c.history) - historySize
		c.oldest = c.history[drop-1].rv
		c.history = append(c.history[:0:0], c.history[drop:]...)
	}
	for w := range c.watchers {
		c.send(w, ev)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return e
}

// send delivers an event to a watch that selects it; a watch that cannot keep up
// is closed, and its client resumes from the last resourceVersion it saw.
func (c *Cluster) send(w *watcher, ev event) {
	if w.closed {
		return
	}
	out, ok := w.filter(ev)
	if !ok {
		return
	}
	select {
	case w.ch <- out:
	default:
		c.dropWatcher(w)
	}
}

func (c *Cluster) dropWatcher(w *watcher) {
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	delete(c.watchers, w)
}

// filter turns an event into what a watch with selectors sees: an object that
// stops matching is DELETED for it, one that starts matching is ADDED.
func (w *watcher) filter(ev event) (event, bool) {
	if ev.res != w.res || (w.namespace != "" && ev.namespace != w.namespace) {
		return ev, false
	}
	if !w.fieldsMatch(ev.cur) {
		return ev, false
	}
	now := w.labels.Matches(ev.cur.labels)
	if ev.typ != watch.Modified {
		return ev, now
	}
	before := w.labels.Matches(ev.oldLabels)
	switch {
	case now && !before:
		ev.typ = watch.Added
	case !now && before:
		ev.typ = watch.Deleted
	case !now:
		return ev, false
	}
	return ev, true
}

func (w *watcher) fieldsMatch(e *entry) bool {
	if w.fields == nil || w.fields.Empty() {
		return true
	}
	return w.fields.Matches(fields.Set{"metadata.name": e.meta.GetName(), "metadata.namespace": e.meta.GetNamespace()})
}

func (c *Cluster) closeWatches() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range c.watchers {
		c.dropWatcher(w)
	}
}

func (c *Cluster) count(verb string) {
	v, _ := c.requests.LoadOrStore(verb, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// Counts returns the requests this cluster served, by verb, plus "write" for the
// sum of create, update, patch, apply and delete.
func (c *Cluster) Counts() map[string]int64 {
	out := map[string]int64{}
	c.requests.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	for _, w := range []string{"create", "update", "patch", "apply", "delete"} {
		out["write"] += out[w]
	}
	return out
}

// Changed returns a channel that is closed at the next write to the cluster.
func (c *Cluster) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// ResourceVersion is the cluster's latest resourceVersion.
func (c *Cluster) ResourceVersion() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rv
}

// ObjectCount is how many objects the cluster stores.
func (c *Cluster) ObjectCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.objects {
		n += len(m)
	}
	return n
}

// Add stores a new object in the cluster, as a create by its admin would (watches
// see it), for setting a cluster up in-process: Nodes, say. The object's status is
// kept.
func (c *Cluster) Add(obj runtime.Object) error {
	gvks, _, err := scheme.ObjectKinds(obj)
	if err != nil {
		return err
	}
	for _, r := range resources {
		if r.gvk() != gvks[0] || r.review {
			continue
		}
		obj = obj.DeepCopyObject()
		m, err := meta.Accessor(obj)
		if err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.get(r, m.GetNamespace(), m.GetName()) != nil {
			return fmt.Errorf("%s %s/%s exists", r.kind, m.GetNamespace(), m.GetName())
		}
		prepareCreate(r, m, time.Now())
		c.commit(r, watch.Added, obj, nil)
		return nil
	}
	return fmt.Errorf("simulated clusters do not serve %s", gvks[0])
}

// HasObject tells whether the cluster stores an object (group "" for the core group).
func (c *Cluster) HasObject(group, resource, namespace, name string) bool {
	for _, r := range resources {
		if r.gvr.Group == group && r.gvr.Resource == resource {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.get(r, namespace, name) != nil
		}
	}
	return false
}
