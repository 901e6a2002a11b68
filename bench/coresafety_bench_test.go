package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/render"
)

// The core-safety benchmarks check what the "core safety" milestone promises, with
// the manager's default flags: a restarted manager writes nothing into the targets
// and (almost) nothing to the hub, a black-holed cluster does not slow the healthy
// ones, and a dead agent costs no writes once its Lease has expired. Like the others,
// they ignore b.N, report fixed rounds, and fail only on incorrect behaviour, never on
// a timing.

// BenchmarkRestart holds 50 intents (6 RoleTemplates, 40 cluster-scoped and 2
// project-scoped AccessBindings, 2 ClusterProjects of 2 namespaces) on 10 clusters,
// stops the manager (SIGTERM) once everything is synced and status has settled, and
// starts a new one. It counts the writes each API server saw (its own request
// metrics) at shutdown and over the new manager's first 20 s after readyz, names
// every hub object written, and times the new manager's first completed sync of every
// cluster. That moment is observed in the targets: the syncer ends every completed
// sync by reading the ClusterRoles that bindings refer to (view, edit, admin here),
// which is the only GET of a ClusterRole anything makes, so the first such GET in a
// target after the restart marks its first sync as done. The targets' metrics are
// polled in turn, so the figure reported is the first poll that saw every cluster
// synced; the log also gives the last poll that did not. If that marker never shows
// (the syncer changed), the writes are still counted after the fixed settle time.
func BenchmarkRestart(b *testing.B) {
	const n = 10
	// The new manager gets this long after it answers /readyz before the writes are
	// counted (and at least csSettle after the first sync of every cluster).
	const afterReady = 20 * time.Second
	const csSettle = 5 * time.Second
	ctx := context.Background()
	e, p1, names, clients := csFleet(b, n, "bench-restart")

	intents := csRestartIntents()
	for _, o := range intents {
		if err := e.hubc.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = client.IgnoreNotFound(e.hubc.Delete(context.Background(), o)) })
	}
	start := time.Now()
	csWaitIntents(b, e, n, 3*time.Minute)
	e.waitClusters(b, names, time.Minute, "Synced", syncedTrue)
	b.Logf("%d intents (+ the bench RoleTemplate) held on %d clusters, status complete, %s after creating them",
		len(intents), n, time.Since(start).Round(time.Millisecond))
	time.Sleep(csSettle) // let status settle

	// What the targets hold before the restart, with resourceVersions.
	held := make([]map[string]string, n)
	for i, c := range clients {
		held[i] = csTargetObjects(b, c)
	}
	b.Logf("each target holds %s (target 1)", csKindCounts(held[0]))
	for i := range held {
		if got := csKindCounts(held[i]); !strings.Contains(got, "ClusterRoleBinding=") {
			b.Fatalf("target %d holds no ClusterRoleBindings of Drover's: %s", i+1, got)
		}
	}

	hw := csWatchHub(b, e)
	hubA := writes(b, e.hub)
	hw.setPhase("shutdown")
	stopBegan := time.Now()
	p1.stop(b)
	b.Logf("old manager stopped %s after SIGTERM", time.Since(stopBegan).Round(time.Millisecond))
	time.Sleep(time.Second) // any write at shutdown has reached the watch
	hubB := writes(b, e.hub)
	targetsB := make([]map[string]float64, n)
	for i, t := range e.targets[:n] {
		targetsB[i] = writes(b, t)
	}

	// Observe each target's first ClusterRole GET, from just before the new manager
	// starts.
	syncs := csWatchFirstSyncs(b, e, n)
	hw.setPhase("restart")
	t0 := time.Now()
	p2 := e.startManager(b)
	// Cleanups run last-in first-out: delete the clusters while this manager runs.
	e.cleanupClusters(b)
	up := time.Since(t0)
	firstSync, lastMiss, synced := syncs.wait(90 * time.Second)
	settleUntil := t0.Add(up - 2*time.Second + afterReady) // startManager returns 2 s after readyz
	if synced {
		settleUntil = csLater(settleUntil, t0.Add(maxOf(firstSync)+csSettle))
	}
	time.Sleep(time.Until(settleUntil))
	window := time.Since(t0)
	hubC := writes(b, e.hub)
	targetsC := make([]map[string]float64, n)
	for i, t := range e.targets[:n] {
		targetsC[i] = writes(b, t)
	}
	hw.setPhase("done")
	time.Sleep(500 * time.Millisecond)
	hw.stop()

	// Writes.
	hubShutdown := csDelta(hubA, hubB)
	hubRestart := csDelta(hubB, hubC)
	targetTotal := map[string]float64{}
	var perTarget []string
	for i := range targetsC {
		d := csDelta(targetsB[i], targetsC[i])
		for k, v := range d {
			targetTotal[k] += v
		}
		if ours, _ := csSplit(d, csTargetResources); ours > 0 {
			perTarget = append(perTarget, fmt.Sprintf("target %d: %s", i+1, csFormat(d)))
		}
	}
	hubShutdownOurs, _ := csSplit(hubShutdown, csHubResources)
	hubOurs, hubOther := csSplit(hubRestart, csHubResources)
	targetOurs, targetOther := csSplit(targetTotal, csTargetResources)
	for _, l := range perTarget {
		b.Logf("target writes after the restart, %s", l)
	}
	hw.log(b)

	m := p2.scrape(b)
	hubHost := `host="` + hostOf(e.hub) + `"`
	var mgrHubWrites float64
	for _, verb := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		mgrHubWrites += m.sum("rest_client_requests_total", hubHost, `method="`+verb+`"`)
	}
	var reconciles []string
	for _, c := range []string{"managedcluster", "clustersync", "accessbinding", "roletemplate", "clusterproject"} {
		reconciles = append(reconciles, fmt.Sprintf("%s=%g", c, m.sum("controller_runtime_reconcile_total", `controller="`+c+`"`)))
	}

	b.Logf("shutdown (SIGTERM until exit, +1 s): hub writes to Drover's resources %g: %s", hubShutdownOurs, csFormat(hubShutdown))
	b.Logf("restart, over the new manager's first %s (start -> readyz+%s): target writes %g in all %d targets (%s; API servers' own: %g), hub writes %g (%s; API server's own: %g)",
		window.Round(time.Second), afterReady, targetOurs, n, csFormat(csOnly(targetTotal, csTargetResources)), targetOther,
		hubOurs, csFormat(csOnly(hubRestart, csHubResources)), hubOther)
	b.Logf("new manager: its own write requests to the hub %g; reconciles %s", mgrHubWrites, strings.Join(reconciles, " "))
	b.Logf("new manager answered /readyz %s after exec", (up - 2*time.Second).Round(time.Millisecond))
	if synced {
		var per []string
		for i := range firstSync {
			per = append(per, fmt.Sprintf("%s-%s", lastMiss[i].Round(time.Millisecond), firstSync[i].Round(time.Millisecond)))
		}
		b.Logf("first completed sync after the manager's exec, per cluster (between the last poll without it and the first with it): %s", strings.Join(per, " "))
		b.Logf("manager start -> first sync of every cluster done: between %s and %s",
			maxOf(lastMiss).Round(time.Millisecond), maxOf(firstSync).Round(time.Millisecond))
		b.ReportMetric(ms(maxOf(firstSync)), "first-sync-all-ms")
	} else {
		b.Logf("first sync of every cluster: not observed within 90 s (no ClusterRole GET in %d target(s)); writes counted after the fixed settle time", syncs.pending())
	}
	// The intents must still hold, untouched.
	var missing, changed []string
	for i, c := range clients {
		now := csTargetObjects(b, c)
		for k, rv := range held[i] {
			switch cur, ok := now[k]; {
			case !ok:
				missing = append(missing, fmt.Sprintf("target %d: %s", i+1, k))
			case cur != rv:
				changed = append(changed, fmt.Sprintf("target %d: %s (resourceVersion %s -> %s)", i+1, k, rv, cur))
			}
		}
		for k := range now {
			if _, ok := held[i][k]; !ok {
				changed = append(changed, fmt.Sprintf("target %d: %s created", i+1, k))
			}
		}
	}
	slices.Sort(changed)
	for _, c := range changed {
		b.Logf("changed in a target across the restart: %s", c)
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		b.Fatalf("%d object(s) Drover held before the restart are gone after it:\n%s", len(missing), strings.Join(missing, "\n"))
	}
	untilAllowed(b, clients, "restart-user-5@example.com", true, time.Now()) // bound to bench-secret-reader
	notReady := csIntentsNotReady(b, e, n)
	for _, s := range notReady {
		b.Logf("intent not Ready/synced everywhere after the restart: %s", s)
	}

	b.ReportMetric(targetOurs, "target-writes-after-restart")
	b.ReportMetric(hubOurs, "hub-writes-after-restart")
	b.ReportMetric(hubRestart["managedclusters"], "hub-mc-writes-after-restart")
	b.ReportMetric(hubShutdownOurs, "hub-writes-at-shutdown")
	b.ReportMetric(float64(len(changed)), "target-objects-changed")
	b.ReportMetric(float64(len(notReady)), "intents-not-ready-after")
}

