// Command drover-dev is `make dev`: Drover running on this machine against a real hub
// and real target clusters, with no container engine and no network.
//
// It starts a hub (etcd, kube-apiserver, kube-controller-manager) and target clusters
// built the same way, through package controlplane, the code the tests use. Each
// target gets a few Nodes that kwok keeps Ready. It installs Drover's CRDs and
// built-in RoleTemplates in the hub, runs the manager (bin/drover) against the hub
// and one agent process (bin/drover agent) per target, standing in for the agent
// Deployment since no kubelet runs pods here, and applies config/samples.
//
// Two kinds of targets are registered as ManagedClusters: target-N through kubeconfig
// Secrets, and edge-N through spec.registration alone, as a cluster behind NAT joins:
// make dev applies the registration manifest the hub serves to the target, and runs
// the agent with no flags but --kubeconfig; the agent opens a tunnel to the hub, the
// only way the hub reaches that target's API server.
//
// Everything lives in .dev/ (git ignores it). It runs until Ctrl-C or SIGTERM, then
// stops every process it started. A second Ctrl-C kills them at once. If make dev
// itself is killed, its watchdog kills what it started, and the next run cleans up
// whatever is left.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/internal/hosts"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == watchdogArg {
		watchdog(os.Args[2])
		os.Exit(0)
	}
	os.Exit(run())
}

// errInterrupted is the cause of a shutdown asked for by Ctrl-C or SIGTERM.
var errInterrupted = errors.New("interrupted")

// options are drover-dev's flags.
type options struct {
	dir          string
	drover       string
	targets      int
	tunnelled    int
	nodes        []int
	manager      bool
	provision    bool
	verbose      bool
	readyTimeout time.Duration
}

func parseFlags() (options, error) {
	o := options{}
	fs := flag.NewFlagSet("drover-dev", flag.ContinueOnError)
	fs.StringVar(&o.dir, "dir", ".dev", "Directory for kubeconfigs, logs and control-plane state; emptied on start.")
	fs.StringVar(&o.drover, "drover", "bin/drover", "The drover binary to run as manager and agents (make build builds it).")
	fs.IntVar(&o.targets, "targets", 2, "Number of target clusters registered through kubeconfig Secrets (target-1, target-2, ...).")
	fs.IntVar(&o.tunnelled, "tunnel-targets", 1, "Number of further target clusters registered through spec.registration and the agent's tunnel (edge-1, ...); the hub never gets their kubeconfig.")
	nodes := fs.String("nodes", "3,2", "Simulated nodes per target, comma-separated, in the order target-1, target-2, ..., edge-1, ...; the last number repeats for further targets.")
	fs.BoolVar(&o.manager, "manager", true, "Run the manager. With --manager=false, run your own against .dev/hub.kubeconfig (e.g. from a debugger).")
	fs.BoolVar(&o.provision, "provision", false, "Also build a cluster, "+provisionedName+", on two hosts made of namespaces of this machine (one etcd and control-plane node, one worker), from the registration command as a user runs it. Needs root.")
	fs.BoolVar(&o.verbose, "v", false, "Also print the control planes' and kwok's logs, which otherwise only go to .dev/logs.")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 3*time.Minute, "How long to wait for the ManagedClusters to become Ready before reporting them as stuck.")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.targets < 1 || o.targets > 9 {
		return o, fmt.Errorf("--targets must be between 1 and 9, got %d", o.targets)
	}
	if o.tunnelled < 0 || o.tunnelled > 9 {
		return o, fmt.Errorf("--tunnel-targets must be between 0 and 9, got %d", o.tunnelled)
	}
	for _, s := range strings.Split(*nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > 100 {
			return o, fmt.Errorf("--nodes: %q is not a number of nodes between 0 and 100", s)
		}
		o.nodes = append(o.nodes, n)
	}
	return o, nil
}

func (o options) nodesFor(i int) int {
	if i < len(o.nodes) {
		return o.nodes[i]
	}
	return o.nodes[len(o.nodes)-1]
}

