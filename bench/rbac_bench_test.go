package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
)

// The RBAC benchmarks measure what a platform admin feels: the time from creating an
// AccessBinding on the hub to every target's own authorizer allowing the access
// (SubjectAccessReview, as `kubectl auth can-i --as` does), the time to repair drift
// in a target, and the API writes an idle fleet makes. The manager runs with its
// default flags. Each benchmark ignores b.N and reports fixed rounds.

// sarPoll is how often each target is asked; it bounds the measurement's resolution.
const sarPoll = 10 * time.Millisecond

// benchTemplate is the RoleTemplate the bindings grant: read Secrets cluster-wide.
func benchTemplate() *v1alpha1.RoleTemplate {
	return &v1alpha1.RoleTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-secret-reader"},
		Spec: v1alpha1.RoleTemplateSpec{Context: v1alpha1.ContextCluster, Rules: []v1alpha1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}},
		}},
	}
}

// rbacFleet registers n targets and waits until they are Ready and hold the
// benchmark's RoleTemplate.
func rbacFleet(b *testing.B, n int) (*env, []client.Client) {
	b.Helper()
	e, _, _, clients := fleet(b, setup(b, n), n, "bench-rbac")
	return e, clients
}

// fleet starts a manager on e, registers its first n targets as <prefix>-1 ...
// <prefix>-n and waits until they are Ready and hold the benchmark's RoleTemplate.
func fleet(b *testing.B, e *env, n int, prefix string) (*env, *managerProc, []string, []client.Client) {
	b.Helper()
	p := e.startManager(b)
	e.cleanupClusters(b)
	ctx := context.Background()
	rt := benchTemplate()
	if err := e.hubc.Create(ctx, rt); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.hubc.Delete(context.Background(), rt) })
	var names []string
	var clients []client.Client
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i+1)
		e.register(b, name, e.targets[i])
		names = append(names, name)
		c, err := client.New(e.targets[i].Config, client.Options{})
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	e.waitClusters(b, names, 2*time.Minute, "Ready", readyTrue)
	waitTemplate(b, e, rt.Name, n)
	return e, p, names, clients
}

func waitTemplate(b *testing.B, e *env, name string, n int) {
	b.Helper()
	want := fmt.Sprintf("%d/%d", n, n)
	deadline := time.Now().Add(time.Minute)
	for {
		var rt v1alpha1.RoleTemplate
		if err := e.hubc.Get(context.Background(), client.ObjectKey{Name: name}, &rt); err != nil {
			b.Fatal(err)
		}
		if rt.Status.Installed == want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("RoleTemplate %s installed %q, want %s", name, rt.Status.Installed, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// untilAllowed polls every target in parallel and returns, per target, the time
// from start until it allowed user to list secrets (or until want is false, when it
// denies).
func untilAllowed(b *testing.B, clients []client.Client, user string, want bool, start time.Time) []time.Duration {
	b.Helper()
	return untilAllowedTo(b, clients, user, "list", "secrets", want, start)
}

// untilAllowedTo is untilAllowed for any verb and resource.
func untilAllowedTo(b *testing.B, clients []client.Client, user, verb, resource string, want bool, start time.Time) []time.Duration {
	b.Helper()
	out := make([]time.Duration, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := start.Add(30 * time.Second)
			for {
				ok, err := allowedTo(c, user, verb, resource)
				if err == nil && ok == want {
					out[i] = time.Since(start)
					return
				}
				if time.Now().After(deadline) {
					errs[i] = fmt.Errorf("target %d: %s %s for %s still %v after 30s (last error: %v)", i+1, verb, resource, user, !want, err)
					return
				}
				time.Sleep(sarPoll)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// BenchmarkAccessBindingToAllowed creates AccessBindings that select every target and
// times each until every target's authorizer allows the access: p50 and p99 over the
// rounds, for 1, 5 and 10 targets. The latency of one round is that of the slowest
// target.
func BenchmarkAccessBindingToAllowed(b *testing.B) {
	for _, n := range []int{1, 5, 10} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			const rounds = 20
			e, p, _, clients := fleet(b, setup(b, n), n, "bench-rbac")
			ctx := context.Background()
			before := p.scrape(b)
			var all, perTarget []time.Duration
			for i := range rounds {
				user := fmt.Sprintf("user-%d-%d@example.com", n, i)
				ab := &v1alpha1.AccessBinding{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-grant-%d", i)},
					Spec: v1alpha1.AccessBindingSpec{
						Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: user}},
						RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "bench-secret-reader"},
						Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{benchLabel: "true"}}},
					},
				}
				start := time.Now()
				if err := e.hubc.Create(ctx, ab); err != nil {
					b.Fatal(err)
				}
				lat := untilAllowed(b, clients, user, true, start)
				all = append(all, maxOf(lat))
				perTarget = append(perTarget, lat...)
				if err := e.hubc.Delete(ctx, ab); err != nil {
					b.Fatal(err)
				}
				untilAllowed(b, clients, user, false, time.Now())
			}
			reportLatency(b, "allowed-everywhere", all)
			b.Logf("%d targets, %d bindings: created -> allowed in every target p50 %s, p99 %s, max %s (per target p50 %s)",
				n, rounds, percentile(all, 0.5).Round(time.Millisecond), percentile(all, 0.99).Round(time.Millisecond),
				maxOf(all).Round(time.Millisecond), percentile(perTarget, 0.5).Round(time.Millisecond))
			// What the manager's own metric saw of the same rounds, per target, the
			// revocations included, without the authorizer's part.
			count, bounds := histogramQuantiles(before, p.scrape(b), "drover_intent_propagation_seconds", 0.5, 0.99)
			b.Logf("%d targets: drover_intent_propagation_seconds over the same rounds: %.0f samples (grants and revocations, per target), p50 <= %ss, p99 <= %ss (bucket bounds)",
				n, count, bounds[0], bounds[1])
		})
	}
}