// csRestartIntents are BenchmarkRestart's intents besides the bench RoleTemplate: 5
// RoleTemplates (one inheriting two others, one for projects), 40 cluster-scoped
// AccessBindings on every cluster (every fourth refers to a built-in ClusterRole, the
// others to a RoleTemplate), 2 ClusterProjects and one project-scoped binding each.
func csRestartIntents() []client.Object {
	rule := func(group, res string, verbs ...string) v1alpha1.PolicyRule {
		return v1alpha1.PolicyRule{APIGroups: []string{group}, Resources: []string{res}, Verbs: verbs}
	}
	rt := func(name string, ctx v1alpha1.RoleTemplateContext, inherits []string, rules ...v1alpha1.PolicyRule) *v1alpha1.RoleTemplate {
		return &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.RoleTemplateSpec{Context: ctx, Rules: rules, Inherits: inherits}}
	}
	clusterTemplates := []string{"bench-secret-reader", "bench-restart-cm-reader", "bench-restart-pod-reader", "bench-restart-deploy-admin", "bench-restart-ops"}
	objs := []client.Object{
		rt("bench-restart-cm-reader", v1alpha1.ContextCluster, nil, rule("", "configmaps", "get", "list", "watch")),
		rt("bench-restart-pod-reader", v1alpha1.ContextCluster, nil, rule("", "pods", "get", "list")),
		rt("bench-restart-deploy-admin", v1alpha1.ContextCluster, nil, rule("apps", "deployments", "*")),
		rt("bench-restart-ops", v1alpha1.ContextCluster, []string{"bench-restart-cm-reader", "bench-restart-pod-reader"}, rule("", "nodes", "get", "list")),
		rt("bench-restart-ns-editor", v1alpha1.ContextProject, nil, rule("", "configmaps", "*"), rule("", "secrets", "*")),
		benchProject("bench-restart-proj-1", 2),
		benchProject("bench-restart-proj-2", 2),
	}
	all := &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}}
	builtin := []string{"view", "edit", "admin"}
	for i := range 40 {
		ref := v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: clusterTemplates[i%len(clusterTemplates)]}
		if i%4 == 0 {
			ref = v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: builtin[(i/4)%len(builtin)]}
		}
		subjects := []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: fmt.Sprintf("restart-user-%d@example.com", i)}}
		if i%3 == 0 {
			subjects = append(subjects, v1alpha1.Subject{Kind: "Group", Name: fmt.Sprintf("restart-group-%d", i)})
		}
		objs = append(objs, &v1alpha1.AccessBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-restart-%02d", i)},
			Spec:       v1alpha1.AccessBindingSpec{Subjects: subjects, RoleRef: ref, Clusters: all},
		})
	}
	for i := range 2 {
		objs = append(objs, &v1alpha1.AccessBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-restart-team-%d", i+1)},
			Spec: v1alpha1.AccessBindingSpec{
				Subjects: []v1alpha1.Subject{{Kind: "Group", Name: fmt.Sprintf("restart-team-%d", i+1)}},
				RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "bench-restart-ns-editor"},
				Project:  fmt.Sprintf("bench-restart-proj-%d", i+1),
			},
		})
	}
	return objs
}

