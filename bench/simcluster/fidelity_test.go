package simcluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/bench/simcluster"
	"github.com/drover-io/drover/controlplane"
)

// TestFidelity sends the same requests to a simulated cluster and to a real
// kube-apiserver and compares what each answered, as far as Drover depends on it:
// status codes and reasons, labels and rules after server-side apply (with a second
// field manager in play), the managed fields, no-op applies, label-selected lists and
// watches (objects entering and leaving a selector), metadata-only reads, status
// subresources, and SubjectAccessReviews answered from RBAC.
func TestFidelity(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skip("set KUBEBUILDER_ASSETS (make test does, through hack/kubebin.sh) to compare with a real API server")
	}
	real, err := controlplane.Start(controlplane.Options{Name: "simcluster-fidelity"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = real.Stop() })
	srv, err := simcluster.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	sim, err := srv.AddCluster("fidelity")
	if err != nil {
		t.Fatal(err)
	}

	want := scenario(t, "real", real.Config)
	got := scenario(t, "simulated", sim.RESTConfig())
	if len(want) < 40 {
		t.Fatalf("the scenario recorded only %d observations against the real API server:\n%s", len(want), strings.Join(want, "\n"))
	}
	t.Logf("%d observations from the real API server:\n%s", len(want), strings.Join(want, "\n"))
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			t.Errorf("observation %d differs:\n  real:      %s\n  simulated: %s", i, w, g)
		}
	}
}

