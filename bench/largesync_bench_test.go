package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
)

// BenchmarkLargeSync puts a big first sync on one target: a project of 100 namespaces (the most a project
// may hold) and 300 project-scoped AccessBindings, so 30,000 RoleBindings. It reports how long
// the target takes to hold them all and the writes per second, and, while that sync
// runs, how long a revocation (deleting a binding that grants cluster-admin) and an
// urgent new grant take to reach the target's authorizer. A small change must never
// wait behind a big one.
func BenchmarkLargeSync(b *testing.B) {
	const nsCount, bindingCount = 100, 300
	const want = nsCount * bindingCount
	e := setup(b, 0)
	// A target of its own, so that 30,000 RoleBindings and 150 released namespaces
	// never weigh on the other benchmarks.
	target, err := controlplane.Start(controlplane.Options{Name: "bench-large"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = target.Stop() })
	e.startManager(b)
	e.cleanupClusters(b)
	ctx := context.Background()
	tc, err := client.New(target.Config, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	e.register(b, "bench-large", target)
	e.waitClusters(b, []string{"bench-large"}, 2*time.Minute, "Ready", readyTrue)

	rt := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "bench-ns-reader"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextProject,
		Rules:   []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}},
	}}
	p := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "bench-large"}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters: v1alpha1.ClusterSelection{Names: []string{"bench-large"}},
	}}
	for i := range nsCount {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: fmt.Sprintf("large-%03d", i)})
	}
	admin := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-large-admin"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "root@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "cluster-admin"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"bench-large"}},
	}}
	for _, o := range []client.Object{rt, p, admin} {
		if err := e.hubc.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	bindings := make([]*v1alpha1.AccessBinding, bindingCount)
	for i := range bindings {
		bindings[i] = &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-large-%03d", i)}, Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: fmt.Sprintf("team-%03d", i)}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: rt.Name},
			Project:  p.Name,
		}}
	}
	b.Cleanup(func() {
		ctx := context.Background()
		for _, ab := range bindings {
			_ = client.IgnoreNotFound(e.hubc.Delete(ctx, ab))
		}
		for _, o := range []client.Object{admin, p, rt} {
			_ = client.IgnoreNotFound(e.hubc.Delete(ctx, o))
		}
	})
	waitProject(b, e, p.Name, 1, time.Now())
	untilAllowedUser(b, tc, "root@example.com", "delete", "nodes", true, time.Now(), time.Minute)
	before := writes(b, target)

	start := time.Now()
	var wg sync.WaitGroup
	for i := range bindings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.hubc.Create(ctx, bindings[i]); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)

	// Once the big sync is well under way, revoke cluster-admin and grant something
	// urgent; both must reach the target while the sync goes on.
	waitRoleBindings(b, tc, want/10, 10*time.Minute)
	midway := countRoleBindings(b, tc)
	revokeStart := time.Now()
	if err := e.hubc.Delete(ctx, admin); err != nil {
		b.Fatal(err)
	}
	revoked := untilAllowedUser(b, tc, "root@example.com", "delete", "nodes", false, revokeStart, 5*time.Minute)
	urgent := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-large-urgent"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "oncall@example.com"}},
		// Not view: aggregated roles have no rules without kube-controller-manager,
		// which the benchmark targets do not run.
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "cluster-admin"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"bench-large"}},
	}}
	grantStart := time.Now()
	if err := e.hubc.Create(ctx, urgent); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.IgnoreNotFound(e.hubc.Delete(context.Background(), urgent)) })
	granted := untilAllowedUser(b, tc, "oncall@example.com", "list", "pods", true, grantStart, 5*time.Minute)
	during := countRoleBindings(b, tc)

	held := waitRoleBindings(b, tc, want, 20*time.Minute)
	inTarget := held.Sub(start)
	after := writes(b, target)
	// Every binding reports the whole project synced.
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var list v1alpha1.AccessBindingList
		if err := e.hubc.List(ctx, &list); err != nil {
			b.Fatal(err)
		}
		ready := 0
		for _, ab := range list.Items {
			if ab.Spec.Project == p.Name && ab.Status.ObservedGeneration == ab.Generation && ab.Status.Synced == "1/1" {
				ready++
			}
		}
		if ready == bindingCount {
			// Status is whole: none is Ready while still listing a failure.
			time.Sleep(2 * time.Second)
			if err := e.hubc.List(ctx, &list); err != nil {
				b.Fatal(err)
			}
			for _, ab := range list.Items {
				if conditions.IsTrue(&ab, v1alpha1.ReadyCondition) && len(ab.Status.Failures) > 0 {
					b.Fatalf("AccessBinding %s is Ready and lists failures: %+v", ab.Name, ab.Status.Failures)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d bindings report 1/1 synced after 10 minutes", ready, bindingCount)
		}
		time.Sleep(200 * time.Millisecond)
	}
	reported := time.Since(start)
	total := 0.0
	for res, v := range after {
		if res == "rolebindings" {
			total += v - before[res]
		}
	}
	b.ReportMetric(inTarget.Seconds(), "s-to-30k-rolebindings")
	b.ReportMetric(total/inTarget.Seconds(), "rolebinding-writes/s")
	b.ReportMetric(float64(revoked.Milliseconds()), "ms-revoke-during-sync")
	b.ReportMetric(float64(granted.Milliseconds()), "ms-grant-during-sync")
	b.Logf("%d namespaces x %d bindings = %d RoleBindings: %d bindings created on the hub in %s; the target held them all after %s (%.0f RoleBinding writes, %.0f/s); every binding reported synced after %s",
		nsCount, bindingCount, want, bindingCount, created.Round(time.Millisecond), inTarget.Round(100*time.Millisecond),
		total, total/inTarget.Seconds(), reported.Round(100*time.Millisecond))
	b.Logf("during the sync (%d, then %d of %d RoleBindings in place): cluster-admin revoked in the target %s after its AccessBinding was deleted; a new grant allowed %s after it was created",
		midway, during, want, revoked.Round(time.Millisecond), granted.Round(time.Millisecond))

	// Revoking everything: delete every binding and time until the target holds none.
	pruneStart := time.Now()
	for _, ab := range bindings {
		if err := e.hubc.Delete(ctx, ab); err != nil {
			b.Fatal(err)
		}
	}
	deadline = time.Now().Add(20 * time.Minute)
	for countRoleBindings(b, tc) > 100 {
		if time.Now().After(deadline) {
			b.Fatalf("%d RoleBindings still in the target after 20 minutes", countRoleBindings(b, tc))
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.Logf("all %d bindings deleted: the target held none of their RoleBindings after %s", bindingCount, time.Since(pruneStart).Round(100*time.Millisecond))
}

// countRoleBindings counts the RoleBindings in a cluster with one cheap request: the
// API server says how many items remain after the first.
func countRoleBindings(b *testing.B, c client.Client) int {
	b.Helper()
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(rbacv1.SchemeGroupVersion.WithKind("RoleBindingList"))
	if err := c.List(context.Background(), &list, client.Limit(1)); err != nil {
		b.Fatal(err)
	}
	n := len(list.Items)
	if list.RemainingItemCount != nil {
		n += int(*list.RemainingItemCount)
	}
	return n
}

// waitRoleBindings waits until a cluster holds at least n RoleBindings (besides the
// few of its own) and returns when.
func waitRoleBindings(b *testing.B, c client.Client, n int, timeout time.Duration) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if got := countRoleBindings(b, c); got >= n {
			return time.Now()
		} else if time.Now().After(deadline) {
			b.Fatalf("%d RoleBindings after %s, want %d", got, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// untilAllowedUser polls a target's authorizer until user may (or may not) do verb on
// resource cluster-wide, and returns the time since start.
func untilAllowedUser(b *testing.B, c client.Client, user, verb, resource string, want bool, start time.Time, timeout time.Duration) time.Duration {
	b.Helper()
	for {
		ok, err := allowedTo(c, user, verb, resource)
		if err == nil && ok == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			b.Fatalf("%s may %s %s: still %v after %s (last error: %v)", user, verb, resource, !want, timeout, err)
		}
		time.Sleep(sarPoll)
	}
}

// allowedTo asks a target's authorizer whether user may do verb on resource.
func allowedTo(c client.Client, user, verb, resource string) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource},
	}}
	if err := c.Create(context.Background(), sar); err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}