// csWaitIntents waits until every AccessBinding, RoleTemplate and ClusterProject is
// Ready, observed and (bindings, projects) synced on all n clusters.
func csWaitIntents(b *testing.B, e *env, n int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pending := csIntentsNotReady(b, e, n)
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d intent(s) not Ready within %s:\n%s", len(pending), timeout, strings.Join(pending, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// csIntentsNotReady describes every intent on the hub that is not Ready, not observed,
// or (bindings, projects) not synced on all n clusters.
func csIntentsNotReady(b *testing.B, e *env, n int) []string {
	b.Helper()
	ctx := context.Background()
	want := fmt.Sprintf("%d/%d", n, n)
	var out []string
	check := func(kind string, o client.Object, conds []metav1.Condition, observed int64, synced string) {
		c := meta.FindStatusCondition(conds, v1alpha1.ReadyCondition)
		if c != nil && c.Status == metav1.ConditionTrue && observed == o.GetGeneration() && (synced == "" || synced == want) {
			return
		}
		s := fmt.Sprintf("%s %s: synced %q, observedGeneration %d/%d", kind, o.GetName(), synced, observed, o.GetGeneration())
		if c != nil {
			s += fmt.Sprintf(", Ready=%s/%s (%s)", c.Status, c.Reason, c.Message)
		}
		out = append(out, s)
	}
	var abs v1alpha1.AccessBindingList
	var rts v1alpha1.RoleTemplateList
	var cps v1alpha1.ClusterProjectList
	for _, l := range []client.ObjectList{&abs, &rts, &cps} {
		if err := e.hubc.List(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
	for i := range abs.Items {
		ab := &abs.Items[i]
		check("AccessBinding", ab, ab.Status.Conditions, ab.Status.ObservedGeneration, ab.Status.Synced)
	}
	for i := range rts.Items {
		rt := &rts.Items[i]
		check("RoleTemplate", rt, rt.Status.Conditions, rt.Status.ObservedGeneration, "")
	}
	for i := range cps.Items {
		cp := &cps.Items[i]
		check("ClusterProject", cp, cp.Status.Conditions, cp.Status.ObservedGeneration, cp.Status.Synced)
	}
	return out
}

// BenchmarkBlackHoledTarget times AccessBinding created -> allowed in each of 9
// healthy targets (20 rounds, like BenchmarkAccessBindingToAllowed, bindings on every
// cluster, one round a second), first with only the 9 registered, then from the moment
// a 10th cluster is registered whose API server is a black hole: a TCP listener that
// accepts connections and never answers (its kubeconfig is a real target's, with only
// the server changed). The second phase starts with the registration and lasts about
// 20 s, so it spans the manager's first attempt to reach the black hole and the
// probes that follow. It also times how long the
// black-holed cluster takes to show Connected=False and Ready=False.
func BenchmarkBlackHoledTarget(b *testing.B) {
	const healthy, rounds = 9, 20
	const name = "bench-blackhole"
	csSetup(b, healthy)
	e, clients := rbacFleet(b, healthy)
	hole := csBlackHole(b)

	without, _ := csGrantRounds(b, e, clients, "bh-without", rounds, time.Time{})

	kc := csWithServer(b, e.targets[0].Kubeconfig(), "https://"+hole.addr())
	w := e.watchClusters(b, name)
	registered := time.Now()
	e.registerKubeconfig(b, name, kc)
	with, offsets := csGrantRounds(b, e, clients, "bh-with", rounds, registered)

	first := csFirstEvents(b, w, time.Minute, map[string]func(*v1alpha1.ManagedCluster) bool{
		"Connected=False": connectedFalse,
		"Ready=False":     condIs(v1alpha1.ReadyCondition, metav1.ConditionFalse),
	})
	var mc v1alpha1.ManagedCluster
	if err := e.hubc.Get(context.Background(), client.ObjectKey{Name: name}, &mc); err != nil {
		b.Fatal(err)
	}
	toDisconnected := first["Connected=False"].at.Sub(registered)
	toNotReady := first["Ready=False"].at.Sub(registered)

	var lines []string
	for i := range with {
		lines = append(lines, fmt.Sprintf("%s@%s", with[i].Round(time.Millisecond), offsets[i].Round(100*time.Millisecond)))
	}
	b.Logf("without the black hole, per round: %s", strings.Join(roundAll(without), " "))
	b.Logf("with the black hole, per round (latency@start after registering it): %s", strings.Join(lines, " "))
	b.Logf("created -> allowed in all %d healthy targets, %d rounds: p50 %s, p99 %s, max %s without; p50 %s, p99 %s, max %s with one black-holed target",
		healthy, rounds,
		percentile(without, 0.5).Round(time.Millisecond), percentile(without, 0.99).Round(time.Millisecond), maxOf(without).Round(time.Millisecond),
		percentile(with, 0.5).Round(time.Millisecond), percentile(with, 0.99).Round(time.Millisecond), maxOf(with).Round(time.Millisecond))
	b.Logf("p99 to the %d healthy targets: %s without, %s with one black-holed target",
		healthy, percentile(without, 0.99).Round(time.Millisecond), percentile(with, 0.99).Round(time.Millisecond))
	b.Logf("black-holed cluster: Connected=False %s and Ready=False %s after registering it; now %s; the black hole accepted %d connection(s)",
		toDisconnected.Round(time.Millisecond), toNotReady.Round(time.Millisecond), describe(&mc), hole.accepted())
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"max", 1}} {
		b.ReportMetric(ms(percentile(without, q.q)), "without-"+q.name+"-ms")
		b.ReportMetric(ms(percentile(with, q.q)), "with-blackhole-"+q.name+"-ms")
	}
	b.ReportMetric(ms(toDisconnected), "blackhole-disconnected-ms")
	b.ReportMetric(ms(toNotReady), "blackhole-notready-ms")
}

// csRoundPace is the least time between the starts of two rounds of csGrantRounds.
const csRoundPace = time.Second

// csGrantRounds creates, one at a time (at most one a second), AccessBindings on every cluster (selector {})
// and times each until every given target allows its user, then deletes it and waits
// until they all deny again. It returns the latency of each round (its slowest target)
// and when each round started after since.
func csGrantRounds(b *testing.B, e *env, clients []client.Client, prefix string, rounds int, since time.Time) (lat, offsets []time.Duration) {
	b.Helper()
	ctx := context.Background()
	var last time.Time
	for i := range rounds {
		// One round a second at most, so that the rounds with a black hole span
		// several of its probes (they back off from 2 s to 10 s).
		time.Sleep(time.Until(last.Add(csRoundPace)))
		last = time.Now()
		user := fmt.Sprintf("%s-%d@example.com", prefix, i)
		ab := &v1alpha1.AccessBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%s-%d", prefix, i)},
			Spec: v1alpha1.AccessBindingSpec{
				Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: user}},
				RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "bench-secret-reader"},
				Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}},
			},
		}
		start := time.Now()
		if err := e.hubc.Create(ctx, ab); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, maxOf(untilAllowed(b, clients, user, true, start)))
		offsets = append(offsets, start.Sub(since))
		if err := e.hubc.Delete(ctx, ab); err != nil {
			b.Fatal(err)
		}
		untilAllowed(b, clients, user, false, time.Now())
	}
	return lat, offsets
}

