package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/bench/simcluster"
	"github.com/drover-io/drover/manager"
)

// The scale benchmark runs one manager, as its own process with the shipped flags,
// against a real hub and N simulated clusters (package simcluster) registered
// through kubeconfig Secrets, for N = 10, 100 and 1,000. It reports what a fleet of
// that size costs and how fast it follows a change. `make bench-scale` runs it
// (DROVER_BENCH_SCALE=1 selects it; plain `make bench` skips it); SCALE_SIZES
// (e.g. "10,100") picks the sizes.
//
// Access is checked with the simulated cluster's own authorizer, the code that
// answers its SubjectAccessReviews, each time the cluster is written to: exact, and
// without polling a thousand API servers from the same two cores.

// scaleRow is one fleet size's figures.
type scaleRow struct {
	n                                   int
	registered, readyP50, readyP99      time.Duration
	abP50, abP99, abAllP50, abAllMax    time.Duration
	rtP50, rtP99, rtAll                 time.Duration
	driftP50, driftMax                  time.Duration
	idleSimWrites, idleHubWrites        float64
	idleWindow                          time.Duration
	heapPer, rssPer, goroutinesPer      float64
	heapTotal, rssTotal                 uint64
	goroutines                          int
	idleCPU, hubRPSIdle, hubRPSRegister float64
	simReqsIdle                         float64
	objectsPerCluster                   int
}

func BenchmarkScale(b *testing.B) {
	if os.Getenv("DROVER_BENCH_SCALE") == "" {
		b.Skip("the scale benchmark runs with make bench-scale (DROVER_BENCH_SCALE=1)")
	}
	sizes := []int{10, 100, 1000}
	if s := os.Getenv("SCALE_SIZES"); s != "" {
		sizes = nil
		for f := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("SCALE_SIZES: %q is not a size", f)
			}
			sizes = append(sizes, n)
		}
	}
	var rows []scaleRow
	for _, n := range sizes {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			rows = append(rows, runScale(b, n))
		})
	}
	printScaleTable(rows)
}

func printScaleTable(rows []scaleRow) {
	if len(rows) == 0 {
		return
	}
	var sb strings.Builder
	col := func(label string, f func(r scaleRow) string) {
		fmt.Fprintf(&sb, "| %s |", label)
		for _, r := range rows {
			fmt.Fprintf(&sb, " %s |", f(r))
		}
		sb.WriteString("\n")
	}
	d := func(x time.Duration) string {
		if x >= 10*time.Second {
			return x.Round(100 * time.Millisecond).String()
		}
		return x.Round(time.Millisecond).String()
	}
	sb.WriteString("\n| clusters |")
	for _, r := range rows {
		fmt.Fprintf(&sb, " %d |", r.n)
	}
	sb.WriteString("\n|---|")
	for range rows {
		sb.WriteString("---|")
	}
	sb.WriteString("\n")
	col("register → all Ready", func(r scaleRow) string { return d(r.registered) })
	col("register → Ready, per cluster p50 / p99", func(r scaleRow) string { return d(r.readyP50) + " / " + d(r.readyP99) })
	col("AccessBinding → allowed, per cluster p50 / p99", func(r scaleRow) string { return d(r.abP50) + " / " + d(r.abP99) })
	col("AccessBinding → allowed in all N, p50 / max", func(r scaleRow) string { return d(r.abAllP50) + " / " + d(r.abAllMax) })
	col("RoleTemplate edit → updated, per cluster p50 / p99", func(r scaleRow) string { return d(r.rtP50) + " / " + d(r.rtP99) })
	col("RoleTemplate edit → updated in all N", func(r scaleRow) string { return d(r.rtAll) })
	col("drift repaired (binding deleted), p50 / max", func(r scaleRow) string { return d(r.driftP50) + " / " + d(r.driftMax) })
	col("idle writes: targets / hub", func(r scaleRow) string {
		return fmt.Sprintf("%g / %g in %s", r.idleSimWrites, r.idleHubWrites, r.idleWindow)
	})
	col("manager heap in use per cluster", func(r scaleRow) string { return fmt.Sprintf("%.2f MiB", r.heapPer) })
	col("manager RSS per cluster", func(r scaleRow) string { return fmt.Sprintf("%.2f MiB", r.rssPer) })
	col("manager heap / RSS, total", func(r scaleRow) string {
		return fmt.Sprintf("%d / %d MiB", r.heapTotal>>20, r.rssTotal>>20)
	})
	col("goroutines per cluster (total)", func(r scaleRow) string { return fmt.Sprintf("%.1f (%d)", r.goroutinesPer, r.goroutines) })
	col("manager CPU while idle", func(r scaleRow) string { return fmt.Sprintf("%.1f%% of a core", 100*r.idleCPU) })
	col("hub API requests/s: idle / registering", func(r scaleRow) string {
		return fmt.Sprintf("%.1f / %.0f", r.hubRPSIdle, r.hubRPSRegister)
	})
	col("target API requests/s while idle (all N)", func(r scaleRow) string { return fmt.Sprintf("%.0f", r.simReqsIdle) })
	col("Drover objects per cluster", func(r scaleRow) string { return strconv.Itoa(r.objectsPerCluster) })
	fmt.Println(sb.String())
}

