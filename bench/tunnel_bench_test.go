package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/cluster-api/util/conditions"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/hubserver"
	"github.com/drover-io/drover/render"
)

// The tunnel benchmarks: clusters registered "behind NAT" (spec.registration), whose
// agent dials the hub and carries every request the hub makes to the target. Each
// benchmark runs its own manager process with the default settings plus the hub server
// on a free port (--hub-bind-address, --hub-url=https://127.0.0.1:<port>). A cluster is
// registered as a user does it: create the ManagedCluster, fetch
// status.registration.manifestURL with the hub's CA (ConfigMap drover-hub-ca), create
// every object of the manifest in the target, then run `drover agent --kubeconfig
// <target>` outside the target (no kubelet runs the Deployment): in this process
// through agent.Main, or as a child process re-executing this test binary with
// roleEnv=agent. Times come from watches on the hub, stamped as events arrive. Each
// benchmark ignores b.N and reports fixed rounds.
//
// Helpers here are prefixed tn.

// tnAgentRole is roleEnv's value for a child process that runs `drover agent`.
const tnAgentRole = "agent"

func init() {
	// TestMain (suite_test.go) dispatches the manager role; the agent role is
	// dispatched here, before the testing package starts.
	if os.Getenv(roleEnv) == tnAgentRole {
		os.Exit(tnAgentMain())
	}
}

// tnAgentMain runs `drover agent` in a child process.
func tnAgentMain() int {
	if err := agent.Main(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "drover agent:", err)
		return 1
	}
	return 0
}

var (
	connectedTunnelDown = func(mc *v1alpha1.ManagedCluster) bool {
		c := conditions.Get(mc, v1alpha1.ConnectedCondition)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonTunnelDisconnected
	}
	hasManifestURL = func(mc *v1alpha1.ManagedCluster) bool {
		return mc.Status.Registration != nil && mc.Status.Registration.ManifestURL != ""
	}
	readyAgain = both(connectedTrue, readyTrue)
)

// BenchmarkTunnelRegisterToReady registers five targets through spec.registration, one
// at a time, and times, for each, the span from the agent's start (agent.Main in this
// process, with the target's admin kubeconfig, after the manifest was applied) to the
// hub showing Connected=True and then Ready=True. The agent exchanges its bootstrap
// token for a credential, opens the tunnel, and the hub then probes, identifies,
// caches and syncs the target through it. It also reports the span from creating the
// ManagedCluster to its manifest URL appearing, and to the manifest being applied.
func BenchmarkTunnelRegisterToReady(b *testing.B) {
	const n = 5
	e := setup(b, n)
	f := e.tnFleet(b)

	var toURL, toApplied, toConnected, toReady []time.Duration
	for i := range n {
		name := fmt.Sprintf("bench-tunnel-reg-%d", i+1)
		w := e.watchClusters(b, name)
		t, reg := f.register(b, w, name, e.targets[i])
		start := time.Now()
		f.runAgent(t)
		conn := w.until(b, time.Minute, "Connected=True", connectedTrue)
		ready := w.until(b, time.Minute, "Ready=True", readyTrue)
		w.stop()
		toURL = append(toURL, reg.url)
		toApplied = append(toApplied, reg.applied)
		toConnected = append(toConnected, conn.at.Sub(start))
		toReady = append(toReady, ready.at.Sub(start))
		b.Logf("%s: manifest URL %s after create, manifest applied %s after create; agent start -> Connected %s, -> Ready %s (%s, clusterID %s)",
			name, reg.url.Round(time.Millisecond), reg.applied.Round(time.Millisecond),
			conn.at.Sub(start).Round(time.Millisecond), ready.at.Sub(start).Round(time.Millisecond),
			ready.mc.Status.KubernetesVersion, ready.mc.Status.ClusterID)
	}
	b.Logf("create -> manifest URL:     %s", strings.Join(roundAll(toURL), " "))
	b.Logf("create -> manifest applied: %s", strings.Join(roundAll(toApplied), " "))
	b.Logf("agent start -> Connected:   %s", strings.Join(roundAll(toConnected), " "))
	b.Logf("agent start -> Ready:       %s", strings.Join(roundAll(toReady), " "))
	b.Logf("agent start -> Ready over %d targets: p50 %s, max %s (target <= 2s)", n,
		percentile(toReady, 0.5).Round(time.Millisecond), percentile(toReady, 1).Round(time.Millisecond))
	reportLatency(b, "manifest-url", toURL)
	reportLatency(b, "connected", toConnected)
	reportLatency(b, "ready", toReady)
}