// BenchmarkDeadAgentWrites registers 4 clusters, runs an agent for each (in this
// process, with the admin credentials, as BenchmarkManagerMemory does), then stops
// three of them. Once the hub shows AgentReady=False (LeaseExpired) for those three
// (the default --agent-heartbeat-timeout is 20 s) and status has settled for 5 s, it
// counts the writes the hub and the targets see over 60 s, and names every
// ManagedCluster write. The fourth agent keeps running, so the window holds both a
// dead agent and a live one.
func BenchmarkDeadAgentWrites(b *testing.B) {
	const n, dead = 4, 3
	const idle = 60 * time.Second
	e := csSetup(b, n)
	m := e.startManager(b)
	e.cleanupClusters(b)
	var names []string
	for i := range n {
		name := fmt.Sprintf("bench-deadagent-%d", i+1)
		e.register(b, name, e.targets[i])
		names = append(names, name)
	}
	e.waitClusters(b, names, 2*time.Minute, "Ready", readyTrue)

	stops := make([]func(), n)
	for i, name := range names {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		target := e.targets[i]
		go func() {
			defer close(done)
			_ = agent.Run(ctx, target.Config, agent.Options{
				ClusterName: name, Namespace: controllers.AgentNamespace, LeaseName: controllers.AgentName,
				RenewInterval: agent.DefaultRenewInterval, LeaseDuration: agent.DefaultLeaseDuration, Version: "bench",
			})
		}()
		stops[i] = sync.OnceFunc(func() { cancel(); <-done })
		b.Cleanup(stops[i])
	}
	e.waitClusters(b, names, 2*time.Minute, "AgentReady", agentReadyTrue)
	e.waitClusters(b, names, time.Minute, "Synced", syncedTrue)

	w := e.watchClusters(b, "")
	time.Sleep(time.Second)
	prev := map[string]*v1alpha1.ManagedCluster{}
	for _, ev := range w.drain() { // the initial ADDED events, and anything since
		prev[ev.mc.Name] = ev.mc
	}
	stopped := time.Now()
	for i := range dead {
		stops[i]()
	}

	// Until AgentReady=False (LeaseExpired) for every dead agent.
	expiredAt := map[string]time.Time{}
	var expiryWrites []string
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for len(expiredAt) < dead {
		select {
		case ev := <-w.ch:
			w.note(ev)
			if ev.typ == watch.Modified {
				expiryWrites = append(expiryWrites, fmt.Sprintf("+%s %s: %s", ev.at.Sub(stopped).Round(time.Millisecond), ev.mc.Name, csMCDiff(prev[ev.mc.Name], ev.mc)))
			}
			prev[ev.mc.Name] = ev.mc
			c := conditions.Get(ev.mc, v1alpha1.AgentReadyCondition)
			if slices.Index(names, ev.mc.Name) < dead && c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonLeaseExpired {
				if _, ok := expiredAt[ev.mc.Name]; !ok {
					expiredAt[ev.mc.Name] = ev.at
				}
			}
		case <-deadline.C:
			var s []string
			for _, mc := range prev {
				s = append(s, describe(mc))
			}
			b.Fatalf("AgentReady=False (LeaseExpired) for %d of %d stopped agents within a minute:\n%s", len(expiredAt), dead, strings.Join(s, "\n"))
		}
	}
	var toExpired []time.Duration
	for _, name := range names[:dead] {
		toExpired = append(toExpired, expiredAt[name].Sub(stopped))
	}
	time.Sleep(5 * time.Second) // let status settle
	for _, ev := range w.drain() {
		if ev.typ == watch.Modified {
			expiryWrites = append(expiryWrites, fmt.Sprintf("+%s %s: %s", ev.at.Sub(stopped).Round(time.Millisecond), ev.mc.Name, csMCDiff(prev[ev.mc.Name], ev.mc)))
		}
		prev[ev.mc.Name] = ev.mc
	}
	for _, l := range expiryWrites {
		b.Logf("ManagedCluster written from the agents' stop to the window: %s", l)
	}

	hubBefore := writes(b, e.hub)
	targetsBefore := make([]map[string]float64, n)
	for i, t := range e.targets[:n] {
		targetsBefore[i] = writes(b, t)
	}
	before := m.scrape(b)
	windowStart := time.Now()
	time.Sleep(idle)
	after := m.scrape(b)
	hubAfter := writes(b, e.hub)
	targetTotal := map[string]float64{}
	for i, t := range e.targets[:n] {
		for k, v := range csDelta(targetsBefore[i], writes(b, t)) {
			targetTotal[k] += v
		}
	}
	updates := map[string]int{}
	for _, ev := range w.drain() {
		if ev.typ == watch.Modified {
			updates[ev.mc.Name]++
			b.Logf("ManagedCluster written in the idle window, +%s: %s: %s", ev.at.Sub(windowStart).Round(time.Millisecond), ev.mc.Name, csMCDiff(prev[ev.mc.Name], ev.mc))
		}
		prev[ev.mc.Name] = ev.mc
	}
	for _, name := range names {
		b.Logf("now: %s", describe(prev[name]))
	}

	hub := csDelta(hubBefore, hubAfter)
	hubOurs, hubOther := csSplit(hub, csHubResources)
	targetOurs, targetOther := csSplit(targetTotal, csTargetResources)
	hubHost := `host="` + hostOf(e.hub) + `"`
	var mgrHubWrites, mgrTargetWrites float64
	for _, verb := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		mgrHubWrites += delta(before, after, "rest_client_requests_total", hubHost, `method="`+verb+`"`)
		for _, t := range e.targets[:n] {
			mgrTargetWrites += delta(before, after, "rest_client_requests_total", `host="`+hostOf(t)+`"`, `method="`+verb+`"`)
		}
	}
	reconciles := delta(before, after, "controller_runtime_reconcile_total", `controller="managedcluster"`)
	syncs := delta(before, after, "controller_runtime_reconcile_total", `controller="clustersync"`)

	var deadUpdates, liveUpdates int
	for i, name := range names {
		if i < dead {
			deadUpdates += updates[name]
		} else {
			liveUpdates += updates[name]
		}
	}
	b.Logf("stopped agents -> AgentReady=False (LeaseExpired) on the hub: %s (heartbeat timeout 20s)", strings.Join(roundAll(toExpired), " "))
	b.Logf("idle %s with %d dead and %d live agent(s): hub writes to Drover's resources %g (%s; API server's own: %g); ManagedCluster updates seen: %d for dead-agent clusters, %d for the live one",
		idle, dead, n-dead, hubOurs, csFormat(csOnly(hub, csHubResources)), hubOther, deadUpdates, liveUpdates)
	b.Logf("idle %s: target writes to Drover's resources %g (%s); other target writes %g (%s: the live agent's Lease renewals and the API servers' own)",
		idle, targetOurs, csFormat(csOnly(targetTotal, csTargetResources)), targetOther, csFormat(csExcept(targetTotal, csTargetResources)))
	b.Logf("manager over the window: %g write requests to the hub, %g to the targets; %g ManagedCluster reconciles, %g cluster syncs",
		mgrHubWrites, mgrTargetWrites, reconciles, syncs)
	b.ReportMetric(ms(maxOf(toExpired)), "lease-expired-detected-ms")
	b.ReportMetric(hub["managedclusters"], "hub-mc-writes/60s")
	b.ReportMetric(hubOurs, "hub-writes/60s")
	b.ReportMetric(targetOurs, "target-writes/60s")
	b.ReportMetric(reconciles, "mc-reconciles/60s")
}