// scaleLabel selects the scale benchmark's clusters.
const scaleLabel = "bench.drover.io/scale"

func runScale(b *testing.B, n int) scaleRow {
	row := scaleRow{n: n}
	e := setup(b, 0)
	ctx := context.Background()
	// A client of its own, not throttled: registering 1,000 clusters is 2,000 creates.
	cfg := rest.CopyConfig(e.hub.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	scheme, err := manager.Scheme()
	if err != nil {
		b.Fatal(err)
	}
	hubc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}

	srv, err := simcluster.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	sims := make([]*simcluster.Cluster, n)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("sim-%04d", i+1)
		if sims[i], err = srv.AddCluster(names[i]); err != nil {
			b.Fatal(err)
		}
		for j := range nodesPerTarget {
			if err := sims[i].Add(benchNode(j + 1)); err != nil {
				b.Fatal(err)
			}
		}
	}

	rt := benchTemplate()
	rt.Name = "bench-scale-reader"
	if err := hubc.Create(ctx, rt); err != nil {
		b.Fatal(err)
	}
	p := e.startManagerWith(b, "", "--leader-elect", "--install-builtin-roletemplates")
	// Cleanups run last-in first-out: this one runs before the manager stops.
	b.Cleanup(func() { scaleCleanup(b, hubc, rt) })
	time.Sleep(3 * time.Second)
	base := p.memStats(b)
	baseMetrics := p.scrape(b)

	// Register: a Secret and a ManagedCluster each, eight at a time.
	w := e.watchClusters(b, "")
	created := make([]time.Time, n)
	start := time.Now()
	parallel(b, n, 8, func(i int) error {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: names[i] + "-kubeconfig", Namespace: namespace, Labels: map[string]string{scaleLabel: "true"}},
			Data:       map[string][]byte{"value": sims[i].Kubeconfig()},
		}
		if err := hubc.Create(ctx, secret); err != nil {
			return err
		}
		mc := &v1alpha1.ManagedCluster{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{scaleLabel: "true"}},
			Spec:       v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: secret.Name}}},
		}
		created[i] = time.Now()
		return hubc.Create(ctx, mc)
	})
	readyAt := map[string]time.Time{}
	deadline := time.After(10 * time.Minute)
	for len(readyAt) < n {
		select {
		case ev := <-w.ch:
			if ev.mc.Labels[scaleLabel] == "true" && readyTrue(ev.mc) {
				if _, ok := readyAt[ev.mc.Name]; !ok {
					readyAt[ev.mc.Name] = ev.at
				}
			}
		case <-deadline:
			b.Fatalf("%d of %d clusters Ready after 10 minutes", len(readyAt), n)
		}
	}
	row.registered = time.Since(start)
	registerMetrics := p.scrape(b)
	row.hubRPSRegister = (hubRequests(registerMetrics) - hubRequests(baseMetrics)) / row.registered.Seconds()
	var ready []time.Duration
	for i, name := range names {
		ready = append(ready, readyAt[name].Sub(created[i]))
	}
	row.readyP50, row.readyP99 = percentile(ready, 0.5), percentile(ready, 0.99)
	w.stop()
	b.Logf("%d clusters: registered -> all Ready in %s; per cluster p50 %s p99 %s; hub %.0f requests/s meanwhile",
		n, row.registered.Round(time.Millisecond), row.readyP50.Round(time.Millisecond), row.readyP99.Round(time.Millisecond), row.hubRPSRegister)

	// The template everywhere, and a standing binding for the template and drift rounds.
	waitAll(b, sims, "the RoleTemplate's ClusterRole", 5*time.Minute, func(c *simcluster.Cluster) bool {
		return hasClusterRole(c, "drover:bench-scale-reader")
	})
	standing := scaleBinding("bench-scale-standing", "standing@example.com", rt.Name)
	if err := hubc.Create(ctx, standing); err != nil {
		b.Fatal(err)
	}
	waitAll(b, sims, "the standing binding", 5*time.Minute, func(c *simcluster.Cluster) bool {
		return c.Can("standing@example.com", nil, "list", "", "secrets", "")
	})

	// AccessBinding created -> allowed in every cluster.
	rounds := 10
	switch {
	case n >= 1000:
		rounds = 3
	case n >= 100:
		rounds = 5
	}
	var perCluster, all []time.Duration
	if dir := os.Getenv("SCALE_PROFILE_DIR"); dir != "" {
		// The manager's CPU while it follows the bindings.
		go saveCPUProfile(p, filepath.Join(dir, fmt.Sprintf("cpu-ab-%d", n)), 20)
	}
	for i := range rounds {
		user := fmt.Sprintf("scale-%d-%d@example.com", n, i)
		ab := scaleBinding(fmt.Sprintf("bench-scale-%d", i), user, rt.Name)
		start := time.Now()
		if err := hubc.Create(ctx, ab); err != nil {
			b.Fatal(err)
		}
		lat := untilCan(b, sims, start, func(c *simcluster.Cluster) bool { return c.Can(user, nil, "list", "", "secrets", "") })
		perCluster = append(perCluster, lat...)
		all = append(all, maxOf(lat))
		if err := hubc.Delete(ctx, ab); err != nil {
			b.Fatal(err)
		}
		untilCan(b, sims, time.Now(), func(c *simcluster.Cluster) bool { return !c.Can(user, nil, "list", "", "secrets", "") })
	}
	row.abP50, row.abP99 = percentile(perCluster, 0.5), percentile(perCluster, 0.99)
	row.abAllP50, row.abAllMax = percentile(all, 0.5), maxOf(all)
	b.Logf("%d clusters, %d bindings: created -> allowed per cluster p50 %s p99 %s; in all %d: %v",
		n, rounds, row.abP50.Round(time.Millisecond), row.abP99.Round(time.Millisecond), n, roundAll(all))

	// RoleTemplate edited -> its ClusterRole updated in every cluster.
	if err := hubc.Get(ctx, client.ObjectKeyFromObject(rt), rt); err != nil {
		b.Fatal(err)
	}
	rt.Spec.Rules = append(rt.Spec.Rules, v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}})
	start = time.Now()
	if err := hubc.Update(ctx, rt); err != nil {
		b.Fatal(err)
	}
	lat := untilCan(b, sims, start, func(c *simcluster.Cluster) bool {
		return c.Can("standing@example.com", nil, "get", "", "configmaps", "default")
	})
	row.rtP50, row.rtP99, row.rtAll = percentile(lat, 0.5), percentile(lat, 0.99), maxOf(lat)
	b.Logf("%d clusters: RoleTemplate edited -> updated per cluster p50 %s p99 %s, all %s",
		n, row.rtP50.Round(time.Millisecond), row.rtP99.Round(time.Millisecond), row.rtAll.Round(time.Millisecond))

	// Drift: the standing binding deleted in a target, one cluster at a time.
	var drift []time.Duration
	for i := range min(n, 10) {
		c := sims[(i*n)/min(n, 10)]
		tc, err := client.New(c.RESTConfig(), client.Options{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := tc.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:" + standing.Name}}); err != nil {
			b.Fatal(err)
		}
		drift = append(drift, untilCan(b, []*simcluster.Cluster{c}, start, func(c *simcluster.Cluster) bool {
			return c.Can("standing@example.com", nil, "list", "", "secrets", "")
		})[0])
	}
	row.driftP50, row.driftMax = percentile(drift, 0.5), maxOf(drift)
	b.Logf("%d clusters: drift repaired p50 %s max %s", n, row.driftP50.Round(time.Millisecond), row.driftMax.Round(time.Millisecond))

	// Idle: nothing changes; count writes, requests and CPU.
	time.Sleep(10 * time.Second)
	row.idleWindow = 30 * time.Second
	simBefore := srv.Counts()
	hubBefore := writes(b, e.hub)
	mBefore := p.scrape(b)
	cpuBefore := procCPU(p.cmd.Process.Pid)
	time.Sleep(row.idleWindow)
	cpuAfter := procCPU(p.cmd.Process.Pid)
	mAfter := p.scrape(b)
	hubAfter := writes(b, e.hub)
	simAfter := srv.Counts()
	row.idleSimWrites = float64(simAfter["write"] - simBefore["write"])
	var reqs int64
	for k, v := range simAfter {
		if k != "write" {
			reqs += v - simBefore[k]
		}
	}
	row.simReqsIdle = float64(reqs) / row.idleWindow.Seconds()
	var hubDetail []string
	for res, v := range hubAfter {
		if d := v - hubBefore[res]; d > 0 {
			hubDetail = append(hubDetail, fmt.Sprintf("%s=%g", res, d))
			if res != "leases" {
				row.idleHubWrites += d
			}
		}
	}
	row.idleCPU = (cpuAfter - cpuBefore) / row.idleWindow.Seconds()
	row.hubRPSIdle = (hubRequests(mAfter) - hubRequests(mBefore)) / row.idleWindow.Seconds()
	b.Logf("%d clusters idle %s: %g writes to the targets, %g to the hub (all hub writes: %s; leases are leader election's); manager CPU %.1f%%; hub %.1f requests/s; targets %.0f requests/s",
		n, row.idleWindow, row.idleSimWrites, row.idleHubWrites, strings.Join(hubDetail, " "), 100*row.idleCPU, row.hubRPSIdle, row.simReqsIdle)

	// Memory, after the fleet has done all of the above.
	ms := p.memStats(b)
	row.heapTotal, row.rssTotal, row.goroutines = ms.HeapInuse, ms.RSS, ms.Goroutines
	row.heapPer = float64(int64(ms.HeapInuse)-int64(base.HeapInuse)) / float64(n) / (1 << 20)
	row.rssPer = float64(int64(ms.RSS)-int64(base.RSS)) / float64(n) / (1 << 20)
	row.goroutinesPer = float64(ms.Goroutines-base.Goroutines) / float64(n)
	row.objectsPerCluster = sims[0].ObjectCount()
	b.Logf("%d clusters: manager heap in use %d MiB (%.2f MiB per cluster), RSS %d MiB (%.2f per cluster), %d goroutines (%.1f per cluster; %d before)",
		n, ms.HeapInuse>>20, row.heapPer, ms.RSS>>20, row.rssPer, ms.Goroutines, row.goroutinesPer, base.Goroutines)
	if dir := os.Getenv("SCALE_PROFILE_DIR"); dir != "" {
		saveProfiles(b, p, dir, n)
	}
	b.ReportMetric(ms3(row.abP99), "ab-allowed-p99-ms")
	b.ReportMetric(row.heapPer, "heap-MiB/cluster")
	b.ReportMetric(row.rssPer, "rss-MiB/cluster")
	return row
}