// BenchmarkTunnelAccessBinding registers ten targets through spec.registration, each
// with its agent running in this process, and once all are Ready creates, 20 times,
// an AccessBinding granting ClusterRole view to a fresh user on all ten (by name). It
// times, per target, the span from the create to that target's own authorizer
// allowing the user to list pods (a SubjectAccessReview through a direct admin
// client of the target, not through the tunnel), polled every 10ms; then it deletes
// the binding and waits until every target denies again. p50 and p99 are over all
// (round, target) samples.
//
// The shared targets run no kube-controller-manager, so ClusterRole view has no
// rules of its own; the benchmark fills them in once from the aggregated roles, as
// its clusterrole-aggregation controller would, and empties them again at the end.
func BenchmarkTunnelAccessBinding(b *testing.B) {
	const n, rounds = 10, 20
	e := csSetup(b, n)
	f := e.tnFleet(b)
	ctx := context.Background()

	began := time.Now()
	var names []string
	var ts []*tnTarget
	for i := range n {
		name := fmt.Sprintf("bench-tunnel-ab-%d", i+1)
		w := e.watchClusters(b, name)
		t, _ := f.register(b, w, name, e.targets[i])
		w.stop()
		names = append(names, name)
		ts = append(ts, t)
	}
	registered := time.Now()
	for _, t := range ts {
		f.runAgent(t)
	}
	e.waitClusters(b, names, 2*time.Minute, "Ready", readyTrue)
	b.Logf("%d targets registered (manifests applied) in %s; all Ready %s after their agents started",
		n, registered.Sub(began).Round(time.Millisecond), time.Since(registered).Round(time.Millisecond))
	clients := make([]client.Client, len(ts))
	for i, t := range ts {
		clients[i] = t.c
		tnAggregateView(b, t)
	}

	var all, perRound []time.Duration
	slowest := make([]time.Duration, n)
	for i := range rounds {
		user := fmt.Sprintf("tunnel-viewer-%d@example.com", i)
		ab := &v1alpha1.AccessBinding{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-tunnel-view-%d", i)},
			Spec: v1alpha1.AccessBindingSpec{
				Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: user}},
				RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
				Clusters: &v1alpha1.ClusterSelection{Names: names},
			},
		}
		b.Cleanup(func() { _ = client.IgnoreNotFound(e.hubc.Delete(context.Background(), ab)) })
		start := time.Now()
		if err := e.hubc.Create(ctx, ab); err != nil {
			b.Fatal(err)
		}
		lat := untilAllowedTo(b, clients, user, "list", "pods", true, start)
		all = append(all, lat...)
		perRound = append(perRound, maxOf(lat))
		for j, d := range lat {
			slowest[j] = max(slowest[j], d)
		}
		b.Logf("round %2d: allowed after %s", i+1, strings.Join(roundAll(lat), " "))
		if err := e.hubc.Delete(ctx, ab); err != nil {
			b.Fatal(err)
		}
		untilAllowedTo(b, clients, user, "list", "pods", false, time.Now())
	}
	b.Logf("slowest per target over %d rounds: %s", rounds, strings.Join(roundAll(slowest), " "))
	b.Logf("created -> allowed, %d targets x %d rounds = %d samples: p50 %s, p99 %s, max %s (target p99 <= 1s); slowest target per round: p50 %s, max %s",
		n, rounds, len(all), percentile(all, 0.5).Round(time.Millisecond), percentile(all, 0.99).Round(time.Millisecond),
		maxOf(all).Round(time.Millisecond), percentile(perRound, 0.5).Round(time.Millisecond), maxOf(perRound).Round(time.Millisecond))
	b.ReportMetric(ms(percentile(all, 0.5)), "allowed-p50-ms")
	b.ReportMetric(ms(percentile(all, 0.99)), "allowed-p99-ms")
	b.ReportMetric(ms(maxOf(all)), "allowed-max-ms")
	b.ReportMetric(ms(percentile(perRound, 0.5)), "allowed-everywhere-p50-ms")
}