// csSetup is setup, growing the fleet four targets at a time: starting eleven
// control planes at once on two busy cores can exceed envtest's start timeout.
func csSetup(b *testing.B, n int) *env {
	b.Helper()
	for k := 4; k < n; k += 4 {
		setup(b, k)
	}
	return setup(b, n)
}

// csFleet is rbacFleet with its own cluster names and the fleet grown four
// targets at a time, returning the manager too.
func csFleet(b *testing.B, n int, prefix string) (*env, *managerProc, []string, []client.Client) {
	b.Helper()
	return fleet(b, csSetup(b, n), n, prefix)
}

// csWithServer returns kubeconfig with every cluster's server replaced.
func csWithServer(b *testing.B, kubeconfig []byte, server string) []byte {
	b.Helper()
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// csHole is a black hole: it accepts TCP connections and never answers.
type csHole struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     int
}

// csBlackHole starts a black hole on 127.0.0.1, closed with every connection when the
// benchmark ends.
func csBlackHole(b *testing.B) *csHole {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	h := &csHole{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.n++
			h.mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		_ = ln.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			_ = c.Close()
		}
		h.conns = nil
	})
	return h
}

func (h *csHole) addr() string { return h.ln.Addr().String() }

func (h *csHole) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// csFirstEvents reads w until, for each named predicate, an event satisfies it, and
// returns the first such event per name.
func csFirstEvents(b *testing.B, w *clusterWatch, timeout time.Duration, preds map[string]func(*v1alpha1.ManagedCluster) bool) map[string]stamped {
	b.Helper()
	out := map[string]stamped{}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(out) < len(preds) {
		select {
		case ev := <-w.ch:
			w.note(ev)
			if ev.typ == watch.Deleted {
				continue
			}
			for name, pred := range preds {
				if _, ok := out[name]; !ok && pred(ev.mc) {
					out[name] = ev
				}
			}
		case <-timer.C:
			last := "nothing"
			if w.last != nil {
				last = describe(w.last.mc)
			}
			b.Fatalf("only %d of %d conditions seen within %s; last seen: %s", len(out), len(preds), timeout, last)
		}
	}
	return out
}

