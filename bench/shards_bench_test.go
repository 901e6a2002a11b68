package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/bench/simcluster"
	"github.com/drover-io/drover/manager"
	"github.com/drover-io/drover/sharding"
)

// BenchmarkScaleShards runs two managers, --shard=0/2 and --shard=1/2, each its own
// process, against a real hub and N simulated clusters (SCALE_SHARD_CLUSTERS, default
// 1,000), and reports how they split the fleet: how many clusters each connects to,
// what each costs, how fast an AccessBinding reaches every cluster and its status
// says so (summed across the shards), what an idle sharded hub writes, and how long
// the clusters of a stopped, then returning, then killed shard go unsynced.
// `make bench-scale` runs it after BenchmarkScale.
func BenchmarkScaleShards(b *testing.B) {
	if os.Getenv("DROVER_BENCH_SCALE") == "" {
		b.Skip("the scale benchmark runs with make bench-scale (DROVER_BENCH_SCALE=1)")
	}
	n := 1000
	if s := os.Getenv("SCALE_SHARD_CLUSTERS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("SCALE_SHARD_CLUSTERS: %q is not a size", s)
		}
		n = v
	}
	b.Run(fmt.Sprintf("clusters=%d/shards=2", n), func(b *testing.B) { runShards(b, n) })
}