// BenchmarkTunnelDeadDetection registers one target through spec.registration and
// times how long the hub takes to show Connected=False when its tunnel dies, and how
// long it takes to be Ready again once the agent is back, three rounds each way:
//
//   - closed: the agent (agent.Main in this process) stops; its TCP connection to the
//     hub closes. Then a new agent starts.
//   - blackhole: the agent runs in this process but reaches the hub through a TCP
//     proxy here, which then stops forwarding in both directions while keeping every
//     connection open (a silent network partition: no FIN, no RST). Then the proxy
//     forwards again; the agent never noticed anything.
//   - sigstop: the agent runs as a child process, which gets SIGSTOP (the kernel
//     keeps its connection open and acknowledges what the hub sends), then SIGCONT.
//
// Only the hub's health probe (every 2s, 2s timeout, two failures in a row by default)
// can notice the silent cases. Rounds start at different offsets into the probe
// period, and the tunnel stays dead 1s, 3.5s and 6s after Connected=False before it
// comes back. Recovery is timed from the agent's return (new agent, forwarding again,
// SIGCONT) to Ready=True. The agent of the last phase keeps running until the cleanup
// has deleted the ManagedCluster through its tunnel.
func BenchmarkTunnelDeadDetection(b *testing.B) {
	const rounds = 3
	const name = "bench-tunnel-dead"
	e := setup(b, 1)
	f := e.tnFleet(b)
	w := e.watchClusters(b, name)
	t, _ := f.register(b, w, name, e.targets[0])

	var phases []*tnPhase
	// run kills the tunnel and brings it back, rounds times, timing both.
	run := func(ph *tnPhase, kill, revive func()) {
		phases = append(phases, ph)
		for i := range rounds {
			// Spread the moment of failure over the probe period.
			time.Sleep(3*time.Second + time.Duration(i)*700*time.Millisecond)
			killedAt := time.Now()
			kill()
			down, ok := w.tnWithin(time.Minute, connectedFalse)
			if !ok {
				revive()
				b.Fatalf("%s, round %d: not Connected=False within a minute after %s; last seen %s", ph.name, i+1, ph.kill, describe(w.last.mc))
			}
			ph.note(down.mc)
			ph.detect = append(ph.detect, down.at.Sub(killedAt))
			more := ""
			if !connectedTunnelDown(down.mc) {
				if td, ok := w.tnWithin(30*time.Second, connectedTunnelDown); ok {
					more = fmt.Sprintf("; reason TunnelDisconnected only %s after %s", td.at.Sub(killedAt).Round(time.Millisecond), ph.kill)
				} else {
					more = "; reason not TunnelDisconnected within 30s"
				}
			}
			// The tunnel stays dead a little longer each round: a tunnel that never
			// closed sends the hub no event when it works again, so recovery
			// waits for the next probe, which backs off while the cluster is down.
			hold := time.Second + time.Duration(i)*2500*time.Millisecond
			time.Sleep(hold)
			revivedAt := time.Now()
			revive()
			up := w.until(b, time.Minute, "Ready=True again", readyAgain)
			ph.recover = append(ph.recover, up.at.Sub(revivedAt))
			b.Logf("%s, round %d: Connected=False %s after %s (%s: %s)%s; %s %s after that; Ready again %s later",
				ph.name, i+1, down.at.Sub(killedAt).Round(time.Millisecond), ph.kill,
				ph.reasons[len(ph.reasons)-1], ph.messages[len(ph.messages)-1], more,
				ph.revive, revivedAt.Sub(down.at).Round(100*time.Millisecond), up.at.Sub(revivedAt).Round(time.Millisecond))
		}
	}

	// closed: the agent stops and its connection closes; a new agent starts.
	a := f.runAgent(t)
	w.until(b, time.Minute, "Ready=True", readyAgain)
	run(&tnPhase{name: "closed", kill: "the agent was stopped", revive: "a new agent started"},
		func() { a.stop(b) }, func() { a = f.runAgent(t) })
	a.stop(b)
	w.until(b, time.Minute, "Connected=False", connectedFalse)

	// blackhole: the agent's connection goes through a proxy that stops forwarding.
	p := tnStartProxy(b, f.h.addr)
	f.add(p)
	a = f.runAgentVia(b, t, "https://"+p.addr())
	w.until(b, time.Minute, "Ready=True through the proxy", readyAgain)
	run(&tnPhase{name: "blackhole", kill: "the proxy stopped forwarding", revive: "it forwarded again"},
		p.freeze, p.unfreeze)
	b.Logf("blackhole: the agent opened %d connection(s) through the proxy in all", p.accepted())
	a.stop(b)
	w.until(b, time.Minute, "Connected=False", connectedFalse)

	// sigstop: the agent is a child process, stopped and continued.
	c := f.startChildAgent(b, t)
	w.until(b, time.Minute, "Ready=True with the child agent", readyAgain)
	signal := func(sig syscall.Signal) func() {
		return func() {
			if err := c.signal(sig); err != nil {
				b.Fatal(err)
			}
		}
	}
	run(&tnPhase{name: "sigstop", kill: "SIGSTOP", revive: "SIGCONT"}, signal(syscall.SIGSTOP), signal(syscall.SIGCONT))
	// The child agent keeps running: the cleanup deletes the ManagedCluster through
	// its tunnel, then stops it.

	for _, ph := range phases {
		b.Logf("%-9s: Connected=False after %s (p50 %s, max %s; target <= 10s), reasons %s; Ready again after %s (p50 %s, max %s)",
			ph.name, strings.Join(roundAll(ph.detect), " "), percentile(ph.detect, 0.5).Round(time.Millisecond),
			percentile(ph.detect, 1).Round(time.Millisecond), strings.Join(slices.Compact(slices.Sorted(slices.Values(ph.reasons))), ","),
			strings.Join(roundAll(ph.recover), " "), percentile(ph.recover, 0.5).Round(time.Millisecond),
			percentile(ph.recover, 1).Round(time.Millisecond))
		reportLatency(b, ph.name+"-detect", ph.detect)
		reportLatency(b, ph.name+"-recover", ph.recover)
	}
}