// csTargetKinds are the kinds Drover writes into a target.
var csTargetKinds = []struct {
	kind string
	list func() client.ObjectList
}{
	{"ClusterRole", func() client.ObjectList { return &rbacv1.ClusterRoleList{} }},
	{"ClusterRoleBinding", func() client.ObjectList { return &rbacv1.ClusterRoleBindingList{} }},
	{"Role", func() client.ObjectList { return &rbacv1.RoleList{} }},
	{"RoleBinding", func() client.ObjectList { return &rbacv1.RoleBindingList{} }},
	{"Namespace", func() client.ObjectList { return &corev1.NamespaceList{} }},
	{"ResourceQuota", func() client.ObjectList { return &corev1.ResourceQuotaList{} }},
	{"LimitRange", func() client.ObjectList { return &corev1.LimitRangeList{} }},
	{"NetworkPolicy", func() client.ObjectList { return &networkingv1.NetworkPolicyList{} }},
	{"ServiceAccount", func() client.ObjectList { return &corev1.ServiceAccountList{} }},
	{"Deployment", func() client.ObjectList { return &appsv1.DeploymentList{} }},
}

// csTargetObjects lists what Drover holds in a target: "Kind ns/name" -> resourceVersion.
func csTargetObjects(b *testing.B, c client.Client) map[string]string {
	b.Helper()
	out := map[string]string{}
	for _, k := range csTargetKinds {
		l := k.list()
		if err := c.List(context.Background(), l, client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}); err != nil {
			b.Fatal(err)
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			b.Fatal(err)
		}
		for _, it := range items {
			o := it.(client.Object)
			out[fmt.Sprintf("%s %s/%s", k.kind, o.GetNamespace(), o.GetName())] = o.GetResourceVersion()
		}
	}
	return out
}

// csKindCounts summarises csTargetObjects by kind.
func csKindCounts(objs map[string]string) string {
	counts := map[string]float64{}
	for k := range objs {
		kind, _, _ := strings.Cut(k, " ")
		counts[kind]++
	}
	return csFormat(counts)
}