// histogramQuantiles reads a histogram's samples between two scrapes, summed over
// its series, and returns their count and, for each quantile, the upper bound of the
// bucket it falls in.
func histogramQuantiles(before, after metricSet, name string, qs ...float64) (float64, []string) {
	type bucket struct {
		le    string
		bound float64
		count float64
	}
	byLE := map[string]*bucket{}
	for series, v := range after {
		n, rest, _ := strings.Cut(series, "{")
		if n != name+"_bucket" {
			continue
		}
		_, le, _ := strings.Cut(rest, `le="`)
		le, _, _ = strings.Cut(le, `"`)
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue // +Inf parses; anything else is not a bucket
		}
		bk := byLE[le]
		if bk == nil {
			bk = &bucket{le: le, bound: bound}
			byLE[le] = bk
		}
		bk.count += v - before[series]
	}
	buckets := make([]*bucket, 0, len(byLE))
	for _, bk := range byLE {
		buckets = append(buckets, bk)
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].bound < buckets[j].bound })
	out := make([]string, len(qs))
	if len(buckets) == 0 {
		for i := range out {
			out[i] = "?"
		}
		return 0, out
	}
	total := buckets[len(buckets)-1].count
	for i, q := range qs {
		out[i] = "?"
		for _, bk := range buckets {
			if total > 0 && bk.count >= q*total {
				out[i] = bk.le
				break
			}
		}
	}
	return total, out
}

// BenchmarkDriftRepair deletes, then edits, a mirrored object in a target and times
// until the target's authorizer allows the access again.
func BenchmarkDriftRepair(b *testing.B) {
	const n, rounds = 10, 10
	e, clients := rbacFleet(b, n)
	ctx := context.Background()
	user := "drift@example.com"
	ab := &v1alpha1.AccessBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-drift"},
		Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: user}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "bench-secret-reader"},
			Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{benchLabel: "true"}}},
		},
	}
	if err := e.hubc.Create(ctx, ab); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.hubc.Delete(context.Background(), ab) })
	untilAllowed(b, clients, user, true, time.Now())

	var deleted, edited []time.Duration
	for i := range rounds {
		c := clients[i%n]
		one := []client.Client{c}
		start := time.Now()
		if err := c.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:bench-drift"}}); err != nil {
			b.Fatal(err)
		}
		deleted = append(deleted, untilAllowed(b, one, user, true, start)[0])

		var role rbacv1.ClusterRole
		if err := c.Get(ctx, client.ObjectKey{Name: "drover:bench-secret-reader"}, &role); err != nil {
			b.Fatal(err)
		}
		role.Rules = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}
		start = time.Now()
		if err := c.Update(ctx, &role); err != nil {
			b.Fatal(err)
		}
		edited = append(edited, untilAllowed(b, one, user, true, start)[0])
	}
	reportLatency(b, "repair-deleted", deleted)
	reportLatency(b, "repair-edited", edited)
	b.Logf("drift repair over %d rounds in a fleet of %d: deleted binding p50 %s max %s; edited role p50 %s max %s",
		rounds, n, percentile(deleted, 0.5).Round(time.Millisecond), maxOf(deleted).Round(time.Millisecond),
		percentile(edited, 0.5).Round(time.Millisecond), maxOf(edited).Round(time.Millisecond))
}