// tnPhase holds one way of killing the tunnel, and its figures.
type tnPhase struct {
	name string
	// kill and revive say what was done to the tunnel.
	kill, revive      string
	detect, recover   []time.Duration
	reasons, messages []string
}

// note records the Connected condition that reported the tunnel dead.
func (ph *tnPhase) note(mc *v1alpha1.ManagedCluster) {
	c := conditions.Get(mc, v1alpha1.ConnectedCondition)
	ph.reasons = append(ph.reasons, c.Reason)
	ph.messages = append(ph.messages, c.Message)
}

// tnWithin is clusterWatch.until without failing: it reports whether an event
// satisfying pred arrived within timeout.
func (w *clusterWatch) tnWithin(timeout time.Duration, pred func(*v1alpha1.ManagedCluster) bool) (stamped, bool) {
	if w.last != nil && w.last.typ != watch.Deleted && pred(w.last.mc) {
		return *w.last, true
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev := <-w.ch:
			w.note(ev)
			if ev.typ != watch.Deleted && pred(ev.mc) {
				return ev, true
			}
		case <-timer.C:
			return stamped{}, false
		}
	}
}

// tnAggregateView fills ClusterRole view in a target with the rules of the roles its
// aggregationRule selects, as kube-controller-manager would, unless it has rules
// already; it empties them again when the benchmark ends.
func tnAggregateView(b *testing.B, t *tnTarget) {
	b.Helper()
	ctx := context.Background()
	var view rbacv1.ClusterRole
	if err := t.c.Get(ctx, client.ObjectKey{Name: "view"}, &view); err != nil {
		b.Fatal(err)
	}
	if len(view.Rules) > 0 || view.AggregationRule == nil {
		return
	}
	var rules []rbacv1.PolicyRule
	for _, s := range view.AggregationRule.ClusterRoleSelectors {
		sel, err := metav1.LabelSelectorAsSelector(&s)
		if err != nil {
			b.Fatal(err)
		}
		var roles rbacv1.ClusterRoleList
		if err := t.c.List(ctx, &roles, client.MatchingLabelsSelector{Selector: sel}); err != nil {
			b.Fatal(err)
		}
		for _, r := range roles.Items {
			for _, rule := range r.Rules {
				if !slices.ContainsFunc(rules, func(x rbacv1.PolicyRule) bool { return equalRules(x, rule) }) {
					rules = append(rules, rule)
				}
			}
		}
	}
	view.Rules = rules
	if err := t.c.Update(ctx, &view); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		var cur rbacv1.ClusterRole
		if err := t.c.Get(context.Background(), client.ObjectKey{Name: "view"}, &cur); err != nil {
			b.Error(err)
			return
		}
		cur.Rules = nil
		if err := t.c.Update(context.Background(), &cur); err != nil {
			b.Error(err)
		}
	})
}