// csFirstSyncs follows, per target, the first GET of a ClusterRole after it started.
// The targets are polled one after the other (reading an API server's metrics costs
// tens of milliseconds of CPU, and the machine may have two cores), so each first GET
// is known to lie between the last poll that did not see it and the first that did.
type csFirstSyncs struct {
	start time.Time
	done  chan struct{}
	mu    sync.Mutex
	// miss and hit are, per target, the last poll without a GET and the first
	// with one, after start.
	miss, hit []time.Duration
	seen      []bool
}

// csWatchFirstSyncs polls each of the first n targets' request metrics in turn, every
// 100 ms at most, for a GET of a ClusterRole, from now on.
func csWatchFirstSyncs(b *testing.B, e *env, n int) *csFirstSyncs {
	b.Helper()
	css := make([]*kubernetes.Clientset, n)
	base := make([]float64, n)
	for i, t := range e.targets[:n] {
		cs, err := kubernetes.NewForConfig(t.Config)
		if err != nil {
			b.Fatal(err)
		}
		css[i] = cs
		if base[i], err = csRequests(cs, "GET", "clusterroles"); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	s := &csFirstSyncs{start: time.Now(), done: make(chan struct{}),
		miss: make([]time.Duration, n), hit: make([]time.Duration, n), seen: make([]bool, n)}
	b.Cleanup(cancel)
	go func() {
		defer close(s.done)
		for ctx.Err() == nil {
			left := 0
			for i, cs := range css {
				s.mu.Lock()
				seen := s.seen[i]
				s.mu.Unlock()
				if seen {
					continue
				}
				v, err := csRequests(cs, "GET", "clusterroles")
				now := time.Since(s.start)
				s.mu.Lock()
				if err == nil && v > base[i] {
					s.seen[i], s.hit[i] = true, now
				} else {
					s.miss[i] = now
					left++
				}
				s.mu.Unlock()
			}
			if left == 0 {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return s
}

// wait returns, per target, when its first ClusterRole GET was seen and the last poll
// before that, or ok false if not every target had one within timeout.
func (s *csFirstSyncs) wait(timeout time.Duration) (hit, miss []time.Duration, ok bool) {
	select {
	case <-s.done:
	case <-time.After(timeout):
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hit), slices.Clone(s.miss), !slices.Contains(s.seen, false)
}

func (s *csFirstSyncs) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ok := range s.seen {
		if !ok {
			n++
		}
	}
	return n
}

// csRequests reads apiserver_request_total from an API server and sums the requests
// with the given verb and resource.
func csRequests(cs *kubernetes.Clientset, verb, resource string) (float64, error) {
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return 0, err
	}
	var total float64
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "apiserver_request_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, `verb="`+verb+`"`) || !strings.Contains(labels, `resource="`+resource+`"`) {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err == nil {
			total += f
		}
	}
	return total, sc.Err()
}

// Drover's resources on the hub and in the targets; other writes are the API
// servers' own housekeeping (their identity Leases, for one) or an agent's Lease.
var (
	csHubResources = map[string]bool{"managedclusters": true, "accessbindings": true, "roletemplates": true,
		"clusterprojects": true, "events": true, "configmaps": true, "secrets": true, "namespaces": true}
	csTargetResources = map[string]bool{"clusterroles": true, "clusterrolebindings": true, "roles": true,
		"rolebindings": true, "namespaces": true, "resourcequotas": true, "limitranges": true, "networkpolicies": true,
		"serviceaccounts": true, "deployments": true, "events": true, "secrets": true, "configmaps": true}
)

func csDelta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// csSplit sums the writes to the given resources and to the others.
func csSplit(d map[string]float64, ours map[string]bool) (in, out float64) {
	for k, v := range d {
		if ours[k] {
			in += v
		} else {
			out += v
		}
	}
	return in, out
}

// csOnly keeps the given resources, with 0 for those not written.
func csOnly(d map[string]float64, ours map[string]bool) map[string]float64 {
	out := map[string]float64{}
	for k := range ours {
		out[k] = d[k]
	}
	return out
}

func csExcept(d map[string]float64, ours map[string]bool) map[string]float64 {
	out := map[string]float64{}
	for k, v := range d {
		if !ours[k] {
			out[k] = v
		}
	}
	return out
}

func csFormat(d map[string]float64) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%g", k, d[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func csLater(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// csHubWatch watches Drover's kinds and the Events on the hub from a List's
// resourceVersion on, and describes every change, labelled with the phase it fell in.
type csHubWatch struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	mu         sync.Mutex
	phase      string
	phaseStart time.Time
	lines      []string
	counts     map[string]int // "phase kind" -> changes
}

