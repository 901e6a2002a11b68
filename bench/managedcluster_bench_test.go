package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
)

// The ManagedCluster benchmarks: register-to-Ready latency, time to detect an
// unreachable cluster, and the manager's memory per connected cluster. The manager
// runs with its default flags throughout (probe every 2s, 2s probe timeout, two failed
// probes to disconnect, 20s agent heartbeat timeout). Each benchmark ignores b.N: it
// does a fixed number of rounds and reports their figures.

var (
	readyTrue      = condIs(v1alpha1.ReadyCondition, metav1.ConditionTrue)
	connectedTrue  = condIs(v1alpha1.ConnectedCondition, metav1.ConditionTrue)
	connectedFalse = condIs(v1alpha1.ConnectedCondition, metav1.ConditionFalse)
	agentReadyTrue = condIs(v1alpha1.AgentReadyCondition, metav1.ConditionTrue)
	syncedTrue     = condIs(v1alpha1.SyncedCondition, metav1.ConditionTrue)
)

// BenchmarkRegisterToReady times, for fresh target clusters registered one at a time,
// the span from creating the kubeconfig Secret and the ManagedCluster to the hub
// showing Connected=True and then Ready=True (which includes installing the agent;
// the agent itself need not run), and then the rest of the status (version, nodes,
// observedGeneration) and the finalizer. Times come from a watch on the hub, stamped as
// each event arrives. Then it starts the agent and times the span until AgentReady.
func BenchmarkRegisterToReady(b *testing.B) {
	const rounds = 5
	e := setup(b, rounds)
	e.startManager(b)
	e.cleanupClusters(b)

	var toConnected, toReady, toComplete, toAgentReady []time.Duration
	for i := range rounds {
		name := fmt.Sprintf("bench-register-%d", i+1)
		target := e.targets[i]
		w := e.watchClusters(b, name)
		start := time.Now()
		e.register(b, name, target)
		conn := w.until(b, time.Minute, "Connected=True", connectedTrue)
		ready := w.until(b, time.Minute, "Ready=True", readyTrue)
		full := w.until(b, time.Minute, "complete status", statusComplete)
		time.Sleep(time.Second)
		w.drain()
		updates := w.modified
		toConnected = append(toConnected, conn.at.Sub(start))
		toReady = append(toReady, ready.at.Sub(start))
		toComplete = append(toComplete, full.at.Sub(start))
		b.Logf("%s: Connected after %s, Ready after %s, full status after %s (%s, %s nodes ready, %s); %d updates of the ManagedCluster", name,
			conn.at.Sub(start).Round(time.Millisecond), ready.at.Sub(start).Round(time.Millisecond),
			full.at.Sub(start).Round(time.Millisecond),
			full.mc.Status.KubernetesVersion, full.mc.Status.NodesReady, full.mc.Status.Distribution, updates)

		// Now the agent starts, as its pod would once scheduled: how long until the
		// hub shows AgentReady?
		agentCtx, stopAgent := context.WithCancel(context.Background())
		agentDone := make(chan struct{})
		agentStart := time.Now()
		go func() {
			defer close(agentDone)
			_ = agent.Run(agentCtx, target.Config, agent.Options{
				ClusterName: name, Namespace: controllers.AgentNamespace, LeaseName: controllers.AgentName,
				RenewInterval: agent.DefaultRenewInterval, LeaseDuration: agent.DefaultLeaseDuration, Version: "bench",
			})
		}()
		ar := w.until(b, time.Minute, "AgentReady=True", agentReadyTrue)
		stopAgent()
		<-agentDone
		w.stop()
		toAgentReady = append(toAgentReady, ar.at.Sub(agentStart))
		b.Logf("%s: agent started %s after Ready; AgentReady %s after the agent started",
			name, agentStart.Sub(ready.at).Round(time.Millisecond), ar.at.Sub(agentStart).Round(time.Millisecond))
	}
	b.Logf("register -> Connected: %s", strings.Join(roundAll(toConnected), " "))
	b.Logf("register -> Ready:     %s", strings.Join(roundAll(toReady), " "))
	b.Logf("register -> complete:  %s", strings.Join(roundAll(toComplete), " "))
	b.Logf("agent start -> AgentReady: %s", strings.Join(roundAll(toAgentReady), " "))
	b.Logf("register -> Ready: p50 %s, max %s (target <= 2s)",
		percentile(toReady, 0.5).Round(time.Millisecond), percentile(toReady, 1).Round(time.Millisecond))
	reportLatency(b, "connected", toConnected)
	reportLatency(b, "ready", toReady)
	reportLatency(b, "complete", toComplete)
	reportLatency(b, "agentready", toAgentReady)
}

