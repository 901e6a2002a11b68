// Package targetsync makes one cluster hold exactly a desired set of objects: it
// applies what is missing or different with server-side apply under one field manager,
// and prunes what this hub applied there for this ManagedCluster but no longer wants.
// It is the one mechanism for writing into a target: intents, the agent's own objects
// and cleanup on deletion all go through it. It knows nothing of the hub's API, so
// that the agent can run it too (pull mode).
//
// Safety rules:
//   - Ownership is by label: every object applied carries Drover's managed-by label,
//     the hub's ID and the ManagedCluster's name. An object that names another hub or
//     another ManagedCluster, or that lacks Drover's label, is never changed or
//     deleted; a desired object whose name it holds is reported as a conflict. (An
//     object with Drover's label and no hub label predates hub IDs; it is adopted.)
//   - Prune deletes only what carries this hub's and this cluster's labels, and never
//     what belongs to a held intent (one whose spec cannot be resolved right now).
//   - Nothing is written when the live object already holds what is desired.
//   - A namespace is pruned by releasing it (removing Drover's labels), unless it is
//     annotated for deletion and Drover created it: an adopted namespace is only ever
//     released. Its workloads and data stay.
//
// Writes go out in parallel (Workers) and each has its own timeout, so a sync's time
// scales with its work instead of hitting one fixed budget. Prunes go first, so that a
// revocation never waits behind a large apply, and pending applies go out smallest
// intent first. Options.Interrupted stops a long sync between writes when a newer
// desired state exists; the caller syncs again at once.
package targetsync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// FieldOwner is the one field manager Drover applies with.
const FieldOwner = "drover"

// Defaults of a Syncer.
const (
	// DefaultWorkers is how many writes go out at once to one cluster.
	DefaultWorkers = 16
	// DefaultRequestTimeout bounds each request.
	DefaultRequestTimeout = 10 * time.Second
	// lookupListThreshold: with more objects of one kind to look up than this, one
	// metadata-only LIST of the kind replaces a GET per object.
	lookupListThreshold = 32
)

// Syncer applies and prunes in one cluster, for one hub and one ManagedCluster.
type Syncer struct {
	// Cached reads the objects Drover owns (label-selected); it may be a cache.
	Cached client.Reader
	// Direct reads and writes straight through to the API server. It is used to
	// look at objects that are not Drover's (which the cache does not hold), and for
	// every write.
	Direct client.Client
	// Kinds are the lists of the kinds the syncer prunes, e.g. &rbacv1.ClusterRoleList{}
	// (DefaultKinds, KindsNamed). Each is listed from Cached once per Sync, for
	// pruning and for comparing the desired objects of that kind.
	Kinds []client.ObjectList
	// Hub is this hub's ID and Cluster the ManagedCluster's name: the values of
	// render.HubLabel and render.ClusterLabel on what this syncer owns.
	Hub, Cluster string
	// Workers bounds the writes in flight (DefaultWorkers if zero).
	Workers int
	// RequestTimeout bounds each request (DefaultRequestTimeout if zero).
	RequestTimeout time.Duration
	// Describe classifies a request error into a reason and a message that never
	// quotes the target (remote.Describe); DescribeStatus if nil.
	Describe func(error) (reason, message string)
	// Gone, if set, tells whether a ManagedCluster of this hub no longer exists.
	// This hub's objects left in the target by such a cluster (deleted with
	// deletionPolicy Orphan) are taken over when desired; they are never pruned
	// unless taken over.
	Gone func(cluster string) bool
}

// ErrBeforeWrite wraps the error of Options.BeforeWrite.
var ErrBeforeWrite = errors.New("cannot prepare the first write")

// kindInfo describes one kind the syncer writes.
type kindInfo struct {
	name string
	gvk  schema.GroupVersionKind
	new  func() client.Object
	list func() client.ObjectList
}

