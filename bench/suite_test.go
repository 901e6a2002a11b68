package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/cluster-api/util/conditions"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/manager"
)

// The benchmarks share one hub and a growing set of targets, started lazily by the
// first benchmark that needs them and stopped when the test binary ends. Each
// benchmark runs its own manager process with the default settings, so that one
// benchmark's clusters never show up in another's figures.
//
// The manager runs as a child process: this very test binary, re-executed with
// roleEnv=manager, runs manager.Main exactly as `drover` does with no subcommand
// (same flags, same defaults). Its memory is then its own, not mixed with the
// benchmark's clients and watches, and it is read after a forced GC through a small
// side endpoint (memstatsAddrEnv) that only the benchmark child serves.

const (
	namespace = "drover-system"
	// benchLabel marks the ManagedClusters the benchmarks create.
	benchLabel = "bench.drover.io/benchmark"

	roleEnv         = "DROVER_BENCH_ROLE"
	memstatsAddrEnv = "DROVER_BENCH_MEMSTATS_ADDR"
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "manager" {
		os.Exit(managerMain())
	}
	// Errors only: the agents that the memory benchmark runs in this process log
	// through controller-runtime.
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: stopping control planes:", err)
	}
	os.Exit(code)
}

// managerMain runs the manager in the child process.
func managerMain() int {
	if addr := os.Getenv(memstatsAddrEnv); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench manager: memstats listener:", err)
			return 1
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/memstats", serveMemStats)
		// Profiles of the manager, for finding what a cluster costs:
		// go tool pprof http://<addr>/debug/pprof/heap (DROVER_BENCH_KEEP keeps its log).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.Serve(ln, mux) }()
	}
	if err := manager.Main(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "drover:", err)
		return 1
	}
	return 0
}

// memStats is the manager's memory after a forced garbage collection.
type memStats struct {
	// HeapAlloc is the live heap; HeapInuse adds the free space of in-use spans.
	HeapAlloc, HeapInuse uint64
	HeapObjects          uint64
	StackInuse           uint64
	// RSS is the resident set (VmRSS) after returning free memory to the OS.
	RSS        uint64
	Goroutines int
}

func serveMemStats(w http.ResponseWriter, _ *http.Request) {
	runtime.GC()
	debug.FreeOSMemory() // a second GC, and return freed pages so RSS means something
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := memStats{
		HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, HeapObjects: ms.HeapObjects,
		StackInuse: ms.StackInuse, RSS: vmRSS(), Goroutines: runtime.NumGoroutine(),
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// vmRSS reads this process's resident set size from /proc.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// env is the hub and the targets.
type env struct {
	dir           string
	hub           *controlplane.ControlPlane
	hubKubeconfig string
	hubc          client.WithWatch
	targets       []*controlplane.ControlPlane
	managers      int
}

var shared struct {
	mu sync.Mutex
	e  *env
}

// setup returns the shared environment with at least n targets, starting what is
// missing (in parallel).
func setup(b *testing.B, n int) *env {
	b.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	start := time.Now()
	e := shared.e
	if e == nil {
		dir, err := os.MkdirTemp("", "drover-bench-")
		if err != nil {
			b.Fatal(err)
		}
		e = &env{dir: dir}
		shared.e = e
	}
	var wg sync.WaitGroup
	var hubErr error
	started := 0
	if e.hub == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hubErr = e.startHub()
		}()
		started++
	}
	missing := n - len(e.targets)
	newTargets := make([]*controlplane.ControlPlane, max(missing, 0))
	errs := make([]error, len(newTargets))
	for i := range newTargets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Targets need no kube-controller-manager here: no benchmark deletes
			// a namespace or relies on aggregated roles.
			newTargets[i], errs[i] = controlplane.Start(controlplane.Options{
				Name: fmt.Sprintf("bench-target-%d", len(e.targets)+i+1),
			})
		}()
		started++
	}
	wg.Wait()
	for _, t := range newTargets {
		if t != nil {
			e.targets = append(e.targets, t)
		}
	}
	if err := errors.Join(append(errs, hubErr)...); err != nil {
		b.Fatal(err)
	}
	for _, t := range newTargets {
		if err := addNodes(t, nodesPerTarget); err != nil {
			b.Fatal(err)
		}
	}
	if started > 0 {
		b.Logf("started %d control plane(s) in %s (hub + %d targets running)", started, time.Since(start).Round(100*time.Millisecond), len(e.targets))
	}
	return e
}