// statusComplete: Ready, with the facts, the finalizer and observedGeneration written
// (the controller writes conditions, metadata and the rest of status in separate
// requests).
func statusComplete(mc *v1alpha1.ManagedCluster) bool {
	return readyTrue(mc) && mc.Status.KubernetesVersion != "" && mc.Status.NodesReady != "" &&
		mc.Status.ObservedGeneration == mc.Generation && slices.Contains(mc.Finalizers, controllers.ManagedClusterFinalizer)
}

// BenchmarkUnreachableDetection stops a target's API server and times the span from
// the moment it stops answering (polled every 20ms on new connections) until the hub
// shows Connected=False; then it restarts it and times the recovery to Ready. A
// second, healthy cluster is registered throughout; its Connected condition must not
// flicker. Rounds start at different offsets into the 2s probe period.
func BenchmarkUnreachableDetection(b *testing.B) {
	const rounds = 5
	e := setup(b, 2)
	e.startManager(b)
	e.cleanupClusters(b)

	flaky, steady := e.targets[0], e.targets[1]
	e.register(b, "bench-outage", flaky)
	e.register(b, "bench-steady", steady)
	e.waitClusters(b, []string{"bench-outage", "bench-steady"}, time.Minute, "Ready", readyTrue)
	sw := e.watchClusters(b, "bench-steady")
	w := e.watchClusters(b, "bench-outage")
	w.until(b, time.Minute, "Ready=True", readyTrue)

	var detect, fromStop, recovery []time.Duration
	for i := range rounds {
		// Spread the moment of failure over the probe period.
		time.Sleep(3*time.Second + time.Duration(i)*400*time.Millisecond)
		stopBegan := time.Now()
		stopErr := make(chan error, 1)
		go func() { stopErr <- flaky.StopAPIServer() }()
		// The cluster is unreachable from the moment its API server stops answering
		// on new connections; the stop itself may take up to 5s while open watches
		// drain.
		gone := pollUntil(b, time.Minute, func() bool { return !answers(flaky) })
		down := w.until(b, time.Minute, "Connected=False", connectedFalse)
		if err := <-stopErr; err != nil {
			b.Fatal(err)
		}
		stopped := time.Now()
		c := conditions.Get(down.mc, v1alpha1.ConnectedCondition)
		detect = append(detect, down.at.Sub(gone))
		fromStop = append(fromStop, down.at.Sub(stopBegan))
		b.Logf("round %d: API server gone %s after SIGTERM (stop took %s); Connected=False %s after it was gone: %s: %s",
			i+1, gone.Sub(stopBegan).Round(time.Millisecond), stopped.Sub(stopBegan).Round(time.Millisecond),
			down.at.Sub(gone).Round(time.Millisecond), c.Reason, c.Message)
		if !conditions.IsFalse(down.mc, v1alpha1.ReadyCondition) {
			b.Logf("round %d: Ready is not False in the same update: %s", i+1, describe(down.mc))
		}

		restartBegan := time.Now()
		restartErr := make(chan error, 1)
		go func() { restartErr <- flaky.RestartAPIServer() }()
		back := pollUntil(b, 2*time.Minute, func() bool { return answers(flaky) })
		up := w.until(b, 2*time.Minute, "Connected=True and Ready=True", both(connectedTrue, readyTrue))
		if err := <-restartErr; err != nil {
			b.Fatal(err)
		}
		recovery = append(recovery, up.at.Sub(back))
		b.Logf("round %d: API server answering again %s after the restart began; Ready again %s later",
			i+1, back.Sub(restartBegan).Round(time.Millisecond), up.at.Sub(back).Round(time.Millisecond))
	}
	flickers := 0
	for _, ev := range sw.drain() {
		if ev.typ != watch.Deleted && !connectedTrue(ev.mc) {
			flickers++
			b.Logf("the healthy cluster changed: %s", describe(ev.mc))
		}
	}
	b.Logf("Connected=False after the API server stopped answering: %s", strings.Join(roundAll(detect), " "))
	b.Logf("Connected=False after SIGTERM to the API server:        %s", strings.Join(roundAll(fromStop), " "))
	b.Logf("Ready again after the API server answered again:       %s", strings.Join(roundAll(recovery), " "))
	b.Logf("unreachable detected: p50 %s, max %s (target <= 10s); healthy cluster not Connected in %d update(s)",
		percentile(detect, 0.5).Round(time.Millisecond), percentile(detect, 1).Round(time.Millisecond), flickers)
	reportLatency(b, "detect", detect)
	reportLatency(b, "detect-from-sigterm", fromStop)
	reportLatency(b, "recover", recovery)
	b.ReportMetric(float64(flickers), "healthy-flickers")
}