func equalRules(a, b rbacv1.PolicyRule) bool {
	return slices.Equal(a.Verbs, b.Verbs) && slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) &&
		slices.Equal(a.ResourceNames, b.ResourceNames) && slices.Equal(a.NonResourceURLs, b.NonResourceURLs)
}

// tnFleet is one tunnel benchmark's manager, with the targets it registered and the
// agents and proxies it runs, all cleaned up when the benchmark ends.
type tnFleet struct {
	e *env
	h *tnHub

	mu      sync.Mutex
	targets []*tnTarget
	stops   []interface{ stop(b *testing.B) }
	agents  int
}

// tnTarget is a target registered through spec.registration.
type tnTarget struct {
	name string
	cp   *controlplane.ControlPlane
	// c is an admin client of the target, straight to its API server.
	c client.Client
	// kubeconfig is the path of the target's admin kubeconfig.
	kubeconfig string
}

// tnFleet starts a manager with the hub server and registers the cleanup: the
// ManagedClusters are deleted while their agents still run (the hub cleans the
// targets up through the tunnels), then the agents stop, and the targets are reset.
func (e *env) tnFleet(b *testing.B) *tnFleet {
	b.Helper()
	f := &tnFleet{e: e, h: e.tnStartManager(b)}
	b.Cleanup(func() { f.cleanup(b) })
	return f
}

func (f *tnFleet) add(s interface{ stop(b *testing.B) }) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops = append(f.stops, s)
}

// tnRegistration is how long a registration's steps took after the create.
type tnRegistration struct {
	url, applied time.Duration
}

// register creates a ManagedCluster with spec.registration, waits (on w) for its
// manifest URL, fetches the manifest with the hub's CA and creates its objects in
// the target, as `kubectl apply -f <manifestURL>` does on a fresh cluster.
func (f *tnFleet) register(b *testing.B, w *clusterWatch, name string, cp *controlplane.ControlPlane) (*tnTarget, tnRegistration) {
	b.Helper()
	ctx := context.Background()
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	t := &tnTarget{name: name, cp: cp, c: c, kubeconfig: filepath.Join(f.e.dir, cp.Name+".kubeconfig")}
	if err := os.WriteFile(t.kubeconfig, cp.Kubeconfig(), 0o600); err != nil {
		b.Fatal(err)
	}
	if left := tnScrub(b, t); left != "" {
		b.Logf("%s: removed what an earlier run left in namespace %s: %s", cp.Name, controllers.AgentNamespace, left)
	}
	f.mu.Lock()
	f.targets = append(f.targets, t)
	f.mu.Unlock()

	mc := &v1alpha1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: "true"}},
		Spec:       v1alpha1.ManagedClusterSpec{Registration: &v1alpha1.RegistrationSource{}},
	}
	created := time.Now()
	if err := f.e.hubc.Create(ctx, mc); err != nil {
		b.Fatal(err)
	}
	ev := w.until(b, time.Minute, "a manifest URL", hasManifestURL)
	var reg tnRegistration
	reg.url = ev.at.Sub(created)
	resp, err := f.h.hc.Get(ev.mc.Status.Registration.ManifestURL)
	if err != nil {
		b.Fatal(err)
	}
	manifest, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: GET manifest: %s: %s", name, resp.Status, manifest)
	}
	tnApply(b, c, string(manifest))
	reg.applied = time.Since(created)
	return t, reg
}