// dev is one run of make dev.
type dev struct {
	opts    options
	con     *console
	root    string // the repository, absolute
	dir     string // opts.dir, absolute
	assets  string
	drover  string
	start   time.Time
	exited  chan *proc
	hub     *controlplane.ControlPlane
	targets []*target
	kwoks   []*proc
	manager *proc
	// metricsAddr, probesAddr, hubAddr and webhookAddr are the manager's, for the banner.
	metricsAddr, probesAddr, hubAddr, webhookAddr string
	// proxyLines show the authentication proxy in the banner (proxy.go).
	proxyLines []string
	// hostSet and artifacts serve --provision (provision.go).
	hostSet   *hosts.Set
	artifacts string
	// logs are the control planes' log files, closed once they have stopped.
	logs []*os.File

	mu     sync.Mutex
	agents []*proc
}

func run() int {
	con := newConsole(os.Stdout)
	opts, err := parseFlags()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		con.printf("%v", err)
		return 2
	}
	d := &dev{opts: opts, con: con, start: time.Now(), exited: make(chan *proc, 16), targets: plan(opts)}

	// The first Ctrl-C (or SIGTERM) stops everything in order; a second one exits at
	// once and leaves the killing to the watchdog. A process that exits on its own
	// stops everything too.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-signals
		con.printf("got %v: stopping everything (Ctrl-C again to kill it all at once)", s)
		cancel(errInterrupted)
		<-signals
		con.printf("killing everything")
		os.Exit(130)
	}()
	go func() {
		p := <-d.exited
		why := "exit status 0"
		if p.err != nil {
			why = p.err.Error()
		}
		cancel(fmt.Errorf("%s exited unexpectedly (%s); its log is %s", p.name, why, d.rel(d.logFile(p.name))))
	}()
	if !setParentDeathSignal() {
		return 1
	}

	lock, err := d.prepare()
	if err != nil {
		con.printf("%v", err)
		return 1
	}
	defer func() { _ = lock.Close() }()
	wd, wdDone, err := startWatchdog(d.dir)
	if err != nil {
		con.printf("%v", err)
		return 1
	}

	status := 0
	if err := d.up(ctx); err != nil && ctx.Err() == nil {
		cancel(err)
	}
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, errInterrupted) {
		con.printf("%v", cause)
		status = 1
	}
	d.down()
	// Everything is stopped: tell the watchdog it has nothing to do.
	_, _ = io.WriteString(wd, watchdogDone)
	_ = wd.Close()
	<-wdDone
	if left := findOwned(d.dir); len(left) > 0 {
		con.printf("still running after shutdown, killing: %s", describe(left))
		killOwned(d.dir)
		status = 1
	}
	con.printf("stopped everything it started; logs are in %s", d.rel(filepath.Join(d.dir, "logs")))
	return status
}

// prepare locks the directory, clears what a previous run left behind, and finds
// the binaries.
func (d *dev) prepare() (*os.File, error) {
	var err error
	if d.root, err = os.Getwd(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(d.root, "config", "crd", "bases")); err != nil {
		return nil, fmt.Errorf("run make dev from the repository root: %w", err)
	}
	if d.dir, err = filepath.Abs(d.opts.dir); err != nil {
		return nil, err
	}
	// Everything in the directory is deleted: make sure it is make dev's.
	if entries, err := os.ReadDir(d.dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(d.dir, "lock")); err != nil {
			return nil, fmt.Errorf("%s is not empty and was not made by make dev; refusing to empty it", d.dir)
		}
	}
	lock, err := lockDir(d.dir)
	if err != nil {
		return nil, err
	}
	// Nothing holds the lock, so whatever runs from this directory is left over from
	// a make dev that was killed.
	if killed := killOwned(d.dir); len(killed) > 0 {
		d.con.printf("killed %d processes left over from a previous run: %s", len(killed), describe(killed))
	}
	if err := cleanDir(d.dir); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("clean %s: %w", d.dir, err)
	}
	for _, sub := range []string{"logs", "state"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o700); err != nil {
			_ = lock.Close()
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(d.dir, "pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		_ = lock.Close()
		return nil, err
	}
	if d.drover, err = filepath.Abs(d.opts.drover); err == nil {
		_, err = os.Stat(d.drover)
	}
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("no drover binary (run make build, or make dev which builds it): %w", err)
	}
	if d.assets, err = kubeAssets(d.root); err != nil {
		_ = lock.Close()
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(d.assets, "kwok")); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("%s has no kwok; point %s at what hack/kubebin.sh prints: %w", d.assets, controlplane.AssetsEnv, err)
	}
	return lock, nil
}