// BenchmarkManagerMemory measures the manager process's memory with 1, 5 and 10
// connected clusters against its own baseline with none. Every cluster has three
// Nodes and an agent renewing its Lease (run in this process, not the manager's), and
// holds the five built-in RoleTemplates and one cluster-wide AccessBinding, so the
// figures include the Node, Lease and RBAC caches and the heartbeat traffic. Memory is read after a forced GC, in the
// manager process: see memStats. The last step keeps 10 clusters idle for a while and
// counts what the manager writes meanwhile.
func BenchmarkManagerMemory(b *testing.B) {
	const most = 10
	e := setup(b, most)
	m := e.startManager(b)
	e.cleanupClusters(b)
	agentCtx, stopAgents := context.WithCancel(context.Background())
	b.Cleanup(stopAgents)
	// What a user has on the hub from the start: the built-in RoleTemplates (five
	// ClusterRoles in every target) and one binding on every cluster.
	installIntents(b, e)
	time.Sleep(time.Second)

	base := m.memStats(b)
	b.Logf("baseline, no clusters: heap in use %s, live heap %s, RSS %s, %d goroutines",
		mib(base.HeapInuse), mib(base.HeapAlloc), mib(base.RSS), base.Goroutines)

	var names []string
	prevN, prev := 0, base
	for _, n := range []int{1, 5, most} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			for len(names) < n {
				name := fmt.Sprintf("bench-mem-%02d", len(names)+1)
				target := e.targets[len(names)]
				e.register(b, name, target)
				go func() {
					_ = agent.Run(agentCtx, target.Config, agent.Options{
						ClusterName: name, Namespace: controllers.AgentNamespace, LeaseName: controllers.AgentName,
						RenewInterval: agent.DefaultRenewInterval, LeaseDuration: agent.DefaultLeaseDuration,
						Version: "bench",
					})
				}()
				names = append(names, name)
			}
			e.waitClusters(b, names, 2*time.Minute, "Ready and AgentReady", both(readyTrue, agentReadyTrue))
			e.waitClusters(b, names, time.Minute, "Synced", syncedTrue)
			// Let the caches of the newest clusters fill and the reconciles settle.
			time.Sleep(5 * time.Second)
			scraped := m.scrape(b) // before memStats, which forces a GC
			s := m.memStats(b)
			per := func(after, before uint64) float64 {
				return (float64(after) - float64(before)) / float64(n) / 1024
			}
			b.Logf("%d clusters: heap in use %s (+%.0f KiB/cluster), live heap %s (+%.0f KiB/cluster), RSS %s (+%.0f KiB/cluster), %d goroutines (+%.1f/cluster)",
				n, mib(s.HeapInuse), per(s.HeapInuse, base.HeapInuse), mib(s.HeapAlloc), per(s.HeapAlloc, base.HeapAlloc),
				mib(s.RSS), per(s.RSS, base.RSS), s.Goroutines, float64(s.Goroutines-base.Goroutines)/float64(n))
			b.Logf("%d clusters: goroutine stacks %s (+%.0f KiB/cluster), heap objects +%.0f/cluster",
				n, mib(s.StackInuse), per(s.StackInuse, base.StackInuse), (float64(s.HeapObjects)-float64(base.HeapObjects))/float64(n))
			b.Logf("%d clusters, as /metrics showed it just before (no forced GC): go_memstats_heap_inuse_bytes %s, process_resident_memory_bytes %s",
				n, mib(uint64(scraped.sum("go_memstats_heap_inuse_bytes"))), mib(uint64(scraped.sum("process_resident_memory_bytes"))))
			b.ReportMetric(per(s.HeapInuse, base.HeapInuse), "heap-KiB/cluster")
			b.ReportMetric(per(s.HeapInuse, base.HeapInuse)/1024, "heap-MiB/cluster")
			b.ReportMetric(per(s.HeapAlloc, base.HeapAlloc), "live-KiB/cluster")
			b.ReportMetric(per(s.RSS, base.RSS)/1024, "rss-MiB/cluster")
			b.ReportMetric(per(s.StackInuse, base.StackInuse), "stack-KiB/cluster")
			b.ReportMetric(float64(s.Goroutines-base.Goroutines)/float64(n), "goroutines/cluster")
			if prevN > 0 && n > prevN {
				// The cost of one more cluster, without the one-time cost of the first.
				marginal := (float64(s.HeapInuse) - float64(prev.HeapInuse)) / float64(n-prevN) / 1024
				b.Logf("clusters %d -> %d: heap in use +%.0f KiB per added cluster, live heap +%.0f KiB, RSS +%.0f KiB",
					prevN, n, marginal, (float64(s.HeapAlloc)-float64(prev.HeapAlloc))/float64(n-prevN)/1024,
					(float64(s.RSS)-float64(prev.RSS))/float64(n-prevN)/1024)
				b.ReportMetric(marginal, "marginal-heap-KiB/cluster")
			}
			prevN, prev = n, s
		})
	}

	// Idle: nothing changes in the hub or the targets (only the agents renew their
	// Leases). The first window starts as soon as every cluster reports AgentReady and
	// lasts past the agent heartbeat timeout (20s), when the controller re-reads each
	// Lease; the second is the steady state after it.
	b.Run(fmt.Sprintf("idle-clusters=%d", most), func(b *testing.B) {
		if len(names) < most {
			b.Skip("needs the clusters=10 step")
		}
		w := e.watchClusters(b, "")
		time.Sleep(time.Second)
		prev := map[string]*v1alpha1.ManagedCluster{}
		for _, ev := range w.drain() { // the initial ADDED events
			prev[ev.mc.Name] = ev.mc
		}
		for _, win := range []struct {
			name   string
			length time.Duration
		}{{"settling", 25 * time.Second}, {"steady", 30 * time.Second}} {
			before := m.scrape(b)
			time.Sleep(win.length)
			after := m.scrape(b)
			hubUpdates := 0
			for _, ev := range w.drain() {
				if ev.typ == watch.Modified {
					hubUpdates++
					b.Logf("%s: ManagedCluster %s written while idle: %s", win.name, ev.mc.Name, statusDiff(prev[ev.mc.Name], ev.mc))
				}
				prev[ev.mc.Name] = ev.mc
			}
			hub := `host="` + hostOf(e.hub) + `"`
			var targetWrites, targetReads, hubWrites float64
			for _, t := range e.targets[:most] {
				h := `host="` + hostOf(t) + `"`
				for _, verb := range []string{"POST", "PUT", "PATCH", "DELETE"} {
					targetWrites += delta(before, after, "rest_client_requests_total", h, `method="`+verb+`"`)
				}
				targetReads += delta(before, after, "rest_client_requests_total", h, `method="GET"`)
			}
			for _, verb := range []string{"POST", "PUT", "PATCH", "DELETE"} {
				hubWrites += delta(before, after, "rest_client_requests_total", hub, `method="`+verb+`"`)
			}
			hubReads := delta(before, after, "rest_client_requests_total", hub, `method="GET"`)
			reconciles := delta(before, after, "controller_runtime_reconcile_total", `controller="managedcluster"`)
			b.Logf("%s, %d idle clusters over %s: %d ManagedCluster updates on the hub; manager requests: hub %.0f writes, %.0f GETs; targets %.0f writes, %.0f GETs (%.1f/s: the health probes); %.0f reconciles",
				win.name, most, win.length, hubUpdates, hubWrites, hubReads, targetWrites, targetReads, targetReads/win.length.Seconds(), reconciles)
			b.ReportMetric(hubWrites, win.name+"-hub-writes")
			b.ReportMetric(targetWrites, win.name+"-target-writes")
			b.ReportMetric(reconciles/win.length.Seconds(), win.name+"-reconciles/s")
		}
	})
}