// tnApply creates every object of a manifest in a target, as `kubectl apply -f` does
// on a fresh cluster.
func tnApply(b *testing.B, c client.Client, manifest string) {
	b.Helper()
	for _, doc := range strings.Split(manifest, "\n---\n") {
		doc = strings.TrimPrefix(strings.TrimSpace(doc), "---")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			b.Fatalf("manifest: %v", err)
		}
		if err := c.Create(context.Background(), u); err != nil && !apierrors.IsAlreadyExists(err) {
			b.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// tnAgent is an agent running in this process.
type tnAgent struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// runAgent runs `drover agent --kubeconfig <target>` in this process: it reads
// Secret drover-agent-hub from the target and dials the hub.
func (f *tnFleet) runAgent(t *tnTarget) *tnAgent {
	ctx, cancel := context.WithCancel(context.Background())
	a := &tnAgent{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- agent.Main(ctx, []string{"--kubeconfig=" + t.kubeconfig, "--zap-log-level=error"}) }()
	f.add(a)
	return a
}

// runAgentVia runs the agent in this process as agent.Main would, but dialling the
// hub at hubURL instead of the URL in Secret drover-agent-hub.
func (f *tnFleet) runAgentVia(b *testing.B, t *tnTarget, hubURL string) *tnAgent {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hub, err := agent.ReadHubSecret(ctx, t.cp.Config, agent.DefaultNamespace)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	hub.URL = hubURL
	o := agent.Options{ClusterName: hub.Cluster, Namespace: agent.DefaultNamespace, LeaseName: agent.DefaultLeaseName,
		RenewInterval: agent.DefaultRenewInterval, LeaseDuration: agent.DefaultLeaseDuration, Version: "bench"}
	a := &tnAgent{cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- agent.RunWithTunnel(ctx, t.cp.Config, o, *hub) }()
	f.add(a)
	return a
}

func (a *tnAgent) stop(b *testing.B) {
	a.once.Do(func() {
		a.cancel()
		select {
		case err := <-a.done:
			if err != nil {
				b.Errorf("agent: %v", err)
			}
		case <-time.After(30 * time.Second):
			b.Errorf("agent did not stop within 30s")
		}
	})
}

// tnChildAgent is `drover agent` in a child process: this test binary with
// roleEnv=agent.
type tnChildAgent struct {
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logPath string
	once    sync.Once
}

func (f *tnFleet) startChildAgent(b *testing.B, t *tnTarget) *tnChildAgent {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	f.mu.Lock()
	f.agents++
	c := &tnChildAgent{done: make(chan struct{}), logPath: filepath.Join(f.e.dir, fmt.Sprintf("agent-%d.log", f.agents))}
	f.mu.Unlock()
	logf, err := os.Create(c.logPath)
	if err != nil {
		b.Fatal(err)
	}
	c.cmd = exec.Command(exe, "--kubeconfig="+t.kubeconfig, "--zap-log-level=error")
	c.cmd.Env = append(os.Environ(), roleEnv+"="+tnAgentRole)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// The agent must never outlive the benchmark.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		_ = logf.Close()
		b.Fatal(err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		_ = logf.Close()
		close(c.done)
	}()
	f.add(c)
	return c
}

func (c *tnChildAgent) signal(sig syscall.Signal) error {
	select {
	case <-c.done:
		return fmt.Errorf("the agent process exited: %v\n%s", c.waitErr, tnTail(c.logPath))
	default:
	}
	return c.cmd.Process.Signal(sig)
}

func (c *tnChildAgent) stop(b *testing.B) {
	c.once.Do(func() {
		select {
		case <-c.done:
			b.Errorf("agent process exited early: %v\n%s", c.waitErr, tnTail(c.logPath))
			return
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
			b.Errorf("agent process did not stop within 30s of SIGTERM; killed")
		}
	})
}

func tnTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// cleanup deletes the fleet's ManagedClusters and waits until they are gone (their
// agents still running, so that the hub can clean the targets up through the
// tunnels), stops the agents and proxies, deletes the bootstrap token Secrets (the
// bench hub runs no garbage collector to follow their owner references), removes
// what is left in the targets' agent namespace and resets the targets.
func (f *tnFleet) cleanup(b *testing.B) {
	ctx := context.Background()
	e := f.e
	f.mu.Lock()
	targets := slices.Clone(f.targets)
	stops := slices.Clone(f.stops)
	f.mu.Unlock()
	for _, t := range targets {
		mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: t.name}}
		if err := client.IgnoreNotFound(e.hubc.Delete(ctx, mc)); err != nil {
			b.Errorf("delete ManagedCluster %s: %v", t.name, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var stuck []*v1alpha1.ManagedCluster
		for _, t := range targets {
			var mc v1alpha1.ManagedCluster
			err := e.hubc.Get(ctx, client.ObjectKey{Name: t.name}, &mc)
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				b.Errorf("get ManagedCluster %s: %v", t.name, err)
			default:
				stuck = append(stuck, &mc)
			}
		}
		if len(stuck) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var lines []string
			for _, mc := range stuck {
				lines = append(lines, describe(mc))
				base := mc.DeepCopy()
				mc.Finalizers = nil
				_ = e.hubc.Patch(ctx, mc, client.MergeFrom(base))
			}
			b.Errorf("%d ManagedClusters still there 60s after deletion; removed their finalizers:\n%s", len(stuck), strings.Join(lines, "\n"))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i].stop(b)
	}
	for _, t := range targets {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: t.name + "-registration"}}
		if err := client.IgnoreNotFound(e.hubc.Delete(ctx, s)); err != nil {
			b.Errorf("delete Secret %s: %v", s.Name, err)
		}
	}
	for _, t := range targets {
		if left := tnScrub(b, t); left != "" {
			b.Logf("%s: left in the target after its ManagedCluster was deleted (removed now): %s", t.cp.Name, left)
		}
	}
	e.resetTargets(b)
}