// BenchmarkLargeRoleTemplate creates a RoleTemplate of about 1 MiB (the most the
// schema lets through is larger than any real role) on a hub with one cluster, and
// reports the manager's memory before, while it exists, and after it is deleted. The
// template flattens past the size bound, so it is Stalled (TemplateTooLarge) and never
// rendered.
func BenchmarkLargeRoleTemplate(b *testing.B) {
	e := setup(b, 1)
	m := e.startManager(b)
	e.cleanupClusters(b)
	e.register(b, "bench-bigrole", e.targets[0])
	e.waitClusters(b, []string{"bench-bigrole"}, 2*time.Minute, "Ready", readyTrue)
	time.Sleep(2 * time.Second)
	ctx := context.Background()
	before := m.memStats(b)

	rt := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "bench-big"}, Spec: v1alpha1.RoleTemplateSpec{Context: v1alpha1.ContextCluster}}
	size := 0
	for i := 0; size < 1<<20 && len(rt.Spec.Rules) < 256; i++ {
		r := v1alpha1.PolicyRule{APIGroups: []string{""}, Verbs: []string{"get"}}
		for j := range 128 {
			res := fmt.Sprintf("r%03d-%03d-%s", i, j, strings.Repeat("x", 24))
			r.Resources = append(r.Resources, res)
			size += len(res) + 3
		}
		rt.Spec.Rules = append(rt.Spec.Rules, r)
	}
	if err := e.hubc.Create(ctx, rt); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.IgnoreNotFound(e.hubc.Delete(context.Background(), rt)) })
	deadline := time.Now().Add(time.Minute)
	for {
		var cur v1alpha1.RoleTemplate
		if err := e.hubc.Get(ctx, client.ObjectKeyFromObject(rt), &cur); err != nil {
			b.Fatal(err)
		}
		if c := conditions.Get(&cur, v1alpha1.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
			b.Logf("RoleTemplate of %d rules, about %d KiB: Stalled %s: %s", len(rt.Spec.Rules), size>>10, c.Reason, c.Message)
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the large RoleTemplate was never reported Stalled")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	with := m.memStats(b)
	if err := e.hubc.Delete(ctx, rt); err != nil {
		b.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	after := m.memStats(b)
	b.ReportMetric(float64(with.HeapInuse-before.HeapInuse)/(1<<20), "heap-MiB-with-template")
	b.Logf("manager heap in use: %s before, %s with the template, %s after deleting it; RSS %s, %s, %s",
		mib(before.HeapInuse), mib(with.HeapInuse), mib(after.HeapInuse), mib(before.RSS), mib(with.RSS), mib(after.RSS))
}