func csWatchHub(b *testing.B, e *env) *csHubWatch {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hw := &csHubWatch{cancel: cancel, phase: "before", phaseStart: time.Now(), counts: map[string]int{}}
	b.Cleanup(hw.stop)
	for _, k := range []struct {
		kind string
		list func() client.ObjectList
	}{
		{"ManagedCluster", func() client.ObjectList { return &v1alpha1.ManagedClusterList{} }},
		{"AccessBinding", func() client.ObjectList { return &v1alpha1.AccessBindingList{} }},
		{"RoleTemplate", func() client.ObjectList { return &v1alpha1.RoleTemplateList{} }},
		{"ClusterProject", func() client.ObjectList { return &v1alpha1.ClusterProjectList{} }},
		{"Event", func() client.ObjectList { return &corev1.EventList{} }},
		{"ConfigMap", func() client.ObjectList { return &corev1.ConfigMapList{} }},
	} {
		l := k.list()
		if err := e.hubc.List(ctx, l); err != nil {
			b.Fatal(err)
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			b.Fatal(err)
		}
		seen := map[string]client.Object{}
		for _, it := range items {
			o := it.(client.Object)
			seen[o.GetNamespace()+"/"+o.GetName()] = o
		}
		wi, err := e.hubc.Watch(ctx, k.list(), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: l.GetResourceVersion()}})
		if err != nil {
			b.Fatal(err)
		}
		hw.wg.Add(1)
		go func() {
			defer hw.wg.Done()
			defer wi.Stop()
			for ev := range wi.ResultChan() {
				o, ok := ev.Object.(client.Object)
				if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified && ev.Type != watch.Deleted) {
					continue
				}
				key := o.GetNamespace() + "/" + o.GetName()
				hw.record(k.kind, ev.Type, seen[key], o)
				if ev.Type == watch.Deleted {
					delete(seen, key)
				} else {
					seen[key] = o
				}
			}
		}()
	}
	return hw
}

func (hw *csHubWatch) setPhase(p string) {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	hw.phase, hw.phaseStart = p, time.Now()
}

func (hw *csHubWatch) stop() {
	hw.cancel()
	hw.wg.Wait()
}

func (hw *csHubWatch) record(kind string, typ watch.EventType, old, cur client.Object) {
	var what string
	switch {
	case kind == "Event":
		ev, _ := cur.(*corev1.Event)
		if ev == nil {
			return
		}
		from := ev.ReportingController
		if from == "" {
			from = ev.Source.Component
		}
		what = fmt.Sprintf("%s %s: %s %s on %s %s: %q (count %d, from %s)", strings.ToLower(string(typ)), ev.Name, ev.Type, ev.Reason,
			ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Message, ev.Count, from)
	case typ != watch.Modified:
		what = fmt.Sprintf("%s %s", strings.ToLower(string(typ)), cur.GetName())
	default:
		what = cur.GetName() + ": " + csObjDiff(old, cur)
	}
	hw.mu.Lock()
	defer hw.mu.Unlock()
	hw.counts[hw.phase+" "+kind]++
	hw.lines = append(hw.lines, fmt.Sprintf("%s +%s: %s %s", hw.phase, time.Since(hw.phaseStart).Round(time.Millisecond), kind, what))
}

// log writes every change seen, and the count per phase and kind.
func (hw *csHubWatch) log(b *testing.B) {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	for _, l := range hw.lines {
		b.Logf("hub object written: %s", l)
	}
	keys := make([]string, 0, len(hw.counts))
	for k := range hw.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, hw.counts[k]))
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	b.Logf("hub objects changed, by phase and kind (from a watch): %s", strings.Join(parts, ", "))
}

// csMCDiff is csObjDiff for two versions of a ManagedCluster, the first possibly nil.
func csMCDiff(old, cur *v1alpha1.ManagedCluster) string {
	if old == nil {
		return "(no previous version seen)"
	}
	return csObjDiff(old, cur)
}

// csObjDiff names the fields of metadata (labels, annotations, finalizers,
// generation, deletion), spec and status that differ between two versions of an
// object, with their old and new values. It is statusDiff for any kind, with each
// condition compared on its own and shown as status/reason "message" since time.
func csObjDiff(old, cur client.Object) string {
	if old == nil {
		return "(no previous version seen)"
	}
	flat := func(o client.Object) map[string]any {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return map[string]any{"error": err.Error()}
		}
		out := map[string]any{}
		md, _ := u["metadata"].(map[string]any)
		for _, k := range []string{"labels", "annotations", "finalizers", "generation", "deletionTimestamp"} {
			if v, ok := md[k]; ok {
				out["metadata."+k] = v
			}
		}
		for k, v := range u {
			if k != "metadata" && k != "status" && k != "apiVersion" && k != "kind" {
				out[k] = v
			}
		}
		st, _ := u["status"].(map[string]any)
		for k, v := range st {
			if k != "conditions" {
				out["status."+k] = v
				continue
			}
			conds, _ := v.([]any)
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				out[fmt.Sprintf("status.conditions[%v]", cm["type"])] = fmt.Sprintf("%v/%v %q since %v",
					cm["status"], cm["reason"], cm["message"], cm["lastTransitionTime"])
			}
		}
		return out
	}
	a, c := flat(old), flat(cur)
	var out []string
	for k, v := range c {
		if !reflect.DeepEqual(a[k], v) {
			nv, _ := json.Marshal(v)
			ov, _ := json.Marshal(a[k])
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, ov, nv))
		}
	}
	for k := range a {
		if _, ok := c[k]; !ok {
			out = append(out, k+" removed")
		}
	}
	if len(out) == 0 {
		return "nothing in metadata, spec or status changed (resourceVersion " + old.GetResourceVersion() + " -> " + cur.GetResourceVersion() + ")"
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}