func ms3(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func benchNode(i int) *corev1.Node {
	name := fmt.Sprintf("node-%d", i)
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3800m"), corev1.ResourceMemory: resource.MustParse("15Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "v1.36.3", OSImage: "Ubuntu 24.04 LTS", ContainerRuntimeVersion: "containerd://2.1.0"},
		},
	}
}

func scaleBinding(name, user, template string) *v1alpha1.AccessBinding {
	return &v1alpha1.AccessBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: user}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: template},
			Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{scaleLabel: "true"}}},
		},
	}
}

func hasClusterRole(c *simcluster.Cluster, name string) bool {
	return c.HasObject("rbac.authorization.k8s.io", "clusterroles", "", name)
}

// untilCan waits in every cluster until ok holds, re-checking at each write to the
// cluster, and returns per cluster the time from start.
func untilCan(b *testing.B, sims []*simcluster.Cluster, start time.Time, ok func(*simcluster.Cluster) bool) []time.Duration {
	b.Helper()
	out := make([]time.Duration, len(sims))
	failed := make([]bool, len(sims))
	var wg sync.WaitGroup
	for i, c := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			timeout := time.After(2 * time.Minute)
			for {
				ch := c.Changed()
				if ok(c) {
					out[i] = time.Since(start)
					return
				}
				select {
				case <-ch:
				case <-timeout:
					failed[i] = true
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, f := range failed {
		if f {
			b.Fatalf("cluster %s: not as expected 2 minutes after the change", sims[i].Name())
		}
	}
	return out
}

// waitAll waits until ok holds in every cluster.
func waitAll(b *testing.B, sims []*simcluster.Cluster, what string, timeout time.Duration, ok func(*simcluster.Cluster) bool) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, c := range sims {
			if !ok(c) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s missing in %d of %d clusters after %s", what, missing, len(sims), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parallel runs fn(0..n-1) with at most workers at once and fails on the first error.
func parallel(b *testing.B, n, workers int, fn func(i int) error) {
	b.Helper()
	next := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// hubRequests sums the manager's requests to the hub (client-go's counter, which
// leaves out the targets).
func hubRequests(m metricSet) float64 { return m.sum("rest_client_requests_total") }

// procCPU is a process's user and system CPU time in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks (USER_HZ is 100 on Linux)
}

// scaleCleanup removes the fleet from the hub while the manager still runs: the
// ManagedClusters are released from their finalizers first (the simulated clusters
// go with the benchmark; there is nothing to clean up in them).
func scaleCleanup(b *testing.B, hubc client.Client, rt *v1alpha1.RoleTemplate) {
	ctx := context.Background()
	sel := client.MatchingLabels{scaleLabel: "true"}
	var abs v1alpha1.AccessBindingList
	if err := hubc.List(ctx, &abs); err == nil {
		for i := range abs.Items {
			if strings.HasPrefix(abs.Items[i].Name, "bench-scale-") {
				_ = hubc.Delete(ctx, &abs.Items[i])
			}
		}
	}
	_ = hubc.Delete(ctx, rt)
	var list v1alpha1.ManagedClusterList
	if err := hubc.List(ctx, &list, sel); err != nil {
		b.Errorf("list ManagedClusters: %v", err)
		return
	}
	// One by one, sixteen at a time: a delete-collection of a thousand
	// ManagedClusters outlasts the API server's request timeout.
	parallel(b, len(list.Items), 16, func(i int) error {
		mc := &list.Items[i]
		base := mc.DeepCopy()
		mc.Spec.DeletionPolicy = v1alpha1.DeletionPolicyOrphan
		if err := hubc.Patch(ctx, mc, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("set deletionPolicy Orphan on %s: %w", mc.Name, err)
		}
		if err := hubc.Delete(ctx, mc); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ManagedCluster %s: %w", mc.Name, err)
		}
		return nil
	})
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if err := hubc.List(ctx, &list, sel); err == nil && len(list.Items) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(list.Items) > 0 {
		b.Errorf("%d ManagedClusters still there 5 minutes after deletion", len(list.Items))
	}
	var secrets corev1.SecretList
	if err := hubc.List(ctx, &secrets, sel, client.InNamespace(namespace)); err != nil {
		b.Errorf("list Secrets: %v", err)
		return
	}
	parallel(b, len(secrets.Items), 16, func(i int) error {
		return client.IgnoreNotFound(hubc.Delete(ctx, &secrets.Items[i]))
	})
}

// saveProfiles writes the manager's heap profile and goroutine dump into dir.
func saveProfiles(b *testing.B, p *managerProc, dir string, n int) {
	base := strings.TrimSuffix(p.memstatsURL, "/memstats")
	for _, prof := range []string{"heap", "goroutine?debug=1"} {
		resp, err := http.Get(base + "/debug/pprof/" + prof)
		if err != nil {
			b.Logf("profile %s: %v", prof, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		name := filepath.Join(dir, fmt.Sprintf("%s-%d", strings.Split(prof, "?")[0], n))
		if err := os.WriteFile(name, body, 0o600); err != nil {
			b.Logf("profile %s: %v", prof, err)
		}
	}
}

// saveCPUProfile writes the manager's CPU profile over the next seconds to path.
func saveCPUProfile(p *managerProc, path string, seconds int) {
	base := strings.TrimSuffix(p.memstatsURL, "/memstats")
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds))
	if err != nil {
		return
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, body, 0o600)
}
