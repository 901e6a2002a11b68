package targetsync

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/drover-io/drover/render"
)

func ours(o client.Object, extra ...string) client.Object {
	l := map[string]string{render.ManagedByLabel: render.ManagedByValue, render.HubLabel: "hub", render.ClusterLabel: "c1"}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	o.SetLabels(l)
	o.SetUID(types.UID("uid-" + o.GetName()))
	return o
}

// heldCluster is a target holding: a ClusterRole and two ClusterRoleBindings of this
// hub, one ClusterRoleBinding that is not Drover's, and a Namespace of this hub.
// ResourceQuota is not served.
func heldCluster(t *testing.T) client.WithWatch {
	t.Helper()
	objs := []client.Object{
		ours(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover:t"}}, render.RoleTemplateLabel, "t"),
		ours(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:keep"}}, render.AccessBindingLabel, "keep"),
		ours(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:gone"}}, render.AccessBindingLabel, "gone"),
		ours(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:held"}}, render.AccessBindingLabel, "held"),
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}},
		ours(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, render.ProjectLabel, "shop"),
	}
	return fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*corev1.ResourceQuotaList); ok {
				return &meta.NoKindMatchError{GroupKind: corev1.SchemeGroupVersion.WithKind("ResourceQuota").GroupKind()}
			}
			return c.List(ctx, list, opts...)
		},
	}).Build()
}

// TestHeld: one snapshot per Sync answers for every kind it lists (found, not
// found, not served), leaves out what lacks Drover's label, and sends other kinds
// to the cache.
func TestHeld(t *testing.T) {
	c := heldCluster(t)
	s := &Syncer{Cached: c, Direct: c, Hub: "hub", Cluster: "c1", Kinds: KindsNamed("ClusterRoleBinding", "ClusterRole", "ResourceQuota")}
	h, err := s.snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		obj  client.Object
		// want: "found", "notfound" or "nomatch".
		want string
	}{
		{"listed kind, held", &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:keep"}}, "found"},
		{"listed kind, absent", &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:new"}}, "notfound"},
		{"listed kind, not Drover's", &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, "notfound"},
		{"another listed kind", &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover:t"}}, "found"},
		{"kind not served", &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "shop"}}, "nomatch"},
		{"kind not listed: read from the cache", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, "found"},
		{"kind not listed, absent", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, "notfound"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			live, err := h.get(context.Background(), s, tc.obj, KeyOf(tc.obj))
			got := "found"
			switch {
			case apierrors.IsNotFound(err):
				got = "notfound"
			case meta.IsNoMatchError(err):
				got = "nomatch"
			case err != nil:
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %s (%v), want %s", got, err, tc.want)
			}
			if got == "found" && (live.GetName() != tc.obj.GetName() || KeyOf(live) != KeyOf(tc.obj)) {
				t.Errorf("got %s, want %s", KeyOf(live), KeyOf(tc.obj))
			}
		})
	}
	if _, err := (&Syncer{Cached: c, Kinds: []client.ObjectList{&corev1.PodList{}}}).snapshot(context.Background()); err == nil {
		t.Error("a kind the syncer does not work with must be refused")
	}
}

// TestSyncPrunesFromOneSnapshot: a Sync that has nothing to apply prunes, from its
// one snapshot, exactly what it owns and no longer wants, keeps what is held, and
// touches nothing that is not its own.
func TestSyncPrunesFromOneSnapshot(t *testing.T) {
	c := heldCluster(t)
	s := &Syncer{Cached: c, Direct: c, Hub: "hub", Cluster: "c1", Kinds: KindsNamed("ClusterRoleBinding", "ClusterRole", "ResourceQuota")}
	desired := []client.Object{
		ours(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover:t"}}, render.RoleTemplateLabel, "t"),
		ours(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:keep"}}, render.AccessBindingLabel, "keep"),
	}
	writes := 0
	rep, err := s.Sync(context.Background(), desired, Options{
		Hold:        map[string]bool{render.HeldKey(render.AccessBindingLabel, "held"): true},
		BeforeWrite: func(context.Context) error { writes++; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pruned != 1 || rep.Applied != 0 || rep.Held != 1 || len(rep.Failed) != 0 || len(rep.PruneFailed) != 0 {
		t.Errorf("report %+v", rep)
	}
	var left rbacv1.ClusterRoleBindingList
	if err := c.List(context.Background(), &left); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range left.Items {
		names = append(names, o.Name)
	}
	if want := []string{"drover:held", "drover:keep", "theirs"}; !equalSorted(names, want) {
		t.Errorf("left %v, want %v", names, want)
	}
	if writes != 1 {
		t.Errorf("BeforeWrite called %d times, want 1", writes)
	}
	// Again: nothing to do, nothing written.
	writes = 0
	rep, err = s.Sync(context.Background(), desired, Options{Hold: map[string]bool{render.HeldKey(render.AccessBindingLabel, "held"): true},
		BeforeWrite: func(context.Context) error { writes++; return nil }})
	if err != nil || rep.Pruned != 0 || rep.Applied != 0 || writes != 0 {
		t.Errorf("second sync: %+v, %v, %d writes", rep, err, writes)
	}
}

func equalSorted(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