// nodesPerTarget is how many (bare) Nodes each target gets, so that cluster facts
// and the manager's Node cache have something to hold.
const nodesPerTarget = 3

// addNodes creates n Ready Nodes in a target. No kubelet stands behind them, and no
// node lifecycle controller runs, so they stay Ready.
func addNodes(target *controlplane.ControlPlane, n int) error {
	ctx := context.Background()
	c, err := client.New(target.Config, client.Options{})
	if err != nil {
		return err
	}
	for i := range n {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("node-%d", i+1),
			Labels: map[string]string{"kubernetes.io/hostname": fmt.Sprintf("node-%d", i+1), "kubernetes.io/os": "linux"},
		}}
		if err := c.Create(ctx, node); err != nil {
			return err
		}
		node.Status = corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3800m"), corev1.ResourceMemory: resource.MustParse("15Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "v1.36.3", OSImage: "Ubuntu 24.04 LTS", ContainerRuntimeVersion: "containerd://2.1.0"},
		}
		if err := c.Status().Update(ctx, node); err != nil {
			return err
		}
	}
	return nil
}

// answers tells whether a control plane's API server answers GET /version on a
// new connection, within half a second.
func answers(target *controlplane.ControlPlane) bool {
	tlsConfig, err := rest.TLSConfigFor(target.Config)
	if err != nil {
		return false
	}
	// A transport of its own: client-go shares cached transports between clients.
	tr, err := rest.HTTPWrappersForConfig(target.Config, &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true})
	if err != nil {
		return false
	}
	hc := &http.Client{Transport: tr, Timeout: 500 * time.Millisecond}
	resp, err := hc.Get(strings.TrimSuffix(target.Endpoint(), "/") + "/version")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (e *env) startHub() error {
	hub, err := controlplane.Start(controlplane.Options{
		Name:              "bench-hub",
		CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")},
	})
	if err != nil {
		return err
	}
	e.hub = hub
	scheme, err := manager.Scheme()
	if err != nil {
		return err
	}
	if e.hubc, err = client.NewWithWatch(hub.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	e.hubKubeconfig = filepath.Join(e.dir, "hub.kubeconfig")
	if err := os.WriteFile(e.hubKubeconfig, hub.Kubeconfig(), 0o600); err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	return e.hubc.Create(context.Background(), ns)
}

func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	e := shared.e
	if e == nil {
		return nil
	}
	shared.e = nil
	cps := append([]*controlplane.ControlPlane{e.hub}, e.targets...)
	errs := make([]error, len(cps))
	var wg sync.WaitGroup
	for i, cp := range cps {
		if cp == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cp.Stop()
		}()
	}
	wg.Wait()
	if os.Getenv("DROVER_BENCH_KEEP") == "" {
		_ = os.RemoveAll(e.dir)
	} else {
		fmt.Fprintln(os.Stderr, "bench: kept", e.dir)
	}
	return errors.Join(errs...)
}

// hostOf returns host:port of a control plane, as client-go's request metrics label it.
func hostOf(cp *controlplane.ControlPlane) string {
	u, err := url.Parse(cp.Endpoint())
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(cp.Endpoint(), "/")
	}
	return u.Host
}

// managerProc is a running manager.
type managerProc struct {
	cmd         *exec.Cmd
	done        chan struct{}
	waitErr     error
	logPath     string
	metricsURL  string
	memstatsURL string
	// hubAddr is the hub server's host:port; its URL is https://<hubAddr>.
	hubAddr string
	// webhookAddr is where the admission webhook listens (not registered with the hub).
	webhookAddr string
	stopped     bool
}

// startManager starts a manager against the hub with default settings. It is
// stopped when the benchmark ends.
func (e *env) startManager(b *testing.B) *managerProc {
	b.Helper()
	return e.startManagerWith(b, "")
}