// BenchmarkIdleWrites counts, from each API server's own request metrics, the writes
// (POST, PUT, PATCH, DELETE) made to the hub and to 10 targets during 60 s in which
// nothing changes, with every built-in kind of intent in place.
func BenchmarkIdleWrites(b *testing.B) {
	const n = 10
	idle := 60 * time.Second
	e, clients := rbacFleet(b, n)
	ctx := context.Background()
	user := "idle@example.com"
	ab := &v1alpha1.AccessBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-idle"},
		Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: user}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "bench-secret-reader"},
			Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}},
		},
	}
	if err := e.hubc.Create(ctx, ab); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.hubc.Delete(context.Background(), ab) })
	untilAllowed(b, clients, user, true, time.Now())
	proj := benchProject("bench-idle-project", 2)
	if err := e.hubc.Create(ctx, proj); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.hubc.Delete(context.Background(), proj) })
	waitProject(b, e, proj.Name, n, time.Now())
	time.Sleep(5 * time.Second) // let status settle

	before := map[string]map[string]float64{"hub": writes(b, e.hub)}
	for i, t := range e.targets[:n] {
		before[fmt.Sprintf("target-%d", i+1)] = writes(b, t)
	}
	// Watch the ManagedClusters through the window, to say what any write changed.
	wctx, stopWatch := context.WithCancel(ctx)
	var changes []string
	var mu sync.Mutex
	go func() {
		w, err := e.hubc.Watch(wctx, &v1alpha1.ManagedClusterList{})
		if err != nil {
			return
		}
		defer w.Stop()
		seen := map[string]*v1alpha1.ManagedCluster{}
		for ev := range w.ResultChan() {
			mc, ok := ev.Object.(*v1alpha1.ManagedCluster)
			if !ok {
				continue
			}
			if prev := seen[mc.Name]; prev != nil && prev.ResourceVersion != mc.ResourceVersion {
				mu.Lock()
				changes = append(changes, mc.Name+": "+statusDiff(prev, mc))
				mu.Unlock()
			}
			seen[mc.Name] = mc
		}
	}()
	time.Sleep(idle)
	stopWatch()
	mu.Lock()
	for _, c := range changes {
		b.Logf("ManagedCluster written while idle: %s", c)
	}
	mu.Unlock()
	after := map[string]map[string]float64{"hub": writes(b, e.hub)}
	for i, t := range e.targets[:n] {
		after[fmt.Sprintf("target-%d", i+1)] = writes(b, t)
	}
	// Writes that are the API server's own housekeeping (its identity Lease, and
	// the events of nothing) are reported apart from Drover's.
	drover := map[string]bool{"managedclusters": true, "accessbindings": true, "roletemplates": true, "clusterprojects": true,
		"events": true, "secrets": true, "clusterroles": true, "clusterrolebindings": true, "rolebindings": true,
		"roles": true, "namespaces": true, "deployments": true, "serviceaccounts": true}
	var hubWrites, targetWrites, other float64
	detail := map[string]float64{}
	for who, a := range after {
		for res, v := range a {
			d := v - before[who][res]
			if d == 0 {
				continue
			}
			if !drover[res] {
				other += d
				detail["(not Drover's) "+res] += d
				continue
			}
			detail[who+" "+res] += d
			if who == "hub" {
				hubWrites += d
			} else {
				targetWrites += d
			}
		}
	}
	b.ReportMetric(hubWrites, "hub-writes/60s")
	b.ReportMetric(targetWrites, "target-writes/60s")
	keys := make([]string, 0, len(detail))
	for k := range detail {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lines []string
	for _, k := range keys {
		lines = append(lines, fmt.Sprintf("%s=%g", k, detail[k]))
	}
	b.Logf("idle %s with %d targets: %g writes to Drover's resources on the hub, %g in the targets; API servers' own housekeeping: %g (%s)",
		idle, n, hubWrites, targetWrites, other, strings.Join(lines, ", "))
}