// statusDiff names the top-level status and metadata fields that differ between two
// versions of a ManagedCluster, with their new values.
func statusDiff(old, cur *v1alpha1.ManagedCluster) string {
	return csMCDiff(old, cur)
}

// installIntents creates the built-in RoleTemplates (config/roletemplates) and an
// AccessBinding granting cluster-owner on every cluster, and deletes them when the
// benchmark ends.
func installIntents(b *testing.B, e *env) {
	b.Helper()
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join("..", "config", "roletemplates", "*.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	var objs []client.Object
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		rt := &v1alpha1.RoleTemplate{}
		if err := yaml.UnmarshalStrict(raw, rt); err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		objs = append(objs, rt)
	}
	objs = append(objs, &v1alpha1.AccessBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-platform-admins"},
		Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: "Group", Name: "platform-admins"}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "cluster-owner"},
			Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}},
		},
	})
	for _, o := range objs {
		if err := e.hubc.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for _, o := range objs {
			if err := client.IgnoreNotFound(e.hubc.Delete(context.Background(), o)); err != nil {
				b.Error(err)
			}
		}
	})
}

func delta(before, after metricSet, name string, labels ...string) float64 {
	return after.sum(name, labels...) - before.sum(name, labels...)
}

func mib(v uint64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }

// pollUntil polls cond every 20ms and returns when it first held.
func pollUntil(b *testing.B, timeout time.Duration, cond func() bool) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return time.Now()
		}
		if time.Now().After(deadline) {
			b.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