// startManagerWith starts a manager whose hub server listens on hubAddr (a free
// loopback port when empty), with extra flags.
func (e *env) startManagerWith(b *testing.B, hubAddr string, extra ...string) *managerProc {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	e.managers++
	metricsAddr, healthAddr, memAddr, webhookAddr := freeAddr(b), freeAddr(b), freeAddr(b), freeAddr(b)
	if hubAddr == "" {
		hubAddr = freeAddr(b)
	}
	p := &managerProc{
		done:        make(chan struct{}),
		hubAddr:     hubAddr,
		webhookAddr: webhookAddr,
		logPath:     filepath.Join(e.dir, fmt.Sprintf("manager-%d.log", e.managers)),
		metricsURL:  "http://" + metricsAddr + "/metrics",
		memstatsURL: "http://" + memAddr + "/memstats",
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		b.Fatal(err)
	}
	p.cmd = exec.Command(exe,
		"--kubeconfig="+e.hubKubeconfig,
		"--namespace="+namespace,
		"--metrics-bind-address="+metricsAddr,
		"--health-probe-bind-address="+healthAddr,
		"--hub-bind-address="+hubAddr,
		// Agents reach the hub server where it listens.
		"--hub-url=https://"+hubAddr,
		// The admission webhook serves on a port of its own, not the default :9444
		// that another manager on this machine may hold. It is not registered with
		// the hub (no --webhook-url), so the intents the benchmarks write do not go
		// through it.
		"--webhook-bind-address="+webhookAddr,
	)
	p.cmd.Args = append(p.cmd.Args, extra...)
	p.cmd.Env = append(os.Environ(), roleEnv+"=manager", memstatsAddrEnv+"="+memAddr)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// The manager must never outlive the benchmark.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		b.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	b.Cleanup(func() { p.stop(b) })

	// Up when /readyz answers; the controllers start right after the hub caches
	// sync, which with an empty hub takes well under a second.
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + healthAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-p.done:
			b.Fatalf("manager exited at start: %v\n%s", p.waitErr, p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("manager not ready after 60s\n%s", p.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	return p
}

func (p *managerProc) stop(b *testing.B) {
	if p.stopped {
		return
	}
	p.stopped = true
	select {
	case <-p.done:
		b.Errorf("manager exited early: %v\n%s", p.waitErr, p.logTail())
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		b.Logf("manager did not stop within 30s of SIGTERM; killed")
	}
}

// logTail returns the end of the manager's log.
func (p *managerProc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// memStats forces a GC in the manager and returns its memory.
func (p *managerProc) memStats(b *testing.B) memStats {
	b.Helper()
	resp, err := http.Get(p.memstatsURL)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var ms memStats
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		b.Fatal(err)
	}
	return ms
}

// scrape reads the manager's Prometheus metrics: series (name{labels}) -> value.
func (p *managerProc) scrape(b *testing.B) metricSet {
	b.Helper()
	resp, err := http.Get(p.metricsURL)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out := metricSet{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

type metricSet map[string]float64

// sum adds up the series of one metric whose labels contain every given label pair
// (written `key="value"`).
func (m metricSet) sum(name string, labels ...string) float64 {
	var total float64
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

func freeAddr(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// register stores target's admin kubeconfig in a Secret and creates a ManagedCluster
// for it, as a user does, with the default deletionPolicy (Delete).
func (e *env) register(b *testing.B, name string, target *controlplane.ControlPlane) {
	b.Helper()
	e.registerKubeconfig(b, name, target.Kubeconfig())
}

// registerKubeconfig registers a cluster from a given kubeconfig.
func (e *env) registerKubeconfig(b *testing.B, name string, kubeconfig []byte) {
	b.Helper()
	ctx := context.Background()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: namespace, Labels: map[string]string{benchLabel: "true"}},
		Data:       map[string][]byte{"value": kubeconfig},
	}
	if err := e.hubc.Create(ctx, secret); err != nil {
		b.Fatal(err)
	}
	mc := &v1alpha1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: "true"}},
		Spec: v1alpha1.ManagedClusterSpec{
			Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: name + "-kubeconfig"}},
		},
	}
	if err := e.hubc.Create(ctx, mc); err != nil {
		b.Fatal(err)
	}
}