// kubeAssets returns the directory holding etcd, kube-apiserver,
// kube-controller-manager and kwok: $KUBEBUILDER_ASSETS, or what hack/kubebin.sh
// builds (once; about 7 minutes on 2 cores).
func kubeAssets(root string) (string, error) {
	if dir := os.Getenv(controlplane.AssetsEnv); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(root, "hack", "kubebin.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/kubebin.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func (d *dev) rel(path string) string {
	if r, err := filepath.Rel(d.root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

func (d *dev) logFile(name string) string {
	return filepath.Join(d.dir, "logs", strings.ReplaceAll(name, " ", "-")+".log")
}

func (d *dev) kubeconfigPath(name string) string {
	return filepath.Join(d.dir, name+".kubeconfig")
}

func (d *dev) since() string {
	return time.Since(d.start).Round(100 * time.Millisecond).String()
}

// serverOutput is where a control plane's or kwok's output goes: its log file, and
// the console with -v.
func (d *dev) serverOutput(name string) (io.Writer, *os.File, error) {
	f, err := os.OpenFile(d.logFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if d.opts.verbose {
		return io.MultiWriter(f, d.con.writer(name, colorServer)), f, nil
	}
	return f, f, nil
}

// target is one target cluster.
type target struct {
	name, displayName string
	labels            map[string]string
	nodes             int
	// tunnel is set for a cluster registered through spec.registration: the hub
	// never gets its kubeconfig and reaches it only through its agent's tunnel.
	tunnel bool
	cp     *controlplane.ControlPlane
}

// how says how the hub reaches the target, for the console.
func (t *target) how() string {
	if t.tunnel {
		return "agent tunnel"
	}
	return "kubeconfig"
}

func targetName(i int) string { return fmt.Sprintf("target-%d", i+1) }
func edgeName(i int) string   { return fmt.Sprintf("edge-%d", i+1) }

// targetLabels are the labels of each kubeconfig target's ManagedCluster: the first
// is a production cluster in the EU, the others staging, so that the samples'
// selectors (env: prod) pick some clusters and not others.
func targetLabels(i int) map[string]string {
	if i == 0 {
		return map[string]string{"env": "prod", "region": "eu"}
	}
	return map[string]string{"env": "staging", "region": "us"}
}

// edgeLabels are the labels of each tunnelled target's ManagedCluster, on the same
// scheme in region edge: the first is production, so that the samples' env=prod
// AccessBinding and ClusterProject reach a cluster through the tunnel too.
func edgeLabels(i int) map[string]string {
	l := targetLabels(i)
	l["region"] = "edge"
	return l
}

// plan lists the targets make dev runs: the kubeconfig ones, then the tunnelled ones.
func plan(o options) []*target {
	var ts []*target
	for i := range o.targets {
		ts = append(ts, &target{name: targetName(i), displayName: fmt.Sprintf("Dev target %d", i+1), labels: targetLabels(i)})
	}
	for i := range o.tunnelled {
		ts = append(ts, &target{name: edgeName(i), displayName: fmt.Sprintf("Dev edge target %d (agent tunnel)", i+1), labels: edgeLabels(i), tunnel: true})
	}
	for i, t := range ts {
		t.nodes = o.nodesFor(i)
	}
	return ts
}

// up brings everything up and prints what to do next.
func (d *dev) up(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := d.startControlPlanes(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	hubc, err := client.New(d.hub.Config, client.Options{})
	if err != nil {
		return err
	}

	// The hub: the operator namespace and the built-in RoleTemplates. The CRDs were
	// installed with the control plane.
	if err := ensureNamespace(ctx, hubc, namespace); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	files, err := kustomizationFiles(filepath.Join(d.root, "config", "roletemplates"))
	if err != nil {
		return err
	}
	applied, _, err := applyFiles(ctx, hubc, files)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	d.con.tagf("hub", colorServer, "installed the CRDs and %d built-in RoleTemplates", len(applied))

	// The targets: Nodes, and kwok to keep them Ready.
	for _, t := range d.targets {
		if err := d.startKwok(ctx, t); err != nil {
			return err
		}
	}

	if d.opts.provision {
		if err := d.startHosts(); err != nil {
			return err
		}
	}
	if d.opts.manager {
		if err := d.startManager(); err != nil {
			return err
		}
	} else {
		d.con.printf("not running the manager (--manager=false): run yours with --kubeconfig=%s", d.rel(d.kubeconfigPath("hub")))
		if d.opts.tunnelled > 0 {
			d.con.printf("the edge targets join once your manager's hub server serves their registration manifests (by default on :9443, at https://localhost:9443)")
		}
	}

	// Register the targets, as a user would.
	names := make([]string, len(d.targets))
	for i, t := range d.targets {
		names[i] = t.name
		if t.tunnel {
			if err := registerTunnelled(ctx, hubc, t.name, t.displayName, t.labels); err != nil {
				return err
			}
			d.con.printf("registered ManagedCluster %s %s with spec.registration (agent tunnel): the hub has no kubeconfig for it", t.name, labelString(t.labels))
			continue
		}
		if err := registerCluster(ctx, hubc, t.name, t.displayName, t.labels, t.cp.Kubeconfig()); err != nil {
			return err
		}
		d.con.printf("registered ManagedCluster %s %s (Secret %s/%s-kubeconfig)", t.name, labelString(t.labels), namespace, t.name)
	}
	// The kubeconfig targets' agents start as soon as the manager has installed
	// their ServiceAccounts; the tunnelled ones once the manager serves their
	// registration manifest and make dev has applied it.
	for _, t := range d.targets {
		if t.tunnel {
			go d.joinTunnelled(ctx, hubc, t)
		} else {
			go d.runAgent(ctx, t)
		}
	}

	if d.opts.provision {
		if err := d.provision(ctx, hubc); err != nil {
			return err
		}
		names = append(names, provisionedName)
		go d.provisionProgress(ctx, hubc)
	}

	files, err = kustomizationFiles(filepath.Join(d.root, "config", "samples"))
	if err != nil {
		return err
	}
	// The ManagedCluster sample points at a cluster that does not exist here.
	applied, skipped, err := applyFiles(ctx, hubc, files, "ManagedCluster")
	if err != nil {
		return fmt.Errorf("config/samples: %w", err)
	}
	d.con.printf("applied config/samples: %s (skipped %s: make dev registers its own clusters)",
		strings.Join(applied, ", "), strings.Join(skipped, ", "))

	how := map[string]string{provisionedName: "provisioned on hosts"}
	for _, t := range d.targets {
		how[t.name] = t.how()
	}
	ready := "the ManagedClusters wait for your manager (--manager=false)"
	if d.opts.manager {
		wctx, cancel := context.WithTimeout(ctx, d.opts.readyTimeout)
		err := waitReady(wctx, hubc, names, func(s clusterState) { d.con.printf("%s (%s): %s", s.name, how[s.name], s) })
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			d.con.printf("the ManagedClusters are not all Ready after %s: %v", d.opts.readyTimeout, err)
			ready = "NOT all Ready yet: see the manager's log"
		default:
			ready = fmt.Sprintf("%d ManagedClusters Ready %s after start (%s)", len(names), d.since(), d.readySummary())
			d.con.printf("%s", ready)
			if d.opts.targets >= 2 {
				d.proxyLines = d.proxyDemo(ctx, hubc, targetName(0), targetName(d.opts.targets-1))
			}
		}
	}
	d.banner(ready)
	return nil
}

// readySummary says how many targets the hub reaches each way.
func (d *dev) readySummary() string {
	kube, tun := 0, 0
	for _, t := range d.targets {
		if t.tunnel {
			tun++
		} else {
			kube++
		}
	}
	s := fmt.Sprintf("%d through kubeconfig Secrets, %d through the agent tunnel", kube, tun)
	if d.opts.provision {
		s += ", 1 provisioned on hosts"
	}
	return s
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// startControlPlanes starts the hub and the targets in parallel and writes their
// admin kubeconfigs.
func (d *dev) startControlPlanes() error {
	names := []string{"hub"}
	for _, t := range d.targets {
		names = append(names, t.name)
	}
	d.con.printf("starting %s: etcd, kube-apiserver and kube-controller-manager each (binaries from %s)", strings.Join(names, ", "), d.assets)
	cps := make([]*controlplane.ControlPlane, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		out, f, err := d.serverOutput(name)
		if err != nil {
			return err
		}
		d.logs = append(d.logs, f)
		opts := controlplane.Options{
			Name:              name,
			ControllerManager: true,
			Output:            out,
			ServerOutput:      out,
			AssetsDir:         d.assets,
			BaseDir:           filepath.Join(d.dir, "state"),
		}
		if name == "hub" {
			opts.CRDDirectoryPaths = []string{filepath.Join(d.root, "config", "crd", "bases")}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			cps[i], errs[i] = controlplane.Start(opts)
			if errs[i] == nil {
				d.con.tagf(name, colorServer, "up at %s in %s", cps[i].Endpoint(), time.Since(t0).Round(100*time.Millisecond))
			}
		}()
	}
	wg.Wait()
	d.hub = cps[0]
	for i, t := range d.targets {
		t.cp = cps[i+1]
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w (logs in %s)", err, d.rel(filepath.Join(d.dir, "logs")))
	}
	for i, name := range names {
		if err := writeKubeconfig(d.kubeconfigPath(name), name, cps[i].Kubeconfig()); err != nil {
			return err
		}
	}
	return nil
}

// startKwok creates a target's Nodes and starts kwok to run them.
func (d *dev) startKwok(ctx context.Context, t *target) error {
	name := t.name
	c, err := client.New(t.cp.Config, client.Options{})
	if err != nil {
		return err
	}
	n := t.nodes
	if err := createNodes(ctx, c, n); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var console io.Writer
	if d.opts.verbose {
		console = d.con.writer("kwok "+name, colorServer)
	}
	// An empty configuration file keeps a user's ~/.kwok/kwok.yaml out of it.
	kwokConfig := filepath.Join(d.dir, "state", "kwok.yaml")
	if err := os.WriteFile(kwokConfig, nil, 0o600); err != nil {
		return err
	}
	p, err := startProc("kwok "+name, d.logFile("kwok "+name), console, d.exited,
		filepath.Join(d.assets, "kwok"),
		"--kubeconfig="+d.kubeconfigPath(name),
		"--config="+kwokConfig,
		"--manage-all-nodes=true",
		"--node-lease-duration-seconds=40",
	)
	if err != nil {
		return err
	}
	d.kwoks = append(d.kwoks, p)
	d.con.tagf(name, colorServer, "%d nodes (4 CPU, 16Gi each), run by kwok", n)
	return nil
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

func (d *dev) startManager() error {
	var err error
	if d.metricsAddr, err = freeAddr(); err != nil {
		return err
	}
	if d.probesAddr, err = freeAddr(); err != nil {
		return err
	}
	if d.hubAddr == "" {
		if d.hubAddr, err = freeAddr(); err != nil {
			return err
		}
	}
	if d.webhookAddr, err = freeAddr(); err != nil {
		return err
	}
	var extra []string
	if d.opts.provision {
		extra = append(extra, "--artifacts-dir="+d.artifacts, "--node-agent-binary="+d.drover)
	}
	d.manager, err = startProc("manager", d.logFile("manager"), d.con.writer("manager", colorManager), d.exited,
		d.drover, append([]string{
			"--kubeconfig=" + d.kubeconfigPath("hub"),
			"--namespace=" + namespace,
			"--metrics-bind-address=" + d.metricsAddr,
			"--health-probe-bind-address=" + d.probesAddr,
			"--hub-bind-address=" + d.hubAddr,
			"--hub-url=https://" + d.hubAddr,
			// Outside a cluster the manager registers its own admission webhook
			// (ValidatingWebhookConfiguration drover-validating-webhook) at this URL.
			"--webhook-bind-address=" + d.webhookAddr,
			"--webhook-url=https://" + d.webhookAddr,
			"--zap-encoder=console",
			"--zap-time-encoding=iso8601",
			"--zap-stacktrace-level=panic",
		}, extra...)...,
	)
	return err
}

// runAgent waits for the manager to install the agent's ServiceAccount in a
// kubeconfig target, then runs `drover agent` with that ServiceAccount's token.
func (d *dev) runAgent(ctx context.Context, t *target) {
	tag := "agent " + t.name
	raw, err := agentKubeconfig(ctx, t.cp.Config, t.cp.Kubeconfig(), func() {
		d.con.tagf(tag, colorAgent, "waiting for the manager to install the agent (ServiceAccount %s/drover-agent)", namespace)
	})
	if err != nil {
		if ctx.Err() == nil {
			d.con.tagf(tag, colorWarn, "cannot run the agent: %v", err)
		}
		return
	}
	// The manifest the manager installs runs the agent with --cluster-name.
	d.startAgent(ctx, t, raw, "--cluster-name="+t.name)
}

// startAgent writes the agent's kubeconfig and starts `drover agent` with it, args
// and console-encoded logs.
func (d *dev) startAgent(ctx context.Context, t *target, kubeconfig []byte, args ...string) {
	tag := "agent " + t.name
	path := filepath.Join(d.dir, t.name+"-agent.kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		d.con.tagf(tag, colorWarn, "cannot run the agent: %v", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	args = append([]string{"agent", "--kubeconfig=" + path}, args...)
	args = append(args, "--zap-encoder=console", "--zap-time-encoding=iso8601", "--zap-stacktrace-level=panic")
	p, err := startProc(tag, d.logFile(tag), d.con.writer(tag, colorAgent), d.exited, d.drover, args...)
	if err != nil {
		d.con.tagf(tag, colorWarn, "%v", err)
		return
	}
	d.agents = append(d.agents, p)
}

// down stops everything, Drover's processes first so that they do not log the
// control planes going away, then kwok, then the control planes.
func (d *dev) down() {
	d.mu.Lock()
	procs := append([]*proc(nil), d.agents...)
	d.agents = nil
	d.mu.Unlock()
	if d.manager != nil {
		procs = append(procs, d.manager)
	}
	stopAll(procs, 10*time.Second)
	if d.hostSet != nil {
		// Everything in the hosts goes with them: node agents, etcd, kubelet, pods.
		if err := d.hostSet.Close(); err != nil {
			d.con.tagf(provisionedName, colorWarn, "tearing the hosts down: %v", err)
		}
	}
	stopAll(d.kwoks, 5*time.Second)
	var wg sync.WaitGroup
	cps := []*controlplane.ControlPlane{d.hub}
	for _, t := range d.targets {
		cps = append(cps, t.cp)
	}
	for _, cp := range cps {
		if cp == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cp.Stop(); err != nil {
				d.con.tagf(cp.Name, colorWarn, "stop: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, f := range d.logs {
		_ = f.Close()
	}
	// The kubeconfigs point at servers that are gone now; keep the logs.
	entries, _ := os.ReadDir(d.dir)
	for _, e := range entries {
		if e.Name() != "logs" && e.Name() != "lock" {
			_ = os.RemoveAll(filepath.Join(d.dir, e.Name()))
		}
	}
}

func stopAll(ps []*proc, grace time.Duration) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(grace) }()
	}
	wg.Wait()
}

// banner tells the user what runs and what to try.
func (d *dev) banner(ready string) {
	var b strings.Builder
	hub := d.kubeconfigPath("hub")
	var kube, tunnelled []*target
	kubeconfigs := []string{d.rel(hub)}
	for _, t := range d.targets {
		if t.tunnel {
			tunnelled = append(tunnelled, t)
		} else {
			kube = append(kube, t)
		}
		kubeconfigs = append(kubeconfigs, d.rel(d.kubeconfigPath(t.name)))
	}
	first, last := kube[0], kube[len(kube)-1]
	t1, tl := d.rel(d.kubeconfigPath(first.name)), d.rel(d.kubeconfigPath(last.name))
	fmt.Fprintf(&b, "\nDrover is running locally: %s.\n\n", ready)
	fmt.Fprintf(&b, "Point kubectl at the hub:\n\n  export KUBECONFIG=%s\n\n", hub)
	fmt.Fprintf(&b, "Then try, from %s:\n\n", d.root)
	fmt.Fprintf(&b, "  kubectl get managedclusters -o wide\n")
	fmt.Fprintf(&b, "  kubectl get drover\n")
	fmt.Fprintf(&b, "  kubectl describe managedcluster %s\n", first.name)
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s get nodes\n", t1)
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s -n drover-system get lease drover-agent\n", t1)
	fmt.Fprintf(&b, "\n  # The sample AccessBindings, as RBAC in the targets. developers-view: view on every cluster\n")
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s auth can-i list pods --as jane --as-group developers\n", tl)
	fmt.Fprintf(&b, "  # sre-view-prod: view on env=prod clusters, so yes on %s and no on %s\n", first.name, last.name)
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s auth can-i list pods --as bob --as-group sre\n", t1)
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s auth can-i list pods --as bob --as-group sre\n", tl)
	fmt.Fprintf(&b, "  # payments-devs: project-member in the namespaces of ClusterProject payments (env=prod)\n")
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s auth can-i create deployments -n payments-api --as alice@example.com\n", t1)
	for _, l := range d.proxyLines {
		fmt.Fprintln(&b, l)
	}
	if len(tunnelled) > 0 {
		e := tunnelled[0]
		e1 := d.rel(d.kubeconfigPath(e.name))
		fmt.Fprintf(&b, "\n  # %s (agent tunnel): registered with spec.registration; the hub has no kubeconfig for it and\n", e.name)
		fmt.Fprintf(&b, "  # reaches its API server only through the tunnel its agent opened\n")
		fmt.Fprintf(&b, "  kubectl get managedcluster %s -o jsonpath='{.spec}{\"\\n\"}{.status.registration.command}{\"\\n\"}'\n", e.name)
		fmt.Fprintf(&b, "  kubectl --kubeconfig %s -n drover-system get secrets,deployments\n", e1)
		if e.labels["env"] == "prod" {
			fmt.Fprintf(&b, "  # it is env=prod: sre-view-prod and ClusterProject payments reach it through the tunnel\n")
			fmt.Fprintf(&b, "  kubectl --kubeconfig %s auth can-i list pods --as bob --as-group sre\n", e1)
			fmt.Fprintf(&b, "  kubectl --kubeconfig %s get namespaces -l app.kubernetes.io/managed-by=drover\n", e1)
		}
	}
	fmt.Fprintf(&b, "\nAdmin kubeconfigs: %s\n", strings.Join(kubeconfigs, ", "))
	fmt.Fprintf(&b, "Logs of every process: %s/ (the control planes' and kwok's only there)\n", d.rel(filepath.Join(d.dir, "logs")))
	if d.manager != nil {
		fmt.Fprintf(&b, "Manager: metrics http://%s/metrics, probes http://%s/readyz, hub server https://%s, admission webhook https://%s\n", d.metricsAddr, d.probesAddr, d.hubAddr, d.webhookAddr)
	}
	fmt.Fprintf(&b, "Ctrl-C stops everything.\n\n")
	d.con.raw(b.String())
}