// tnScrub deletes what is in a target's agent namespace, and Drover's cluster-wide
// RBAC, and says what it found. Without kube-controller-manager nothing empties a
// deleted namespace: what it held would come back with the next namespace of that
// name (a stale drover-agent-hub Secret among them).
func tnScrub(b *testing.B, t *tnTarget) string {
	b.Helper()
	ctx := context.Background()
	ns := controllers.AgentNamespace
	var found []string
	for _, k := range []struct {
		kind string
		list client.ObjectList
		obj  client.Object
		opts []client.ListOption
	}{
		{"Secret", &corev1.SecretList{}, &corev1.Secret{}, []client.ListOption{client.InNamespace(ns)}},
		{"ConfigMap", &corev1.ConfigMapList{}, &corev1.ConfigMap{}, []client.ListOption{client.InNamespace(ns)}},
		{"ServiceAccount", &corev1.ServiceAccountList{}, &corev1.ServiceAccount{}, []client.ListOption{client.InNamespace(ns)}},
		{"Lease", &coordinationv1.LeaseList{}, &coordinationv1.Lease{}, []client.ListOption{client.InNamespace(ns)}},
		{"Deployment", &appsv1.DeploymentList{}, &appsv1.Deployment{}, []client.ListOption{client.InNamespace(ns)}},
		{"Role", &rbacv1.RoleList{}, &rbacv1.Role{}, []client.ListOption{client.InNamespace(ns)}},
		{"RoleBinding", &rbacv1.RoleBindingList{}, &rbacv1.RoleBinding{}, []client.ListOption{client.InNamespace(ns)}},
		{"ClusterRoleBinding", &rbacv1.ClusterRoleBindingList{}, &rbacv1.ClusterRoleBinding{}, []client.ListOption{client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}}},
		{"ClusterRole", &rbacv1.ClusterRoleList{}, &rbacv1.ClusterRole{}, []client.ListOption{client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}}},
	} {
		if err := t.c.List(ctx, k.list, k.opts...); err != nil {
			b.Errorf("%s: list %s: %v", t.cp.Name, k.kind, err)
			continue
		}
		items, err := meta.ExtractList(k.list)
		if err != nil {
			b.Error(err)
			continue
		}
		if len(items) == 0 {
			continue
		}
		var names []string
		for _, o := range items {
			if m, err := meta.Accessor(o); err == nil {
				names = append(names, m.GetName())
			}
		}
		found = append(found, fmt.Sprintf("%s %s", k.kind, strings.Join(names, ",")))
		var dopts []client.DeleteAllOfOption
		for _, o := range k.opts {
			if d, ok := o.(client.DeleteAllOfOption); ok {
				dopts = append(dopts, d)
			}
		}
		if err := t.c.DeleteAllOf(ctx, k.obj, dopts...); err != nil && !apierrors.IsNotFound(err) {
			b.Errorf("%s: delete %s: %v", t.cp.Name, k.kind, err)
		}
	}
	return strings.Join(found, "; ")
}