// cleanupClusters deletes the benchmark's ManagedClusters and then their Secrets when
// it ends. Call it after startManager: cleanups run last-in first-out, so the manager
// is still there to clean the targets up and release the finalizers.
//
// The Secrets go only once the ManagedClusters are gone: a ManagedCluster whose
// Secret has disappeared cannot reach its cluster any more, and its deletion waits
// out --cluster-deletion-timeout (5 minutes) before it completes.
func (e *env) cleanupClusters(b *testing.B) {
	b.Cleanup(func() {
		ctx := context.Background()
		sel := client.MatchingLabels{benchLabel: "true"}
		if err := e.hubc.DeleteAllOf(ctx, &v1alpha1.ManagedCluster{}, sel); err != nil {
			b.Errorf("delete ManagedClusters: %v", err)
		}
		deleteSecrets := func() {
			if err := e.hubc.DeleteAllOf(ctx, &corev1.Secret{}, sel, client.InNamespace(namespace)); err != nil {
				b.Errorf("delete Secrets: %v", err)
			}
		}
		start := time.Now()
		deadline := start.Add(60 * time.Second)
		for {
			var list v1alpha1.ManagedClusterList
			if err := e.hubc.List(ctx, &list, sel); err != nil {
				b.Errorf("list ManagedClusters: %v", err)
				return
			}
			if len(list.Items) == 0 {
				deleteSecrets()
				e.resetTargets(b)
				return
			}
			if time.Now().After(deadline) {
				var stuck []string
				for i := range list.Items {
					stuck = append(stuck, describe(&list.Items[i]))
				}
				b.Errorf("%d ManagedClusters still there 60s after deletion; removing their finalizers:\n%s",
					len(list.Items), strings.Join(stuck, "\n"))
				for i := range list.Items {
					mc := &list.Items[i]
					base := mc.DeepCopy()
					mc.Finalizers = nil
					_ = e.hubc.Patch(ctx, mc, client.MergeFrom(base))
				}
				deleteSecrets()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// resetTargets makes every target as fresh as a never-registered one. Deleting a
// ManagedCluster (deletionPolicy Delete) removes everything Drover installed and
// deletes the agent's namespace, but without kube-controller-manager nothing
// finalizes that namespace: it would stay Terminating, and the next registration
// could not install the agent. The namespace is empty by then, so this finalizes it.
func (e *env) resetTargets(b *testing.B) {
	ctx := context.Background()
	for _, t := range e.targets {
		cs, err := kubernetes.NewForConfig(t.Config)
		if err != nil {
			b.Error(err)
			continue
		}
		ns, err := cs.CoreV1().Namespaces().Get(ctx, controllers.AgentNamespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			b.Error(err)
			continue
		}
		if ns.DeletionTimestamp.IsZero() {
			b.Errorf("target %s: namespace %s is still there after the ManagedCluster was deleted", t.Name, ns.Name)
			if err := cs.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
				b.Error(err)
				continue
			}
		}
		ns.Spec.Finalizers = nil
		if _, err := cs.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			b.Error(err)
			continue
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := cs.CoreV1().Namespaces().Get(ctx, controllers.AgentNamespace, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				b.Errorf("target %s: namespace %s not gone 30s after finalizing it", t.Name, controllers.AgentNamespace)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// stamped is a watch event with the time it arrived.
type stamped struct {
	at  time.Time
	typ watch.EventType
	mc  *v1alpha1.ManagedCluster
}

// clusterWatch follows ManagedClusters on the hub, stamping each event on arrival.
type clusterWatch struct {
	cancel context.CancelFunc
	ch     chan stamped
	last   *stamped
	// modified counts the MODIFIED events consumed so far.
	modified int
}

// watchClusters watches one ManagedCluster (or all, for name ""). Open it before the
// action being timed.
func (e *env) watchClusters(b *testing.B, name string) *clusterWatch {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &clusterWatch{cancel: cancel, ch: make(chan stamped, 1<<14)}
	var opts []client.ListOption
	if name != "" {
		opts = append(opts, client.MatchingFields{"metadata.name": name})
	}
	first, err := e.hubc.Watch(ctx, &v1alpha1.ManagedClusterList{}, opts...)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	go func() {
		wi := first
		for {
			for ev := range wi.ResultChan() {
				now := time.Now()
				mc, ok := ev.Object.(*v1alpha1.ManagedCluster)
				if !ok {
					continue
				}
				select {
				case w.ch <- stamped{at: now, typ: ev.Type, mc: mc}:
				case <-ctx.Done():
					wi.Stop()
					return
				}
			}
			// The server ended the watch: open it again (it replays the current
			// state as ADDED events).
			for {
				if ctx.Err() != nil {
					return
				}
				if wi, err = e.hubc.Watch(ctx, &v1alpha1.ManagedClusterList{}, opts...); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	b.Cleanup(w.stop)
	return w
}

func (w *clusterWatch) stop() { w.cancel() }

func (w *clusterWatch) note(ev stamped) {
	w.last = &ev
	if ev.typ == watch.Modified {
		w.modified++
	}
}

// until returns the first event, from the last one seen on, whose object satisfies
// pred, and when it arrived.
func (w *clusterWatch) until(b *testing.B, timeout time.Duration, what string, pred func(*v1alpha1.ManagedCluster) bool) stamped {
	b.Helper()
	if w.last != nil && w.last.typ != watch.Deleted && pred(w.last.mc) {
		return *w.last
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev := <-w.ch:
			w.note(ev)
			if ev.typ != watch.Deleted && pred(ev.mc) {
				return ev
			}
		case <-timer.C:
			last := "nothing"
			if w.last != nil {
				last = describe(w.last.mc)
			}
			b.Fatalf("no %s within %s; last seen: %s", what, timeout, last)
		}
	}
}

// drain returns every event received so far without waiting.
func (w *clusterWatch) drain() []stamped {
	var out []stamped
	for {
		select {
		case ev := <-w.ch:
			w.note(ev)
			out = append(out, ev)
		default:
			return out
		}
	}
}

func condIs(typ string, status metav1.ConditionStatus) func(*v1alpha1.ManagedCluster) bool {
	return func(mc *v1alpha1.ManagedCluster) bool {
		c := conditions.Get(mc, typ)
		return c != nil && c.Status == status
	}
}

func both(a, b func(*v1alpha1.ManagedCluster) bool) func(*v1alpha1.ManagedCluster) bool {
	return func(mc *v1alpha1.ManagedCluster) bool { return a(mc) && b(mc) }
}

// waitClusters polls the hub until every named cluster satisfies pred.
func (e *env) waitClusters(b *testing.B, names []string, timeout time.Duration, what string, pred func(*v1alpha1.ManagedCluster) bool) {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		var list v1alpha1.ManagedClusterList
		if err := e.hubc.List(ctx, &list, client.MatchingLabels{benchLabel: "true"}); err != nil {
			b.Fatal(err)
		}
		byName := map[string]*v1alpha1.ManagedCluster{}
		for i := range list.Items {
			byName[list.Items[i].Name] = &list.Items[i]
		}
		var pending []string
		for _, n := range names {
			if mc := byName[n]; mc == nil || !pred(mc) {
				s := n + ": not found"
				if mc != nil {
					s = describe(mc)
				}
				pending = append(pending, s)
			}
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d cluster(s) not %s within %s:\n%s", len(pending), what, timeout, strings.Join(pending, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// describe summarises a ManagedCluster's conditions for failure messages.
func describe(mc *v1alpha1.ManagedCluster) string {
	var buf bytes.Buffer
	buf.WriteString(mc.Name)
	for _, t := range []string{v1alpha1.ReadyCondition, v1alpha1.ConnectedCondition, v1alpha1.AgentReadyCondition, v1alpha1.SyncedCondition} {
		if c := conditions.Get(mc, t); c != nil {
			fmt.Fprintf(&buf, " %s=%s/%s (%s)", t, c.Status, c.Reason, c.Message)
		}
	}
	return buf.String()
}

// percentile returns the nearest-rank percentile q (0..1] of ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// reportLatency reports p50 and max of samples in milliseconds under prefix.
func reportLatency(b *testing.B, prefix string, samples []time.Duration) {
	b.ReportMetric(ms(percentile(samples, 0.5)), prefix+"-p50-ms")
	b.ReportMetric(ms(percentile(samples, 1)), prefix+"-max-ms")
}

func roundAll(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond).String()
	}
	return out
}