func runShards(b *testing.B, n int) {
	e := setup(b, 0)
	ctx := context.Background()
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
	want := [2]int{}
	for i := range n {
		names[i] = fmt.Sprintf("sim-%04d", i+1)
		want[sharding.Of(names[i], nil, 2)]++
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
	const lease = 15 * time.Second
	shardArgs := func(k int) []string {
		return []string{fmt.Sprintf("--shard=%d/2", k), "--shard-lease-duration=" + lease.String()}
	}
	procs := []*managerProc{e.startManagerWith(b, "", shardArgs(0)...), e.startManagerWith(b, "", shardArgs(1)...)}
	b.Cleanup(func() { scaleCleanup(b, hubc, rt) })
	time.Sleep(3 * time.Second)
	base := []memStats{procs[0].memStats(b), procs[1].memStats(b)}

	// Register: a Secret and a ManagedCluster each, eight at a time.
	w := e.watchClusters(b, "")
	start := time.Now()
	parallel(b, n, 8, func(i int) error {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: names[i] + "-kubeconfig", Namespace: namespace, Labels: map[string]string{scaleLabel: "true"}},
			Data:       map[string][]byte{"value": sims[i].Kubeconfig()},
		}
		if err := hubc.Create(ctx, secret); err != nil {
			return err
		}
		return hubc.Create(ctx, &v1alpha1.ManagedCluster{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{scaleLabel: "true"}},
			Spec:       v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: secret.Name}}},
		})
	})
	readyAt := map[string]bool{}
	deadline := time.After(10 * time.Minute)
	for len(readyAt) < n {
		select {
		case ev := <-w.ch:
			if ev.mc.Labels[scaleLabel] == "true" && readyTrue(ev.mc) {
				readyAt[ev.mc.Name] = true
			}
		case <-deadline:
			b.Fatalf("%d of %d clusters Ready after 10 minutes", len(readyAt), n)
		}
	}
	w.stop()
	registered := time.Since(start)

	// The split: each process exports the series of the clusters it connects to.
	// A cluster can turn Ready before its own shard has connected to it: while
	// the replicas start, one may hold the other's shard for a moment, and hand it
	// back. The split settles once each replica holds its own shard.
	connected := func(p *managerProc) int { return int(p.scrape(b).sum("drover_managedcluster_connected")) }
	split := [2]int{connected(procs[0]), connected(procs[1])}
	settle := time.Now()
	for ; split != want; split = [2]int{connected(procs[0]), connected(procs[1])} {
		if time.Since(settle) > time.Minute {
			b.Fatalf("the shards connect to %v clusters a minute after all were Ready; the hash puts %v in them", split, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if waited := time.Since(settle); waited > time.Second {
		b.Logf("the split settled %s after every cluster was Ready", waited.Round(100*time.Millisecond))
	}
	b.Logf("%d clusters over 2 shards: registered -> all Ready in %s; shard 0 connects to %d, shard 1 to %d (FNV-1a puts %d and %d)",
		n, registered.Round(time.Millisecond), split[0], split[1], want[0], want[1])

	// AccessBinding created -> allowed in every cluster, and its status (summed by
	// shard 0's replica from both shards' entries) says n/n.
	synced := fmt.Sprintf("%d/%d", n, n)
	bindingRound := func(i int) (allowed, status time.Duration) {
		user := fmt.Sprintf("shards-%d@example.com", i)
		ab := scaleBinding(fmt.Sprintf("bench-scale-shards-%d", i), user, rt.Name)
		start := time.Now()
		if err := hubc.Create(ctx, ab); err != nil {
			b.Fatal(err)
		}
		allowed = maxOf(untilCan(b, sims, start, func(c *simcluster.Cluster) bool { return c.Can(user, nil, "list", "", "secrets", "") }))
		for {
			var cur v1alpha1.AccessBinding
			if err := hubc.Get(ctx, client.ObjectKeyFromObject(ab), &cur); err != nil {
				b.Fatal(err)
			}
			if cur.Status.Synced == synced && cur.Status.ObservedGeneration == cur.Generation {
				status = time.Since(start)
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("AccessBinding %s: status.synced %q after 5 minutes, want %s", ab.Name, cur.Status.Synced, synced)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return allowed, status
	}
	var allowed, status []time.Duration
	for i := range 3 {
		a, s := bindingRound(i)
		allowed, status = append(allowed, a), append(status, s)
	}
	b.Logf("%d clusters, 2 shards: AccessBinding created -> allowed in all %d: %v; -> status %s: %v",
		n, n, roundAll(allowed), synced, roundAll(status))

	// Idle: what the two replicas write.
	time.Sleep(10 * time.Second)
	const idle = 30 * time.Second
	simBefore, hubBefore := srv.Counts(), writes(b, e.hub)
	time.Sleep(idle)
	simAfter, hubAfter := srv.Counts(), writes(b, e.hub)
	var hubDetail []string
	var hubWrites float64
	for res, v := range hubAfter {
		if d := v - hubBefore[res]; d > 0 {
			hubDetail = append(hubDetail, fmt.Sprintf("%s=%g", res, d))
			if res != "leases" {
				hubWrites += d
			}
		}
	}
	b.Logf("%d clusters, 2 shards, idle %s: %d writes to the targets, %g to the hub besides Leases (all hub writes: %s)",
		n, idle, simAfter["write"]-simBefore["write"], hubWrites, strings.Join(hubDetail, " "))

	for k, p := range procs {
		ms := p.memStats(b)
		b.Logf("shard %d: %d clusters, heap in use %d MiB (%.2f MiB per cluster), RSS %d MiB (%.2f per cluster), %d goroutines",
			k, split[k], ms.HeapInuse>>20, float64(int64(ms.HeapInuse)-int64(base[k].HeapInuse))/float64(split[k])/(1<<20),
			ms.RSS>>20, float64(int64(ms.RSS)-int64(base[k].RSS))/float64(split[k])/(1<<20), ms.Goroutines)
	}

	// until waits for shard 0's replica to hold `shards` and connect to `clusters`.
	until := func(what string, from time.Time, held float64, clusters int) time.Duration {
		for {
			m := procs[0].scrape(b)
			if m.sum("drover_shard_held") == held && int(m.sum("drover_managedcluster_connected")) == clusters {
				return time.Since(from)
			}
			if time.Since(from) > 5*time.Minute {
				b.Fatalf("%s: shard 0 holds %g shards and connects to %g clusters after 5 minutes", what,
					m.sum("drover_shard_held"), m.sum("drover_managedcluster_connected"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Shard 1 stops cleanly (a rolling update): its Lease is released, shard 0
	// takes it over and connects to its clusters.
	start = time.Now()
	procs[1].stop(b)
	stopped := time.Since(start)
	takeover := until("takeover after a clean stop", start, 2, n)
	a, s := bindingRound(10)
	b.Logf("shard 1 stopped cleanly (SIGTERM, %s to exit): shard 0 holds both and connects to all %d clusters %s later; a new AccessBinding then allowed in all in %s, status %s in %s",
		stopped.Round(time.Millisecond), n, takeover.Round(time.Millisecond), a.Round(time.Millisecond), synced, s.Round(time.Millisecond))
	ms := procs[0].memStats(b)
	b.Logf("shard 0 alone: %d clusters, heap in use %d MiB, RSS %d MiB, %d goroutines", n, ms.HeapInuse>>20, ms.RSS>>20, ms.Goroutines)

	// Shard 1's replica returns: shard 0 hands the shard back.
	start = time.Now()
	procs[1] = e.startManagerWith(b, "", shardArgs(1)...)
	handback := until("handover", start, 1, want[0])
	for connected(procs[1]) < want[1] {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("the returning shard 1 connects to %d of its %d clusters after 5 minutes", connected(procs[1]), want[1])
		}
		time.Sleep(100 * time.Millisecond)
	}
	back := time.Since(start)
	b.Logf("shard 1's replica returned: shard 0 handed the shard back %s after its start; the new replica connects to all %d of its clusters %s after its start",
		handback.Round(time.Millisecond), want[1], back.Round(time.Millisecond))

	// Shard 1's replica dies (SIGKILL): its Lease expires, then shard 0 takes over.
	time.Sleep(5 * time.Second)
	start = time.Now()
	_ = procs[1].cmd.Process.Signal(syscall.SIGKILL)
	<-procs[1].done
	procs[1].stopped = true
	crash := until("takeover after a crash", start, 2, n)
	a, s = bindingRound(11)
	b.Logf("shard 1's replica killed: shard 0 holds both and connects to all %d clusters %s later (Lease duration %s); a new AccessBinding then allowed in all in %s, status %s in %s",
		n, crash.Round(time.Millisecond), lease, a.Round(time.Millisecond), synced, s.Round(time.Millisecond))

	b.ReportMetric(ms3(maxOf(allowed)), "ab-allowed-all-max-ms")
	b.ReportMetric(ms3(takeover), "takeover-clean-ms")
	b.ReportMetric(ms3(crash), "takeover-crash-ms")
}