// tnHub is a manager with the hub server on a free port.
type tnHub struct {
	*managerProc
	// addr is the hub server's host:port; its URL is https://<addr>.
	addr string
	// hc verifies the hub server with its CA.
	hc *http.Client
}

// tnStartManager starts a manager (startManager: its hub server's URL is its bind
// address) and waits until the hub server answers with the CA it publishes in
// ConfigMap drover-hub-ca.
func (e *env) tnStartManager(b *testing.B) *tnHub {
	b.Helper()
	p := e.startManager(b)
	h := &tnHub{managerProc: p, addr: p.hubAddr}
	hubAddr := p.hubAddr
	deadline := time.Now().Add(60 * time.Second)
	exited := func() {
		select {
		case <-p.done:
			b.Fatalf("manager exited at start: %v\n%s", p.waitErr, p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("manager or its hub server not ready after 60s\n%s", p.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for h.hc == nil {
		var cm corev1.ConfigMap
		err := e.hubc.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: hubserver.CAConfigMapName}, &cm)
		if err == nil && cm.Data[hubserver.CAKey] != "" {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(cm.Data[hubserver.CAKey])) {
				b.Fatalf("ConfigMap %s holds no PEM certificate", hubserver.CAConfigMapName)
			}
			h.hc = &http.Client{Timeout: 10 * time.Second,
				Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
			b.Cleanup(h.hc.CloseIdleConnections)
			break
		}
		exited()
	}
	for {
		resp, err := h.hc.Get("https://" + hubAddr + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		exited()
	}
	time.Sleep(2 * time.Second)
	return h
}

// tnProxy forwards TCP connections to an address, and can stop forwarding without
// closing anything: what it reads is held, and it reads no more, so that TCP's flow
// control stalls both ends, as a partitioned network would.
type tnProxy struct {
	ln net.Listener
	to string

	mu     sync.Mutex
	gate   chan struct{} // closed while the proxy forwards
	frozen bool
	closed bool
	conns  []net.Conn
	n      int
}

func tnStartProxy(b *testing.B, to string) *tnProxy {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &tnProxy{ln: ln, to: to, gate: make(chan struct{})}
	close(p.gate)
	go p.serve()
	return p
}

func (p *tnProxy) addr() string { return p.ln.Addr().String() }

func (p *tnProxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *tnProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.n++
		p.mu.Unlock()
		if !p.track(c) {
			return
		}
		go p.handle(c)
	}
}

func (p *tnProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *tnProxy) handle(c net.Conn) {
	p.wait() // a frozen proxy does not even dial
	up, err := net.Dial("tcp", p.to)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(up) {
		_ = c.Close()
		return
	}
	go p.pipe(up, c)
	p.pipe(c, up)
}

func (p *tnProxy) pipe(dst, src net.Conn) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *tnProxy) wait() {
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	<-g
}

func (p *tnProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.gate = make(chan struct{})
	}
}

func (p *tnProxy) unfreeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.gate)
	}
}

// stop closes the listener and every connection.
func (p *tnProxy) stop(*testing.B) {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	p.unfreeze()
}
