// Package targetsync makes one cluster hold exactly a desired set of objects: it
// applies what is missing or different with server-side apply under one field manager,
// and prunes what Drover owns there but no longer wants. It is the one mechanism for
// applying and pruning, and it knows nothing of the hub, so that the agent can run it
// too (pull mode).
//
// Safety rules:
//   - An object without Drover's ownership label is never changed or deleted. When a
//     desired object's name is taken by such an object, that is reported as a
//     conflict, except for namespaces that the caller allows to be adopted.
//   - Nothing is written when the live object already holds what is desired.
//   - A namespace is pruned by releasing it (removing Drover's labels), unless it is
//     annotated for deletion: its workloads and data stay.
package targetsync

import (
	"context"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// FieldOwner is the one field manager Drover applies with.
const FieldOwner = "drover"

// Syncer applies and prunes in one cluster.
type Syncer struct {
	// Cached reads the objects Drover owns (label-selected); it may be a cache.
	Cached client.Reader
	// Direct reads and writes straight through to the API server. It is used to
	// look at objects that are not Drover's (which the cache does not hold), and for
	// every write.
	Direct client.Client
	// Kinds are the lists of the kinds the syncer prunes, e.g. &rbacv1.ClusterRoleList{}.
	Kinds []client.ObjectList
}

// DefaultKinds are the kinds rendering produces.
func DefaultKinds() []client.ObjectList {
	// Namespaced objects first and namespaces last, so that a released namespace
	// has already lost Drover's objects.
	return []client.ObjectList{
		&rbacv1.RoleBindingList{}, &networkingv1.NetworkPolicyList{}, &corev1.LimitRangeList{}, &corev1.ResourceQuotaList{},
		&rbacv1.ClusterRoleBindingList{}, &rbacv1.ClusterRoleList{}, &corev1.NamespaceList{},
	}
}

// Options of one Sync.
type Options struct {
	// Adoptable names namespaces that may be taken over when they exist without
	// Drover's label.
	Adoptable map[string]bool
	// NamespacePolicy maps each project that still exists to its current
	// namespaceDeletionPolicy. A namespace leaving a project that still exists goes
	// by that, rather than by the annotation it was last applied with.
	NamespacePolicy map[string]string
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
	switch o.(type) {
	case *corev1.Namespace:
		return "Namespace"
	case *rbacv1.ClusterRole:
		return "ClusterRole"
	case *rbacv1.ClusterRoleBinding:
		return "ClusterRoleBinding"
	case *rbacv1.RoleBinding:
		return "RoleBinding"
	case *rbacv1.Role:
		return "Role"
	case *corev1.ResourceQuota:
		return "ResourceQuota"
	case *corev1.LimitRange:
		return "LimitRange"
	case *networkingv1.NetworkPolicy:
		return "NetworkPolicy"
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
	// the reason. Objects not in Failed are held as desired.
	Failed map[Key]error
	// PruneFailed lists objects that should have gone but are still there.
	PruneFailed map[Key]error
}

// ErrConflict is wrapped by failures caused by an object that exists without
// Drover's ownership label.
var ErrConflict = errors.New("exists and is not managed by Drover")

// Sync makes the cluster hold desired: apply what differs, prune what is owned and
// not desired. It returns an error only when it could not even read the cluster; the
// per-object outcome is in the Report.
func (s *Syncer) Sync(ctx context.Context, desired []client.Object, opts Options) (Report, error) {
	rep := Report{Failed: map[Key]error{}, PruneFailed: map[Key]error{}}
	want := map[Key]bool{}
	badNamespaces := map[string]error{}
	for _, d := range desired {
		key := KeyOf(d)
		want[key] = true
		// Never put an object into a namespace Drover was meant to hold but does not
		// (say, one that belongs to someone else): that would grant access there.
		if nsErr, bad := badNamespaces[d.GetNamespace()]; bad && d.GetNamespace() != "" {
			rep.Failed[key] = fmt.Errorf("namespace %s is not held: %w", d.GetNamespace(), nsErr)
			continue
		}
		if err := s.ensure(ctx, d, key, opts, &rep); err != nil {
			if key.Kind == "Namespace" {
				badNamespaces[key.Name] = err
			}
			rep.Failed[key] = err
			if isUnreachable(err) {
				return rep, err
			}
		}
	}
	for _, list := range s.Kinds {
		if err := s.Cached.List(ctx, list, client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			return rep, fmt.Errorf("list %T: %w", list, err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return rep, err
		}
		for _, item := range items {
			obj := item.(client.Object)
			key := KeyOf(obj)
			if want[key] || !prunable(obj) {
				continue
			}
			if ns, ok := obj.(*corev1.Namespace); ok {
				if policy, ok := opts.NamespacePolicy[ns.Labels[render.ProjectLabel]]; ok {
					ns = ns.DeepCopy()
					if ns.Annotations == nil {
						ns.Annotations = map[string]string{}
					}
					ns.Annotations[render.NamespaceDeletionPolicyAnnotation] = policy
					obj = ns
				}
			}
			if err := Prune(ctx, s.Direct, obj); err != nil {
				rep.PruneFailed[key] = err
			} else {
				rep.Pruned++
			}
		}
	}
	return rep, nil
}

// prunable leaves alone what other parts of Drover own in the target (the agent and
// its RBAC), which carry Drover's label but not an intent label.
func prunable(o client.Object) bool {
	l := o.GetLabels()
	return l[render.RoleTemplateLabel] != "" || l[render.AccessBindingLabel] != "" || l[render.ProjectLabel] != ""
}

func (s *Syncer) ensure(ctx context.Context, d client.Object, key Key, opts Options, rep *Report) error {
	live, err := newLike(d)
	if err != nil {
		return err
	}
	err = s.Cached.Get(ctx, client.ObjectKeyFromObject(d), live)
	switch {
	case err == nil:
		if render.Equivalent(d, live) {
			return nil
		}
		if prunable(d) && !prunable(live) {
			// Drover's, but not an intent's: the agent's own objects (ClusterRole
			// drover:agent, say). An intent never takes one over.
			return fmt.Errorf("%s %w: it belongs to Drover's agent", key, ErrConflict)
		}
		if ref, changed := roleRefChanged(d, live); changed {
			// roleRef is immutable: replace the binding. Until the new one is in
			// place the subjects have neither role, never both.
			if err := s.Direct.Delete(ctx, live, client.Preconditions{UID: ptr(live.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: replace it to change its roleRef to %s: %w", key, ref, err)
			}
			rep.Pruned++
		}
		if prev, want := live.GetLabels()[render.ProjectLabel], d.GetLabels()[render.ProjectLabel]; key.Kind == "Namespace" && prev != "" && prev != want {
			// The namespace belonged to another project, which no longer claims it.
			// It goes as that project said (released, or deleted) before another
			// project may have it: a released namespace keeps its data, so taking
			// it then needs adopt: true.
			if err := Prune(ctx, s.Direct, live); err != nil {
				return err
			}
			rep.Pruned++
			return fmt.Errorf("%s belonged to project %s, which gave it up; it was %s, and is taken over once that is done", key, prev,
				map[bool]string{true: "deleted", false: "released"}[live.GetAnnotations()[render.NamespaceDeletionPolicyAnnotation] == string(v1alpha1.NamespaceDelete)])
		}
	case apierrors.IsNotFound(err):
		// Not in the cache of owned objects: it is missing, or it exists without
		// Drover's label.
		if err := s.Direct.Get(ctx, client.ObjectKeyFromObject(d), live); err == nil {
			isNamespace := key.Kind == "Namespace"
			ours := live.GetLabels()[render.ManagedByLabel] == render.ManagedByValue ||
				(!isNamespace && appliedByUs(live)) || (isNamespace && opts.Adoptable[key.Name])
			if !ours {
				hint := ""
				if key.Kind == "Namespace" {
					hint = "; set adopt: true on the project namespace to let Drover manage it"
				}
				return fmt.Errorf("%s %w%s", key, ErrConflict, hint)
			}
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		if !live.GetDeletionTimestamp().IsZero() {
			return fmt.Errorf("%s is being deleted; it is recreated once it is gone", key)
		}
	default:
		return err
	}
	if err := s.apply(ctx, d); err != nil {
		return err
	}
	rep.Applied++
	return nil
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

// Prune removes one Drover-owned object. A namespace is released (it keeps its
// contents and loses Drover's labels) unless it is annotated for deletion.
func Prune(ctx context.Context, c client.Client, obj client.Object) error {
	if ns, ok := obj.(*corev1.Namespace); ok && ns.Annotations[render.NamespaceDeletionPolicyAnnotation] != string(v1alpha1.NamespaceDelete) {
		return release(ctx, c, ns)
	}
	if err := c.Delete(ctx, obj, client.Preconditions{UID: ptr(obj.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// release removes Drover's labels and annotation from a namespace, leaving it and its
// contents in place.
func release(ctx context.Context, c client.Client, ns *corev1.Namespace) error {
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:null,%q:null},"annotations":{%q:null,%q:null}}}`,
		render.ManagedByLabel, render.ProjectLabel, render.NamespaceDeletionPolicyAnnotation, render.ManagedKeysAnnotation)
	err := c.Patch(ctx, ns, client.RawPatch(types.MergePatchType, patch))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
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
func appliedByUs(o client.Object) bool {
	for _, mf := range o.GetManagedFields() {
		if mf.Manager == FieldOwner && mf.Operation == "Apply" {
			return true
		}
	}
	return false
}

func newLike(d client.Object) (client.Object, error) {
	switch d.(type) {
	case *corev1.Namespace:
		return &corev1.Namespace{}, nil
	case *rbacv1.ClusterRole:
		return &rbacv1.ClusterRole{}, nil
	case *rbacv1.ClusterRoleBinding:
		return &rbacv1.ClusterRoleBinding{}, nil
	case *rbacv1.RoleBinding:
		return &rbacv1.RoleBinding{}, nil
	case *corev1.ResourceQuota:
		return &corev1.ResourceQuota{}, nil
	case *corev1.LimitRange:
		return &corev1.LimitRange{}, nil
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{}, nil
	}
	return nil, fmt.Errorf("targetsync: cannot sync %T", d)
}

func isUnreachable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
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