// kindTable lists every kind the syncer writes, in prune order: namespaced objects
// first and namespaces last, so that a released namespace has already lost Drover's
// objects; bindings before the roles they grant.
var kindTable = []kindInfo{
	{"Deployment", appsv1.SchemeGroupVersion.WithKind("Deployment"), func() client.Object { return &appsv1.Deployment{} }, func() client.ObjectList { return &appsv1.DeploymentList{} }},
	{"RoleBinding", rbacv1.SchemeGroupVersion.WithKind("RoleBinding"), func() client.Object { return &rbacv1.RoleBinding{} }, func() client.ObjectList { return &rbacv1.RoleBindingList{} }},
	{"Role", rbacv1.SchemeGroupVersion.WithKind("Role"), func() client.Object { return &rbacv1.Role{} }, func() client.ObjectList { return &rbacv1.RoleList{} }},
	{"ServiceAccount", corev1.SchemeGroupVersion.WithKind("ServiceAccount"), func() client.Object { return &corev1.ServiceAccount{} }, func() client.ObjectList { return &corev1.ServiceAccountList{} }},
	{"NetworkPolicy", networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"), func() client.Object { return &networkingv1.NetworkPolicy{} }, func() client.ObjectList { return &networkingv1.NetworkPolicyList{} }},
	{"LimitRange", corev1.SchemeGroupVersion.WithKind("LimitRange"), func() client.Object { return &corev1.LimitRange{} }, func() client.ObjectList { return &corev1.LimitRangeList{} }},
	{"ResourceQuota", corev1.SchemeGroupVersion.WithKind("ResourceQuota"), func() client.Object { return &corev1.ResourceQuota{} }, func() client.ObjectList { return &corev1.ResourceQuotaList{} }},
	{"ClusterRoleBinding", rbacv1.SchemeGroupVersion.WithKind("ClusterRoleBinding"), func() client.Object { return &rbacv1.ClusterRoleBinding{} }, func() client.ObjectList { return &rbacv1.ClusterRoleBindingList{} }},
	{"ClusterRole", rbacv1.SchemeGroupVersion.WithKind("ClusterRole"), func() client.Object { return &rbacv1.ClusterRole{} }, func() client.ObjectList { return &rbacv1.ClusterRoleList{} }},
	{"Namespace", corev1.SchemeGroupVersion.WithKind("Namespace"), func() client.Object { return &corev1.Namespace{} }, func() client.ObjectList { return &corev1.NamespaceList{} }},
}

// kinds, kindByType and kindByListType index kindTable by kind name, by Go type
// and by the Go type of its list.
var kinds, kindByType, kindByListType = func() (map[string]kindInfo, map[reflect.Type]string, map[reflect.Type]string) {
	byName, byType, byListType := map[string]kindInfo{}, map[reflect.Type]string{}, map[reflect.Type]string{}
	for _, k := range kindTable {
		byName[k.name] = k
		byType[reflect.TypeOf(k.new())] = k.name
		byListType[reflect.TypeOf(k.list())] = k.name
	}
	return byName, byType, byListType
}()

// DefaultKinds are the kinds rendering produces, in prune order.
func DefaultKinds() []client.ObjectList {
	out := make([]client.ObjectList, 0, len(kindTable))
	for _, k := range kindTable {
		out = append(out, k.list())
	}
	return out
}

// KindsNamed are the lists of the named kinds (as Key.Kind names them), in prune
// order; unknown names are left out.
func KindsNamed(names ...string) []client.ObjectList {
	var out []client.ObjectList
	for _, k := range kindTable {
		if slices.Contains(names, k.name) {
			out = append(out, k.list())
		}
	}
	return out
}

// Options of one Sync.
type Options struct {
	// Adoptable names namespaces that may be taken over when they exist without
	// Drover's label.
	Adoptable map[string]bool
	// UseExisting names namespaces that are used as they are when they exist
	// without Drover's label (never labelled, never pruned).
	UseExisting map[string]bool
	// NamespacePolicy maps each project that still exists to its current
	// namespaceDeletionPolicy. A namespace leaving a project that still exists goes
	// by that, rather than by the annotation it was last applied with.
	NamespacePolicy map[string]string
	// Hold lists intents (render.HeldKey) whose objects are never pruned.
	Hold map[string]bool
	// Interrupted, if set, is asked before each write: when it returns true the
	// sync stops and returns ErrInterrupted (a newer desired state exists).
	Interrupted func() bool
	// BeforeWrite, if set, is called once before the first write; if it fails,
	// nothing is written and Sync returns its error. (The hub adds its cleanup
	// finalizer there: a cluster never written to needs no cleanup.)
	BeforeWrite func(context.Context) error
}

// Key identifies an object in a cluster.
type Key struct {
	Kind      string
	Namespace string
	Name      string
}

func (k Key) String() string {
	if k.Namespace != "" {
		return k.Kind + " " + k.Namespace + "/" + k.Name
	}
	return k.Kind + " " + k.Name
}

// KeyOf returns an object's key; its kind comes from its Go type.
func KeyOf(o client.Object) Key {
	return Key{Kind: kindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
}

func kindOf(o runtime.Object) string {
	if k, ok := kindByType[reflect.TypeOf(o)]; ok {
		return k
	}
	if k := o.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	return fmt.Sprintf("%T", o)
}

// Report says what a Sync did.
type Report struct {
	// Applied and Pruned count the writes made.
	Applied, Pruned int
	// Failed maps each desired object that the cluster does not hold as desired to
	// the reason, always a *Error. Objects not in Failed are held as desired.
	Failed map[Key]error
	// PruneFailed lists objects that should have gone but are still there.
	PruneFailed map[Key]error
	// Held counts objects kept only because their intent is held.
	Held int
}

// Reasons of a *Error.
const (
	// ReasonConflict: the name is taken by an object that is not this hub's and
	// this cluster's.
	ReasonConflict = "Conflict"
	// ReasonNamespaceNotHeld: the object's namespace could not be held.
	ReasonNamespaceNotHeld = "NamespaceNotHeld"
	// ReasonRoleNotHeld: a binding's ClusterRole, one Drover renders, could not be
	// made to hold (it belongs to another hub, say); the binding is not applied.
	ReasonRoleNotHeld = "RoleNotHeld"
	// ReasonWaiting: the object is waiting for something in the target (an object
	// being deleted, a namespace changing hands); it is retried.
	ReasonWaiting = "Waiting"
	// ReasonNoMatch: the target does not serve the object's kind.
	ReasonNoMatch = "NoMatch"
)

// Error is the outcome of one object that could not be made to hold.
type Error struct {
	// Reason is ReasonConflict, ReasonNamespaceNotHeld, ReasonWaiting, or the
	// reason remote.Describe gives a request error (Forbidden, Invalid, Timeout...).
	Reason string
	// Message is in Drover's words and never quotes a target's response.
	Message string
	// Err is the underlying error, for errors.Is; never shown to users.
	Err error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// ErrInterrupted is returned when Options.Interrupted stopped a sync.
var ErrInterrupted = errors.New("sync interrupted by a newer desired state")

// ErrConflict is wrapped by failures caused by an object that exists and is not this
// hub's and this cluster's.
var ErrConflict = errors.New("exists and is not managed by this Drover hub for this cluster")

// DescribeStatus is the default Syncer.Describe: it keeps only the HTTP status.
func DescribeStatus(err error) (string, string) {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		// Only the code: the status's reason and message come from the target.
		code := int(s.Status().Code)
		reason := strings.ReplaceAll(http.StatusText(code), " ", "")
		if reason == "" {
			reason = "HTTP" + strconv.Itoa(code)
		}
		return reason, fmt.Sprintf("the target refused it (%d %s)", code, http.StatusText(code))
	}
	return "Failed", "the request failed"
}

func (s *Syncer) requestError(key Key, what string, err error) *Error {
	describe := s.Describe
	if describe == nil {
		describe = DescribeStatus
	}
	reason, msg := describe(err)
	return &Error{Reason: reason, Message: fmt.Sprintf("%s %s %s", key, what, msg), Err: err}
}

// owner says whose an object in the target is.
type owner int

const (
	ownerNone     owner = iota // no Drover label
	ownerUs                    // this hub, this cluster
	ownerLegacy                // Drover's label, no hub label: from before hub IDs, adopted
	ownerOther                 // another hub, or another cluster of this hub
	ownerApplied               // no Drover label, but Drover's field manager applied it
	ownerOrphaned              // this hub, a ManagedCluster that no longer exists
)

func (s *Syncer) ownerOf(o metav1.Object) (owner, string) {
	l := o.GetLabels()
	if l[render.ManagedByLabel] != render.ManagedByValue {
		if appliedByUs(o) {
			return ownerApplied, ""
		}
		return ownerNone, ""
	}
	hub, cluster := l[render.HubLabel], l[render.ClusterLabel]
	switch {
	case hub == "":
		if cluster != "" && cluster != s.Cluster {
			return ownerOther, "it belongs to ManagedCluster " + cluster
		}
		return ownerLegacy, ""
	case hub != s.Hub:
		return ownerOther, "it belongs to another Drover hub (" + hub + ")"
	case cluster != s.Cluster && s.Gone != nil && s.Gone(cluster):
		return ownerOrphaned, ""
	case cluster != s.Cluster:
		return ownerOther, "it belongs to ManagedCluster " + cluster + " on this hub, which manages the same cluster"
	}
	return ownerUs, ""
}

// prunable tells whether an owned object listed from the target may be pruned by this
// syncer: it is this hub's and this cluster's, or a pre-hub-ID object of an intent or
// of this cluster's agent.
func (s *Syncer) prunable(o client.Object) bool {
	ow, _ := s.ownerOf(o)
	switch ow {
	case ownerUs:
		return true
	case ownerLegacy:
		l := o.GetLabels()
		return l[render.RoleTemplateLabel] != "" || l[render.AccessBindingLabel] != "" || l[render.ProjectLabel] != "" ||
			(l[render.ComponentLabel] == render.AgentComponent && l[render.ClusterLabel] == s.Cluster)
	}
	return false
}

// Sync makes the cluster hold desired: prune what is owned and not desired (unless
// held), then apply what differs. It returns an error only when it could not even
// read the cluster, or was interrupted; the per-object outcome is in the Report.
func (s *Syncer) Sync(ctx context.Context, desired []client.Object, opts Options) (Report, error) {
	rep := Report{Failed: map[Key]error{}, PruneFailed: map[Key]error{}}
	var beforeOnce sync.Once
	var beforeErr error
	beforeWrite := func(ctx context.Context) error {
		if opts.BeforeWrite == nil {
			return nil
		}
		beforeOnce.Do(func() { beforeErr = opts.BeforeWrite(ctx) })
		if beforeErr != nil {
			return fmt.Errorf("%w: %w", ErrBeforeWrite, beforeErr)
		}
		return nil
	}
	want := make(map[Key]bool, len(desired))
	for _, d := range desired {
		want[KeyOf(d)] = true
	}
	held, err := s.snapshot(ctx)
	if err != nil {
		return rep, err
	}
	// The agent goes after everything else, and the binding that lets the hub act
	// through the agent's tunnel goes last of all: removing it first would cut the
	// hub off before it has cleaned up.
	for _, pass := range prunePasses {
		if err := s.prune(ctx, held, want, opts, beforeWrite, &rep, pass); err != nil {
			return rep, err
		}
	}

	// Compare with the cache; collect what must be looked at or written.
	var pending []client.Object
	var lookups []client.Object
	lives := map[Key]client.Object{}
	for _, d := range desired {
		key := KeyOf(d)
		live, err := held.get(ctx, s, d, key)
		switch {
		case err == nil:
			// The desired labels include the hub's and the cluster's, so an
			// equivalent object is this syncer's own.
			if render.Equivalent(d, live) {
				continue
			}
			// A copy: the snapshot's objects are the cache's own.
			lives[key] = live.DeepCopyObject().(client.Object)
			pending = append(pending, d)
		case apierrors.IsNotFound(err):
			lookups = append(lookups, d)
			pending = append(pending, d)
		case meta.IsNoMatchError(err):
			rep.Failed[key] = &Error{Reason: ReasonNoMatch, Message: key.String() + ": the target does not serve this kind", Err: err}
		default:
			return rep, fmt.Errorf("read %s from the cache: %w", key, err)
		}
	}
	existing, err := s.lookup(ctx, lookups)
	if err != nil {
		return rep, err
	}
	// A namespace used as it is (never labelled) needs no write: leave it out, so
	// that a sync with nothing else to do writes nothing, not even the finalizer.
	pending = slices.DeleteFunc(pending, func(d client.Object) bool {
		key := KeyOf(d)
		m, ok := existing[key]
		if key.Kind != "Namespace" || !ok || !opts.UseExisting[key.Name] {
			return false
		}
		ow, _ := s.ownerOf(m)
		return ow == ownerNone
	})
	if len(pending) == 0 {
		return rep, nil
	}
	if err := beforeWrite(ctx); err != nil {
		return rep, err
	}

	// Namespaces first (what goes into them needs them), then everything else,
	// smallest intent first so that a small change never waits behind a big one.
	var namespaces, roles, rest []client.Object
	for _, d := range pending {
		switch KeyOf(d).Kind {
		case "Namespace":
			namespaces = append(namespaces, d)
		case "ClusterRole":
			roles = append(roles, d)
		default:
			rest = append(rest, d)
		}
	}
	sortByIntentSize(rest)
	var mu sync.Mutex
	// Objects that failed, by key, for the objects that need them.
	unheld := map[Key]error{}
	record := func(key Key, err error, applied bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			rep.Failed[key] = err
			unheld[key] = err
		case applied:
			rep.Applied++
		}
	}
	work := func(d client.Object) error {
		key := KeyOf(d)
		// Never put an object into a namespace Drover was meant to hold but does not
		// (say, one that belongs to someone else): that would grant access there.
		// Never bind to a ClusterRole of Drover's name that it could not make hold:
		// it may be another hub's, with other rules.
		for _, dep := range dependencies(d) {
			mu.Lock()
			depErr, bad := unheld[dep.key]
			mu.Unlock()
			if bad {
				record(key, &Error{Reason: dep.reason, Message: fmt.Sprintf("%s: %s is not held: %s", key, dep.key, depErr.Error()), Err: depErr}, false)
				return nil
			}
		}
		applied, err := s.ensure(ctx, d, key, lives[key], existing, opts, &mu, &rep)
		record(key, err, applied)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	for _, batch := range [][]client.Object{namespaces, roles, rest} {
		if err := s.parallel(ctx, batch, opts.Interrupted, work); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// prune removes what this syncer owns and no longer wants, namespaces last.
// prunePasses split pruning so that the hub's own way into a target goes last.
var prunePasses = []func(client.Object) bool{
	func(o client.Object) bool { return o.GetLabels()[render.ComponentLabel] != render.AgentComponent },
	func(o client.Object) bool {
		return o.GetLabels()[render.ComponentLabel] == render.AgentComponent && !isTunnelBinding(o) && !isAgentServiceAccount(o)
	},
	isTunnelBinding,
	// The agent's ServiceAccount is never deleted on its own: in tunnel mode its
	// token is the hub's way in. It goes with the agent's namespace.
}

func isAgentServiceAccount(o client.Object) bool {
	_, ok := o.(*corev1.ServiceAccount)
	return ok && o.GetName() == render.AgentName && o.GetNamespace() == render.AgentNamespace
}

func isTunnelBinding(o client.Object) bool {
	_, ok := o.(*rbacv1.ClusterRoleBinding)
	return ok && o.GetName() == render.AgentTunnelBindingName && o.GetLabels()[render.ComponentLabel] == render.AgentComponent
}

// held is what the cache holds with Drover's label of each kind the syncer works
// with (Syncer.Kinds), read once per Sync, without copies (a cache shares its
// objects, so nothing here is ever changed: what is written or removed is copied
// first). The prune passes and the comparison with the desired objects all read it,
// rather than list every kind once per pass and get every desired object again.
type held struct {
	// kinds are the kinds listed, in Syncer.Kinds' (prune) order.
	kinds []heldKind
	// byKey indexes every object listed; listed says which kinds were.
	byKey  map[Key]client.Object
	listed map[string]bool
	// notServed names the kinds the target does not serve.
	notServed map[string]bool
}

type heldKind struct {
	name  string
	items []client.Object
}

// snapshot lists what the cache holds of each kind in s.Kinds.
func (s *Syncer) snapshot(ctx context.Context) (*held, error) {
	h := &held{byKey: map[Key]client.Object{}, listed: map[string]bool{}, notServed: map[string]bool{}}
	for _, list := range s.Kinds {
		name, ok := kindByListType[reflect.TypeOf(list)]
		if !ok {
			return nil, fmt.Errorf("the syncer does not work with %T", list)
		}
		// Bounded too: a cache that has to start an informer waits for a target
		// that may have stopped answering.
		err := s.withTimeout(ctx, func(ctx context.Context) error {
			return s.Cached.List(ctx, list, client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}, client.UnsafeDisableDeepCopy)
		})
		if err != nil {
			if meta.IsNoMatchError(err) {
				h.notServed[name] = true
				continue
			}
			return nil, fmt.Errorf("list %T: %w", list, err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		k := heldKind{name: name, items: make([]client.Object, 0, len(items))}
		for _, item := range items {
			obj := item.(client.Object)
			k.items = append(k.items, obj)
			h.byKey[KeyOf(obj)] = obj
		}
		h.kinds = append(h.kinds, k)
		h.listed[name] = true
	}
	return h, nil
}

// get returns the cached state of desired object d, a copy, or a NotFound or
// NoMatch error. A kind that the snapshot did not list is read from the cache.
func (h *held) get(ctx context.Context, s *Syncer, d client.Object, key Key) (client.Object, error) {
	switch {
	case h.listed[key.Kind]:
		o, ok := h.byKey[key]
		if !ok {
			return nil, apierrors.NewNotFound(schema.GroupResource{Group: kinds[key.Kind].gvk.Group, Resource: strings.ToLower(key.Kind)}, key.Name)
		}
		return o, nil
	case h.notServed[key.Kind]:
		return nil, &meta.NoKindMatchError{GroupKind: kinds[key.Kind].gvk.GroupKind()}
	}
	live := kinds[key.Kind].new()
	err := s.withTimeout(ctx, func(ctx context.Context) error { return s.Cached.Get(ctx, client.ObjectKeyFromObject(d), live) })
	return live, err
}

func (s *Syncer) prune(ctx context.Context, h *held, want map[Key]bool, opts Options, beforeWrite func(context.Context) error, rep *Report, pass func(client.Object) bool) error {
	var mu sync.Mutex
	for _, k := range h.kinds {
		var gone []client.Object
		for _, obj := range k.items {
			if !pass(obj) || want[KeyOf(obj)] || !s.prunable(obj) || !obj.GetDeletionTimestamp().IsZero() {
				continue
			}
			if render.Held(opts.Hold, obj) && !ofGoneProject(obj, opts) {
				rep.Held++
				continue
			}
			gone = append(gone, withPolicy(obj.DeepCopyObject().(client.Object), opts, obj.GetLabels()[render.ProjectLabel]))
		}
		if len(gone) > 0 {
			if err := beforeWrite(ctx); err != nil {
				return err
			}
		}
		err := s.parallel(ctx, gone, nil, func(obj client.Object) error {
			err := s.withTimeout(ctx, func(ctx context.Context) error { return Prune(ctx, s.Direct, obj) })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.PruneFailed[KeyOf(obj)] = s.requestError(KeyOf(obj), "could not be removed:", err)
			} else {
				rep.Pruned++
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// withPolicy returns a namespace with the deletion policy its project (still there)
// has now, rather than the one it was last applied with; anything else unchanged.
func withPolicy(obj client.Object, opts Options, project string) client.Object {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj
	}
	policy, ok := opts.NamespacePolicy[project]
	if !ok {
		return obj
	}
	ns = ns.DeepCopy()
	if ns.Annotations == nil {
		ns.Annotations = map[string]string{}
	}
	ns.Annotations[render.NamespaceDeletionPolicyAnnotation] = policy
	return ns
}

// ofGoneProject tells whether an object belongs to a project that no longer exists:
// such objects go even when another of their intents is held (a binding that still
// names the deleted project, say), so that no access outlives its project.
func ofGoneProject(o client.Object, opts Options) bool {
	p := o.GetLabels()[render.ProjectLabel]
	if p == "" {
		return false
	}
	_, exists := opts.NamespacePolicy[p]
	return !exists
}

// parallel runs fn on every object with at most Workers at once. It stops early when
// ctx ends or interrupted returns true.
func (s *Syncer) parallel(ctx context.Context, objs []client.Object, interrupted func() bool, fn func(client.Object) error) error {
	if len(objs) == 0 {
		return nil
	}
	workers := s.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	workers = min(workers, len(objs))
	next := make(chan client.Object)
	var wg sync.WaitGroup
	var once sync.Once
	var stopErr error
	stop := make(chan struct{})
	halt := func(err error) {
		once.Do(func() { stopErr = err; close(stop) })
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range next {
				if err := fn(o); err != nil {
					halt(err)
				}
			}
		}()
	}
feed:
	for _, o := range objs {
		if interrupted != nil && interrupted() {
			halt(ErrInterrupted)
		}
		select {
		case <-stop:
			break feed
		default:
		}
		select {
		case next <- o:
		case <-stop:
			break feed
		case <-ctx.Done():
			halt(ctx.Err())
			break feed
		}
	}
	close(next)
	wg.Wait()
	return stopErr
}

func (s *Syncer) withTimeout(ctx context.Context, fn func(context.Context) error) error {
	t := s.RequestTimeout
	if t <= 0 {
		t = DefaultRequestTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	return fn(rctx)
}

// lookup finds which of objs exist in the target without being in the cache (that is,
// without Drover's label, or not yet seen), by metadata only.
func (s *Syncer) lookup(ctx context.Context, objs []client.Object) (map[Key]*metav1.PartialObjectMetadata, error) {
	out := map[Key]*metav1.PartialObjectMetadata{}
	byKind := map[string][]client.Object{}
	for _, o := range objs {
		k := KeyOf(o).Kind
		byKind[k] = append(byKind[k], o)
	}
	for kind, list := range byKind {
		gvk := kinds[kind].gvk
		if len(list) > lookupListThreshold {
			ml := &metav1.PartialObjectMetadataList{}
			ml.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			cont := ""
			for {
				err := s.withTimeout(ctx, func(ctx context.Context) error {
					return s.Direct.List(ctx, ml, client.Limit(1000), client.Continue(cont))
				})
				if err != nil {
					return nil, fmt.Errorf("list %s: %w", kind, err)
				}
				for i := range ml.Items {
					m := ml.Items[i]
					m.SetGroupVersionKind(gvk)
					out[Key{Kind: kind, Namespace: m.Namespace, Name: m.Name}] = &m
				}
				if cont = ml.Continue; cont == "" {
					break
				}
			}
			continue
		}
		for _, o := range list {
			m := &metav1.PartialObjectMetadata{}
			m.SetGroupVersionKind(gvk)
			err := s.withTimeout(ctx, func(ctx context.Context) error {
				return s.Direct.Get(ctx, client.ObjectKeyFromObject(o), m)
			})
			switch {
			case err == nil:
				out[KeyOf(o)] = m
			case apierrors.IsNotFound(err):
			default:
				return nil, fmt.Errorf("read %s: %w", KeyOf(o), err)
			}
		}
	}
	return out, nil
}

// ensure makes one desired object hold. live is its cached state (nil when the cache
// does not hold it); existing holds what lookup found outside the cache.
func (s *Syncer) ensure(ctx context.Context, d client.Object, key Key, live client.Object,
	existing map[Key]*metav1.PartialObjectMetadata, opts Options, mu *sync.Mutex, rep *Report) (bool, error) {
	var cur metav1.Object
	if live != nil {
		cur = live
	} else if m, ok := existing[key]; ok {
		cur = m
	}
	// Marks that stick once set: whether Drover adopted or created a namespace.
	sticky := map[string]string{}
	if cur == nil && key.Kind == "Namespace" {
		sticky[render.CreatedAnnotation] = "true"
	}
	if cur != nil {
		ow, why := s.ownerOf(cur)
		isNamespace := key.Kind == "Namespace"
		switch {
		case ow == ownerOther:
			return false, &Error{Reason: ReasonConflict, Message: fmt.Sprintf("%s %s: %s", key, ErrConflict.Error(), why), Err: ErrConflict}
		case ow == ownerNone && isNamespace && opts.UseExisting[key.Name]:
			// Used as it is, never labelled: nothing to do.
			return false, nil
		case ow == ownerNone && isNamespace && opts.Adoptable[key.Name]:
			sticky[render.AdoptedAnnotation] = "true"
		case ow == ownerNone && !isNamespace:
			return false, &Error{Reason: ReasonConflict, Message: fmt.Sprintf("%s %s", key, ErrConflict.Error()), Err: ErrConflict}
		case ow == ownerNone && isNamespace:
			return false, &Error{Reason: ReasonConflict, Message: fmt.Sprintf(
				"%s %s; set adopt: true on the project namespace to let Drover manage it", key, ErrConflict.Error()), Err: ErrConflict}
		}
		if !cur.GetDeletionTimestamp().IsZero() {
			return false, &Error{Reason: ReasonWaiting, Message: fmt.Sprintf("%s is being deleted; it is recreated once it is gone", key)}
		}
		for _, a := range []string{render.AdoptedAnnotation, render.CreatedAnnotation} {
			if v := cur.GetAnnotations()[a]; v != "" {
				sticky[a] = v
			}
		}
	}
	if live != nil {
		if ref, changed := roleRefChanged(d, live); changed {
			// roleRef is immutable: replace the binding. Until the new one is in
			// place the subjects have neither role, never both.
			err := s.withTimeout(ctx, func(ctx context.Context) error {
				return s.Direct.Delete(ctx, live, client.Preconditions{UID: ptr(live.GetUID())})
			})
			if err != nil && !apierrors.IsNotFound(err) {
				return false, s.requestError(key, "could not be replaced to change its roleRef to "+ref+":", err)
			}
			mu.Lock()
			rep.Pruned++
			mu.Unlock()
		}
		if prev, want := live.GetLabels()[render.ProjectLabel], d.GetLabels()[render.ProjectLabel]; key.Kind == "Namespace" && prev != "" && prev != want {
			// The namespace belonged to another project, which no longer claims it.
			// It goes as that project says now (released, or deleted) before
			// another project may have it: a released namespace keeps its data, so
			// taking it then needs adopt: true. A held project gives up nothing.
			if render.Held(opts.Hold, live) {
				return false, &Error{Reason: ReasonWaiting, Message: fmt.Sprintf("%s belongs to project %s, whose spec cannot be resolved; it stays there until that is fixed", key, prev)}
			}
			live = withPolicy(live, opts, prev)
			deleted := willDelete(live)
			if err := s.withTimeout(ctx, func(ctx context.Context) error { return Prune(ctx, s.Direct, live) }); err != nil {
				return false, s.requestError(key, "could not be released by project "+prev+":", err)
			}
			mu.Lock()
			rep.Pruned++
			mu.Unlock()
			return false, &Error{Reason: ReasonWaiting, Message: fmt.Sprintf("%s belonged to project %s, which gave it up; it was %s, and is taken over once that is done",
				key, prev, map[bool]string{true: "deleted", false: "released"}[deleted])}
		}
	}
	if len(sticky) > 0 && key.Kind == "Namespace" {
		d = d.DeepCopyObject().(client.Object)
		a := d.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		for k, v := range sticky {
			a[k] = v
		}
		d.SetAnnotations(a)
	}
	if err := s.withTimeout(ctx, func(ctx context.Context) error { return s.apply(ctx, d) }); err != nil {
		return false, s.requestError(key, "could not be applied:", err)
	}
	return true, nil
}

func (s *Syncer) apply(ctx context.Context, d client.Object) error {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{Object: u}
	unstructured.RemoveNestedField(obj.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(obj.Object, "status")
	return s.Direct.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldOwner), client.ForceOwnership)
}

// willDelete tells whether pruning a namespace deletes it: only one Drover marked as
// created by itself (never one it adopted, nor one from before the mark existed,
// whose origin is unknown) and annotated for deletion. The agent's namespace is
// Drover's own whenever it carries Drover's label.
func willDelete(ns client.Object) bool {
	a := ns.GetAnnotations()
	created := a[render.CreatedAnnotation] == "true" || ns.GetLabels()[render.ComponentLabel] == render.AgentComponent
	return created && a[render.AdoptedAnnotation] != "true" && a[render.NamespaceDeletionPolicyAnnotation] == string(v1alpha1.NamespaceDelete)
}

// Prune removes one Drover-owned object. A namespace is released (it keeps its
// contents and loses Drover's labels) unless Drover created it and it is annotated
// for deletion.
func Prune(ctx context.Context, c client.Client, obj client.Object) error {
	if ns, ok := obj.(*corev1.Namespace); ok && !willDelete(ns) {
		return release(ctx, c, ns)
	}
	if err := c.Delete(ctx, obj, client.Preconditions{UID: ptr(obj.GetUID())}, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// release removes Drover's labels and annotations from a namespace, leaving it and
// its contents in place.
func release(ctx context.Context, c client.Client, ns *corev1.Namespace) error {
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:null,%q:null,%q:null,%q:null},"annotations":{%q:null,%q:null,%q:null,%q:null}}}`,
		render.ManagedByLabel, render.ProjectLabel, render.HubLabel, render.ClusterLabel,
		render.NamespaceDeletionPolicyAnnotation, render.ManagedKeysAnnotation, render.AdoptedAnnotation, render.CreatedAnnotation)
	err := c.Patch(ctx, ns, client.RawPatch(types.MergePatchType, patch))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// dependency is an object that another needs in place first.
type dependency struct {
	key    Key
	reason string
}

// dependencies lists what d needs: its namespace, and for a binding of a
// RoleTemplate, the ClusterRole Drover renders for it. Namespaces and ClusterRoles
// are written before everything else.
func dependencies(d client.Object) []dependency {
	var out []dependency
	if ns := d.GetNamespace(); ns != "" {
		out = append(out, dependency{Key{Kind: "Namespace", Name: ns}, ReasonNamespaceNotHeld})
	}
	if role := renderedRole(d); role != "" {
		out = append(out, dependency{Key{Kind: "ClusterRole", Name: role}, ReasonRoleNotHeld})
	}
	return out
}

// renderedRole returns the ClusterRole a binding refers to when it is one that
// Drover renders (a RoleTemplate's), or "".
func renderedRole(o client.Object) string {
	var ref rbacv1.RoleRef
	switch b := o.(type) {
	case *rbacv1.ClusterRoleBinding:
		ref = b.RoleRef
	case *rbacv1.RoleBinding:
		ref = b.RoleRef
	default:
		return ""
	}
	if ref.Kind != "ClusterRole" || o.GetLabels()[render.RoleTemplateLabel] == "" {
		return ""
	}
	return ref.Name
}

// roleRefChanged tells whether a binding must be replaced because its roleRef, which
// the API server never lets change, differs from the desired one.
func roleRefChanged(d, live client.Object) (string, bool) {
	switch dd := d.(type) {
	case *rbacv1.ClusterRoleBinding:
		l, ok := live.(*rbacv1.ClusterRoleBinding)
		return dd.RoleRef.Name, ok && l.RoleRef != dd.RoleRef
	case *rbacv1.RoleBinding:
		l, ok := live.(*rbacv1.RoleBinding)
		return dd.RoleRef.Name, ok && l.RoleRef != dd.RoleRef
	}
	return "", false
}

// appliedByUs tells whether Drover's field manager holds fields of an object: one
// whose labels someone stripped is still Drover's, and is repaired like any drift.
func appliedByUs(o metav1.Object) bool {
	for _, mf := range o.GetManagedFields() {
		if mf.Manager == FieldOwner && mf.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

// sortByIntentSize orders objects so that those of intents with fewer pending objects
// go first, keeping the render order within an intent.
func sortByIntentSize(objs []client.Object) {
	intent := func(o client.Object) string {
		l := o.GetLabels()
		switch {
		case l[render.AccessBindingLabel] != "":
			return "b/" + l[render.AccessBindingLabel]
		case l[render.RoleTemplateLabel] != "":
			return "t/" + l[render.RoleTemplateLabel]
		case l[render.ProjectLabel] != "":
			return "p/" + l[render.ProjectLabel]
		}
		return ""
	}
	size := map[string]int{}
	for _, o := range objs {
		size[intent(o)]++
	}
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := intent(objs[i]), intent(objs[j])
		if size[a] != size[b] {
			return size[a] < size[b]
		}
		return a < b
	})
}

func ptr[T any](v T) *T { return &v }

// SortedKeys lists a map's keys in order, for stable messages.
func SortedKeys(m map[Key]error) []Key {
	out := make([]Key, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