// scenario runs the requests against one API server and returns what it saw, one
// line per observation.
func scenario(t *testing.T, who string, cfg *rest.Config) []string {
	t.Helper()
	ctx := context.Background()
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "fidelity-test/v0"
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	note := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	reason := func(err error) string {
		if err == nil {
			return "ok"
		}
		return fmt.Sprintf("%s(%d)", apierrors.ReasonForError(err), statusCode(err))
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %s: %v", who, what, err)
		}
	}
	apply := func(obj client.Object) error {
		if obj.GetObjectKind().GroupVersionKind().Kind == "" {
			gvks, _, err := c.Scheme().ObjectKinds(obj)
			if err != nil {
				return err
			}
			obj.GetObjectKind().SetGroupVersionKind(gvks[0])
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return err
		}
		un := &unstructured.Unstructured{Object: u}
		unstructured.RemoveNestedField(un.Object, "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(un.Object, "status")
		return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(un), client.FieldOwner("drover"), client.ForceOwnership)
	}

	// Discovery: every kind Drover uses, with its scope.
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	must("discovery", err)
	for _, gv := range []string{"v1", "rbac.authorization.k8s.io/v1", "apps/v1", "networking.k8s.io/v1", "coordination.k8s.io/v1", "authorization.k8s.io/v1"} {
		l, err := dc.ServerResourcesForGroupVersion(gv)
		must("discovery "+gv, err)
		var names []string
		for _, r := range l.APIResources {
			if slices.Contains([]string{"namespaces", "nodes", "serviceaccounts", "secrets", "configmaps", "resourcequotas", "limitranges",
				"deployments", "networkpolicies", "leases", "clusterroles", "clusterrolebindings", "roles", "rolebindings",
				"subjectaccessreviews", "selfsubjectaccessreviews", "nodes/status", "resourcequotas/status"}, r.Name) {
				names = append(names, fmt.Sprintf("%s:%s:namespaced=%v", r.Name, r.Kind, r.Namespaced))
			}
		}
		sort.Strings(names)
		note("discovery %s: %s", gv, strings.Join(names, " "))
	}
	v, err := dc.ServerVersion()
	must("version", err)
	note("version has gitVersion: %v", v.GitVersion != "")
	body, err := dc.RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	note("readyz: %s %v", reason(err), len(body) > 0)

	// Namespaces.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fid-1", Labels: map[string]string{"app.kubernetes.io/managed-by": "drover"}}}
	must("apply namespace", apply(ns))
	must("get namespace", c.Get(ctx, client.ObjectKey{Name: "fid-1"}, ns))
	note("namespace labels %v phase %s finalizers %v uid set %v", ns.Labels, ns.Status.Phase, ns.Spec.Finalizers, ns.UID != "")
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	must("metadata get", c.Get(ctx, client.ObjectKey{Name: "kube-system"}, meta))
	note("kube-system by metadata: uid set %v name %s", meta.UID != "", meta.Name)

	// Server-side apply of a ClusterRole, and its managed fields.
	role := &rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: "drover:fid", Labels: map[string]string{"app.kubernetes.io/managed-by": "drover", "a": "1", "b": "2"}},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}}}}
	must("apply role", apply(role.DeepCopy()))
	var got rbacv1.ClusterRole
	must("get role", c.Get(ctx, client.ObjectKey{Name: role.Name}, &got))
	var managers []string
	for _, mf := range got.ManagedFields {
		managers = append(managers, fmt.Sprintf("%s/%s", mf.Manager, mf.Operation))
	}
	note("role after apply: labels %v rules %v managers %v", got.Labels, got.Rules, managers)
	rv := got.ResourceVersion
	must("apply role again", apply(role.DeepCopy()))
	must("get role", c.Get(ctx, client.ObjectKey{Name: role.Name}, &got))
	note("applying the same again changes the resourceVersion: %v", got.ResourceVersion != rv)
	// Another writer adds a label; drover's apply without label b drops b, keeps theirs.
	got.Labels["other"] = "x"
	must("update role", c.Update(ctx, &got, client.FieldOwner("someone-else")))
	delete(role.Labels, "b")
	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}})
	must("apply role changed", apply(role.DeepCopy()))
	must("get role", c.Get(ctx, client.ObjectKey{Name: role.Name}, &got))
	managers = nil
	for _, mf := range got.ManagedFields {
		managers = append(managers, fmt.Sprintf("%s/%s", mf.Manager, mf.Operation))
	}
	sort.Strings(managers)
	note("role after a second manager and a changed apply: labels %v rules %v managers %v", got.Labels, got.Rules, managers)

	// Errors.
	err = c.Get(ctx, client.ObjectKey{Name: "nope"}, &rbacv1.ClusterRole{})
	note("get missing: %s", reason(err))
	err = c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role.Name}})
	note("create existing: %s", reason(err))
	stale := got.DeepCopy()
	stale.ResourceVersion = rv
	stale.Labels["stale"] = "1"
	note("update with a stale resourceVersion: %s", reason(c.Update(ctx, stale)))
	note("delete with a wrong UID precondition: %s", reason(c.Delete(ctx, &got, client.Preconditions{UID: ptr(types.UID("wrong"))})))
	note("create in a missing namespace: %s", reason(c.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "missing"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "x"}})))

	// Bindings and SubjectAccessReviews.
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:fid", Labels: map[string]string{"app.kubernetes.io/managed-by": "drover"}},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "alice"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name}}
	crb.SetGroupVersionKind(rbacv1.SchemeGroupVersion.WithKind("ClusterRoleBinding"))
	must("apply crb", apply(crb))
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:fid", Namespace: "fid-1", Labels: map[string]string{"app.kubernetes.io/managed-by": "drover"}},
		Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "g1"}, {Kind: "ServiceAccount", Name: "robot"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name}}
	rb.SetGroupVersionKind(rbacv1.SchemeGroupVersion.WithKind("RoleBinding"))
	must("apply rb", apply(rb))
	sar := func(user string, groups []string, verb, group, res, ns string) {
		r := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: res, Namespace: ns}}}
		must("sar", c.Create(ctx, r))
		note("SAR %s %v %s %s/%s in %q: %v", user, groups, verb, group, res, ns, r.Status.Allowed)
	}
	sar("alice", nil, "list", "", "secrets", "")
	sar("alice", nil, "list", "", "secrets", "default")
	sar("alice", nil, "delete", "", "secrets", "")
	sar("alice", nil, "get", "apps", "deployments", "kube-system")
	sar("bob", nil, "list", "", "secrets", "")
	sar("carol", []string{"g1"}, "get", "", "secrets", "fid-1")
	sar("carol", []string{"g1"}, "get", "", "secrets", "default")
	sar("carol", []string{"g1"}, "get", "", "secrets", "")
	sar("system:serviceaccount:fid-1:robot", nil, "list", "", "secrets", "fid-1")
	sar("system:serviceaccount:other:robot", nil, "list", "", "secrets", "fid-1")
	sar("dave", []string{"system:masters"}, "delete", "", "nodes", "")
	ssar := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "delete", Resource: "namespaces"}}}
	must("ssar", c.Create(ctx, ssar))
	note("SelfSubjectAccessReview as the admin: %v", ssar.Status.Allowed)
	err = c.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: "x"}})
	note("SAR without attributes: %s", reason(err))

	// Label-selected lists, and a watch that sees objects enter and leave its selector.
	var roles rbacv1.ClusterRoleList
	must("list", c.List(ctx, &roles, client.MatchingLabels{"app.kubernetes.io/managed-by": "drover"}))
	var names []string
	for _, r := range roles.Items {
		names = append(names, r.Name)
	}
	note("list by label: %v", names)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w, err := c.Watch(wctx, &rbacv1.ClusterRoleList{}, client.MatchingLabels{"fid": "watch"}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: roles.ResourceVersion}})
	must("watch", err)
	second := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "fid-watch", Labels: map[string]string{"fid": "watch"}}}
	must("create second", c.Create(ctx, second))
	second.Labels = map[string]string{"fid": "other"}
	must("update second out", c.Update(ctx, second))
	second.Labels = map[string]string{"fid": "watch", "x": "y"}
	must("update second in", c.Update(ctx, second))
	second.Rules = []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/healthz"}}}
	must("update second rules", c.Update(ctx, second))
	must("delete second", c.Delete(ctx, second))
	var events []string
	for len(events) < 5 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("%s: the watch ended after %v", who, events)
			}
			name := ""
			if o, ok := ev.Object.(client.Object); ok {
				name = o.GetName()
			}
			events = append(events, fmt.Sprintf("%s %s", ev.Type, name))
		case <-wctx.Done():
			t.Fatalf("%s: watch events: %v, then nothing", who, events)
		}
	}
	w.Stop()
	note("watch with a label selector: %v", events)
	// A watch from resourceVersion 0 starts with the current objects.
	w, err = c.Watch(wctx, &rbacv1.ClusterRoleList{}, client.MatchingLabels{"a": "1"}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}})
	must("watch from 0", err)
	ev := <-w.ResultChan()
	w.Stop()
	note("watch from resourceVersion 0: first event %s %s", ev.Type, ev.Object.(client.Object).GetName())

	// Quota, limits, network policy, Lease, Node with its status.
	q := &corev1.ResourceQuota{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ResourceQuota"}, ObjectMeta: metav1.ObjectMeta{Name: "drover-project", Namespace: "fid-1"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"requests.cpu": resource.MustParse("2"), "pods": resource.MustParse("20")}}}
	must("apply quota", apply(q))
	var gq corev1.ResourceQuota
	must("get quota", c.Get(ctx, client.ObjectKeyFromObject(q), &gq))
	note("quota spec %v", gq.Spec.Hard)
	lr := &corev1.LimitRange{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "LimitRange"}, ObjectMeta: metav1.ObjectMeta{Name: "drover-defaults", Namespace: "fid-1"},
		Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{Type: corev1.LimitTypeContainer, DefaultRequest: corev1.ResourceList{"cpu": resource.MustParse("100m")}}}}}
	must("apply limits", apply(lr))
	var glr corev1.LimitRange
	must("get limits", c.Get(ctx, client.ObjectKeyFromObject(lr), &glr))
	note("limit range defaultRequest %v", glr.Spec.Limits[0].DefaultRequest)
	np := &networkingv1.NetworkPolicy{TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}, ObjectMeta: metav1.ObjectMeta{Name: "drover-isolation", Namespace: "fid-1"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}}}
	must("apply netpol", apply(np))
	var gnp networkingv1.NetworkPolicy
	must("get netpol", c.Get(ctx, client.ObjectKeyFromObject(np), &gnp))
	note("network policy types %v ingress %d generation %d", gnp.Spec.PolicyTypes, len(gnp.Spec.Ingress), gnp.Generation)
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "fid-1"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr("me")}}
	must("create lease", c.Create(ctx, lease))
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	note("update lease: %s", reason(c.Update(ctx, lease)))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fid-node"}}
	must("create node", c.Create(ctx, node))
	node.Status.Capacity = corev1.ResourceList{"cpu": resource.MustParse("4")}
	must("update node status", c.Status().Update(ctx, node))
	node.Labels = map[string]string{"x": "y"}
	node.Status.Capacity = corev1.ResourceList{"cpu": resource.MustParse("8")}
	must("update node", c.Update(ctx, node))
	var gn corev1.Node
	must("get node", c.Get(ctx, client.ObjectKey{Name: "fid-node"}, &gn))
	note("node: labels %v capacity kept by a plain update %v", gn.Labels, gn.Status.Capacity.Cpu().String())

	// Drover's release of a namespace: a merge patch that removes labels.
	patch := []byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":null}}}`)
	must("merge patch", c.Patch(ctx, ns, client.RawPatch(types.MergePatchType, patch)))
	must("get namespace", c.Get(ctx, client.ObjectKey{Name: "fid-1"}, ns))
	note("namespace after the merge patch: labels %v", ns.Labels)
	// Delete with the right precondition, then it is gone.
	must("get role", c.Get(ctx, client.ObjectKey{Name: role.Name}, &got))
	note("delete with the right UID precondition: %s", reason(c.Delete(ctx, &got, client.Preconditions{UID: ptr(got.UID)})))
	note("get after delete: %s", reason(c.Get(ctx, client.ObjectKey{Name: role.Name}, &got)))
	// A finalizer holds an object being deleted until it is removed.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: "fid-1", Finalizers: []string{"example.com/hold"}}}
	must("create configmap", c.Create(ctx, cm))
	must("delete configmap", c.Delete(ctx, cm))
	must("get configmap", c.Get(ctx, client.ObjectKeyFromObject(cm), cm))
	note("deleted with a finalizer: deletionTimestamp set %v", cm.DeletionTimestamp != nil)
	cm.Finalizers = nil
	must("release configmap", c.Update(ctx, cm))
	note("finalizer removed: %s", reason(c.Get(ctx, client.ObjectKeyFromObject(cm), cm)))
	return out
}

func statusCode(err error) int32 {
	if s, ok := err.(apierrors.APIStatus); ok {
		return s.Status().Code
	}
	return 0
}

func ptr[T any](v T) *T { return &v }