// writes reads apiserver_request_total from an API server and returns the write
// requests per resource.
func writes(b *testing.B, cp *controlplane.ControlPlane) map[string]float64 {
	b.Helper()
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		var verb, resource string
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "verb":
				verb = v
			case "resource":
				resource = v
			}
		}
		switch verb {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		if resource == "subjectaccessreviews" {
			continue // the benchmark's own questions
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		out[resource] += f
	}
	return out
}

// benchProject is a project on every benchmark cluster with nsCount namespaces, a
// quota, container defaults and network isolation.
func benchProject(name string, nsCount int) *v1alpha1.ClusterProject {
	p := &v1alpha1.ClusterProject{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.ClusterProjectSpec{
			Clusters:              v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{benchLabel: "true"}}},
			NamespaceDefaultQuota: &v1alpha1.QuotaSpec{Hard: v1alpha1.ResourceList{"requests.cpu": resource.MustParse("2"), "pods": resource.MustParse("20")}},
			ContainerDefaults:     &v1alpha1.ContainerDefaults{DefaultRequest: v1alpha1.ResourceList{"cpu": resource.MustParse("100m")}},
			NetworkIsolation:      true,
		},
	}
	for i := range nsCount {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: fmt.Sprintf("%s-%d", name, i+1)})
	}
	return p
}

// waitProject waits until a project reports n/n synced clusters and returns the time.
func waitProject(b *testing.B, e *env, name string, n int, start time.Time) time.Duration {
	b.Helper()
	want := fmt.Sprintf("%d/%d", n, n)
	for {
		var p v1alpha1.ClusterProject
		if err := e.hubc.Get(context.Background(), client.ObjectKey{Name: name}, &p); err != nil {
			b.Fatal(err)
		}
		if p.Status.Synced == want && p.Status.ObservedGeneration == p.Generation {
			return time.Since(start)
		}
		if time.Since(start) > time.Minute {
			b.Fatalf("project %s: synced %q after a minute, want %s", name, p.Status.Synced, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkProjectToReady creates ClusterProjects (3 namespaces, quota, limits,
// isolation) placed on 10 clusters and times until every namespace and its quota
// exist in every target, and until the hub reports the project synced everywhere.
func BenchmarkProjectToReady(b *testing.B) {
	const n, rounds, nsCount = 10, 5, 3
	e, clients := rbacFleet(b, n)
	ctx := context.Background()
	var inTargets, reported []time.Duration
	for i := range rounds {
		p := benchProject(fmt.Sprintf("bench-proj-%d", i), nsCount)
		start := time.Now()
		if err := e.hubc.Create(ctx, p); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		lat := make([]time.Duration, n)
		for ti, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ready := true
					for _, ns := range p.Spec.Namespaces {
						var q corev1.ResourceQuota
						if err := c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "drover-project"}, &q); err != nil {
							ready = false
							break
						}
					}
					if ready {
						lat[ti] = time.Since(start)
						return
					}
					if time.Since(start) > time.Minute {
						lat[ti] = -1
						return
					}
					time.Sleep(sarPoll)
				}
			}()
		}
		wg.Wait()
		for ti, l := range lat {
			if l < 0 {
				b.Fatalf("project %s not in target %d after a minute", p.Name, ti+1)
			}
		}
		inTargets = append(inTargets, maxOf(lat))
		reported = append(reported, waitProject(b, e, p.Name, n, start))
		if err := e.hubc.Delete(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	reportLatency(b, "in-all-targets", inTargets)
	reportLatency(b, "reported-ready", reported)
	b.Logf("project with %d namespaces on %d clusters: all namespaces with quota in every target p50 %s max %s; hub status %d/%d p50 %s max %s",
		nsCount, n, percentile(inTargets, 0.5).Round(time.Millisecond), maxOf(inTargets).Round(time.Millisecond),
		n, n, percentile(reported, 0.5).Round(time.Millisecond), maxOf(reported).Round(time.Millisecond))
}
