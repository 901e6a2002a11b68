// Package planner decides what every node of a provisioned cluster runs: from the
// cluster's settings, its registered nodes and what they report, it writes one node
// plan (package nodeplan) per node, tier by tier, as Rancher's planner does:
//
//  1. the init etcd node: a one-member etcd cluster;
//  2. the other etcd members, one at a time, each added to the cluster (etcdctl
//     member add, from the joining node) once every member before it is healthy;
//  3. the control planes (kube-apiserver, kube-controller-manager, kube-scheduler),
//     once every etcd member is healthy;
//  4. the workers (containerd and kubelet), once an API server is ready.
//
// It is a pure function of its input, so that it is table-tested and its plans are
// stable: the certificates it issues are returned for the caller to keep (in Secrets
// named after the cluster) and passed in again next time, and the order in which
// etcd members joined is state the caller keeps too (Input.Members). A plan changes
// only when something it depends on does, so nodes restart nothing for no reason.
package planner

import (
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drover-io/drover/nodeplan"
	"github.com/drover-io/drover/snapshotstore"
)

// Role is what a node does in the cluster.
type Role string

// Roles, in any combination.
const (
	RoleEtcd         Role = "etcd"
	RoleControlPlane Role = "control-plane"
	RoleWorker       Role = "worker"
)

// Tier is how far provisioning has come.
type Tier string

// Tiers, in order.
const (
	TierEtcdInit     Tier = "EtcdInit"
	TierEtcdJoin     Tier = "EtcdJoin"
	TierControlPlane Tier = "ControlPlane"
	TierWorkers      Tier = "Workers"
	TierReady        Tier = "Ready"
)

// Probe names the planner gives its probes; a node reports them by these names.
const (
	ProbeEtcd      = "etcd"
	ProbeAPIServer = "kube-apiserver"
	ProbeKubelet   = "kubelet"
)

// Defaults of a cluster's networks.
const (
	DefaultServiceCIDR = "10.96.0.0/12"
	DefaultPodCIDR     = "10.244.0.0/16"
	APIServerPort      = 6443
)

// Cluster is what the planner needs of a provisioned cluster.
type Cluster struct {
	Name string
	// KubernetesVersion of the components, e.g. v1.36.3: the directory of the
	// artifact source that holds them.
	KubernetesVersion string
	// ControlPlaneEndpoint is host:port of a load balancer in front of the API
	// servers; empty means the first control-plane node.
	ControlPlaneEndpoint string
	// ServiceCIDR and PodCIDR default to DefaultServiceCIDR and DefaultPodCIDR.
	ServiceCIDR, PodCIDR string
	// CertificatesGeneration is the generation the certificates are to be issued
	// for (spec.provisioning.rotateCertificates): nodes move to it a few at a time.
	CertificatesGeneration int64
	// ControlPlaneConcurrency is how many control-plane nodes (that are not etcd
	// members: those move one at a time) change at once (1 when 0).
	ControlPlaneConcurrency int
	// WorkerConcurrency is how many workers change at once: a number, or a
	// percentage of the workers ("25%" when empty).
	WorkerConcurrency string
}

// Node is a registered host.
type Node struct {
	// Name is the ClusterNode's name; Hostname the host's own.
	Name, Hostname string
	// Address is the IP other nodes and the hub reach it at.
	Address string
	Roles   []Role
	// AppliedChecksum is the checksum of the plan the node last applied in full.
	AppliedChecksum string
	// Healthy holds the probes the node reports healthy.
	Healthy map[string]bool
	// KubeletCgroupRoot is the cgroup kubelet puts pods under (empty: the root).
	KubeletCgroupRoot string
	// Version is the Kubernetes version the node is planned at, and
	// CertificatesGeneration the generation of its certificates; a node not planned
	// before ("") is planned at the cluster's. Output.Nodes says where each is now.
	Version                string
	CertificatesGeneration int64
	// Removing: the node is being taken out of the cluster (its ClusterNode is
	// being deleted). An etcd member is removed from etcd first (by another member);
	// then the node gets an empty plan.
	Removing bool
	// MemberRemoved: the node, being removed, is no longer an etcd member.
	MemberRemoved bool
}

func (n Node) has(r Role) bool { return slices.Contains(n.Roles, r) }

// Layout is where things live on a node. Production nodes use DefaultLayout; tests
// that run several nodes on one machine give each its own.
type Layout struct {
	// Bin holds the binaries (etcd, kube-apiserver, ...).
	Bin string
	// Etc holds configuration and certificates (Etc/pki/...).
	Etc string
	// Var holds the components' state (Var/etcd, Var/kubelet, ...).
	Var string
	// Run holds sockets.
	Run string
}

// DefaultLayout is where a provisioned host keeps Drover's components.
// Bin is the node agent's own bin directory (its data directory is /var/lib/drover),
// where it puts the artifacts it downloads.
var DefaultLayout = Layout{Bin: "/var/lib/drover/bin", Etc: "/etc/drover", Var: "/var/lib/drover-cluster", Run: "/run/drover"}

// Input is everything the planner decides from.
type Input struct {
	Cluster Cluster
	Nodes   []Node
	// Certs are the certificates issued before (Output.Certs).
	Certs map[string]KeyPair
	// Members are the etcd members in the order they joined (Output.Members).
	Members []string
	// LayoutOf returns a node's layout (DefaultLayout when nil).
	LayoutOf func(node string) Layout
	// Artifacts maps what the artifact source holds (<version>/<binary>) to its
	// sha256. When set, every plan downloads the binaries it runs from the source,
	// into Bin/<version>/; when nil, the binaries are taken to be in Bin already.
	Artifacts map[string]string
	// ArtifactsURL, when set, is a mirror the nodes download from (URL/<name>);
	// else the hub serves the artifacts.
	ArtifactsURL string
	// Now is the time certificates are checked and issued at.
	Now time.Time
	// Reached is the furthest tier reached before (Output.Tier, kept by the
	// caller). Once a tier is reached its components stay planned whatever their
	// health: an unhealthy etcd member never takes the API servers down with it.
	Reached Tier
	// Snapshot asks a node to take an etcd snapshot.
	Snapshot *Snapshot
	// Restore restores an etcd snapshot.
	Restore *Restore
	// Hold: no node moves to another version or certificate generation now
	// (another day-2 operation is under way).
	Hold bool
	// Drain: a worker moves only once it is drained (Drained); the rollout names
	// the workers it waits to have drained (Rollout.Drain).
	Drain   bool
	Drained map[string]bool
}

// Snapshot is an etcd snapshot to take.
type Snapshot struct {
	// Name of the snapshot; the file is <Layout.Var>/etcd-snapshots/<Name>.db.
	Name string
	// Node takes it: an etcd member.
	Node string
	// Retention is how many snapshot files the node keeps (the newest), and, with
	// S3, how many of the cluster's snapshots the storage's folder keeps.
	Retention int
	// S3, when set, is where the node also stores the snapshot. Its credentials
	// reach the node in a file of its plan (S3ConfigPath, mode 0600) for as long
	// as the snapshot is in the plan.
	S3 *snapshotstore.Config
}

// Restore phases.
const (
	// RestoreDownload has the node that will restore a snapshot stored in S3
	// download and check it, while everything still runs: a snapshot that cannot
	// be had fails the restore before anything is stopped.
	RestoreDownload = "DownloadSnapshot"
	// RestoreStop stops every etcd member and control plane.
	RestoreStop = "StopControlPlane"
	// RestoreEtcd restores the snapshot on the node that holds it, as a one-member
	// cluster; the other members set their data aside and join it again one by one,
	// then the control planes start again.
	RestoreEtcd = "RestoreEtcd"
)

// Restore is an etcd snapshot to restore.
type Restore struct {
	Generation int64
	Phase      string
	// Node holds the snapshot, at Path; it becomes the first member.
	Node, Path string
	// Name of the snapshot.
	Name string
	// S3, when set, holds the snapshot: Node downloads it (to DownloadPath) in
	// the RestoreDownload phase, and restores that file.
	S3 *snapshotstore.Config
}

// SnapshotPath is where a node keeps the named snapshot.
func SnapshotPath(l Layout, name string) string { return l.Var + "/etcd-snapshots/" + name + ".db" }

// DownloadPath is where a node keeps a snapshot it downloads to restore it.
func DownloadPath(l Layout, name string) string { return l.Var + "/etcd-restore/" + name + ".db" }

// S3ConfigPath is the file of a node's plan that holds the S3 storage's address
// and credentials during a snapshot or a restore.
func S3ConfigPath(l Layout) string { return l.Etc + "/etcd-snapshot-s3.json" }

// Output is the planner's decision.
type Output struct {
	// Plans holds every node's plan (an empty plan for a node whose tier has not
	// come yet).
	Plans map[string]*nodeplan.Plan
	// Checksums are the plans', as published.
	Checksums map[string]string
	// Encoded are the plans' bytes, as published.
	Encoded map[string][]byte
	// Certs are all certificates; CertsChanged says whether any was issued.
	Certs        map[string]KeyPair
	CertsChanged bool
	// CertificatesExpire is the earliest end of the leaf certificates the plans
	// (and the hub's admin kubeconfig) use; zero before any is issued.
	CertificatesExpire time.Time
	// Members are the etcd members in join order, including one joining now.
	Members []string
	// Tier is the tier being worked on; Waiting says for what, naming the node and
	// the probe (empty when Ready).
	Tier    Tier
	Waiting string
	// Server is the URL of the API server, and AdminKubeconfig a kubeconfig for it
	// as cluster-admin, once the control-plane tier has started.
	Server          string
	AdminKubeconfig []byte
	// Problems are things wrong with the input that need a person (no etcd node,
	// two nodes with one hostname, ...). The planner then changes no plan.
	Problems []string
	// Nodes are the version and certificate generation each node is planned at
	// now: the caller keeps them (before it publishes the plans) and passes them in
	// again.
	Nodes map[string]NodeState
	// Rollout describes the upgrade or certificate rotation under way, if one is.
	Rollout *Rollout
	// Stopped: every etcd member and control plane has applied a plan without them
	// (RestoreStop). Settled: every node runs its whole plan and is healthy.
	Stopped, Settled bool
	// MemberRemoval is the node whose plan removes a leaving member from etcd.
	MemberRemoval string
	// Reached is the furthest tier reached so far (Input.Reached and Tier): the
	// caller keeps it.
	Reached Tier
}

// NodeState is what a node is planned at.
type NodeState struct {
	Version                string
	CertificatesGeneration int64
}

// Plan decides every node's plan. Nodes that are planned at another version or
// certificate generation than the cluster's move to it a few at a time (see
// rollout), and the plans are decided again with the nodes that moved.
func Plan(in Input) (*Output, error) {
	in.Nodes = slices.Clone(in.Nodes)
	for i := range in.Nodes {
		if in.Nodes[i].Version == "" {
			in.Nodes[i].Version = in.Cluster.KubernetesVersion
			in.Nodes[i].CertificatesGeneration = in.Cluster.CertificatesGeneration
		}
	}
	// The version the nodes move to must be in the artifact source before any moves.
	if in.Artifacts != nil {
		var problems []string
		seen := map[string]bool{}
		for _, n := range in.Nodes {
			for _, r := range n.Roles {
				for _, name := range binariesOf[r] {
					key := in.Cluster.KubernetesVersion + "/" + name
					if _, ok := in.Artifacts[key]; !ok && !seen[key] {
						seen[key] = true
						problems = append(problems, fmt.Sprintf("the artifact source has no %s: add Kubernetes %s's binaries to it, or choose a version it has",
							key, in.Cluster.KubernetesVersion))
					}
				}
			}
		}
		if len(problems) > 0 {
			slices.Sort(problems)
			return &Output{Plans: map[string]*nodeplan.Plan{}, Checksums: map[string]string{}, Encoded: map[string][]byte{}, Problems: problems}, nil
		}
	}
	out, err := plan(in)
	if err != nil || len(out.Problems) > 0 {
		return out, err
	}
	var moved map[string]bool
	var ro *Rollout
	if !in.Hold {
		moved, ro = rollout(in, out)
	}
	if len(moved) > 0 {
		for i := range in.Nodes {
			if moved[in.Nodes[i].Name] {
				in.Nodes[i].Version = in.Cluster.KubernetesVersion
				in.Nodes[i].CertificatesGeneration = in.Cluster.CertificatesGeneration
			}
		}
		// The certificates issued in the first pass are kept.
		in.Certs = out.Certs
		changed := out.CertsChanged
		if out, err = plan(in); err != nil || len(out.Problems) > 0 {
			return out, err
		}
		out.CertsChanged = out.CertsChanged || changed
	}
	out.Rollout = ro
	out.Reached = in.Reached
	if !reached(in.Reached, out.Tier) {
		out.Reached = out.Tier
	}
	out.Nodes = map[string]NodeState{}
	for _, n := range in.Nodes {
		out.Nodes[n.Name] = NodeState{Version: n.Version, CertificatesGeneration: n.CertificatesGeneration}
	}
	return out, nil
}

// tierOrder ranks the tiers.
var tierOrder = map[Tier]int{TierEtcdInit: 0, TierEtcdJoin: 1, TierControlPlane: 2, TierWorkers: 3, TierReady: 4}

func reached(r, t Tier) bool { return tierOrder[r] >= tierOrder[t] }

// plan decides every node's plan once, with the nodes where they are.
func plan(in Input) (*Output, error) {
	out := &Output{Plans: map[string]*nodeplan.Plan{}, Checksums: map[string]string{}, Encoded: map[string][]byte{}}
	if in.LayoutOf == nil {
		in.LayoutOf = func(string) Layout { return DefaultLayout }
	}
	if in.Cluster.ServiceCIDR == "" {
		in.Cluster.ServiceCIDR = DefaultServiceCIDR
	}
	if in.Cluster.PodCIDR == "" {
		in.Cluster.PodCIDR = DefaultPodCIDR
	}
	nodes := slices.Clone(in.Nodes)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	out.Problems = check(nodes)
	byName := map[string]Node{}
	var etcd, cps, workers []Node
	for _, n := range nodes {
		byName[n.Name] = n
		if n.Removing && (n.MemberRemoved || !n.has(RoleEtcd) || !slices.Contains(in.Members, n.Name)) {
			continue // leaving: an empty plan
		}
		if n.has(RoleEtcd) {
			etcd = append(etcd, n)
		}
		if n.has(RoleControlPlane) && !n.Removing {
			cps = append(cps, n)
		}
		if n.has(RoleWorker) && !n.Removing {
			workers = append(workers, n)
		}
	}
	if len(etcd) == 0 {
		out.Problems = append(out.Problems, "no node has the etcd role")
	}
	if len(cps) == 0 {
		out.Problems = append(out.Problems, "no node has the control-plane role")
	}
	if in.Artifacts != nil {
		missing := map[string]bool{}
		for _, n := range nodes {
			for _, r := range n.Roles {
				for _, name := range binariesOf[r] {
					key := n.Version + "/" + name
					if _, ok := in.Artifacts[key]; !ok && !missing[key] {
						missing[key] = true
						out.Problems = append(out.Problems, fmt.Sprintf("the artifact source has no %s: add Kubernetes %s's binaries to it, or choose a version it has",
							key, n.Version))
					}
				}
			}
		}
	}
	if len(out.Problems) > 0 {
		return out, nil
	}
	p := newPKI(in.Certs, in.Now)
	b := &builder{in: in, pki: p, byName: byName, plans: map[string]*nodeplan.Plan{}}
	for _, n := range nodes {
		b.plans[n.Name] = &nodeplan.Plan{}
	}
	wait := func(w string) {
		if out.Waiting == "" {
			out.Waiting = w
		}
	}

	// Members: keep those that still exist, in their order; the first etcd node (by
	// name) starts the cluster when there is none. A restore starts again from the
	// node that holds the snapshot.
	for _, m := range in.Members {
		if slices.ContainsFunc(etcd, func(n Node) bool { return n.Name == m }) {
			out.Members = append(out.Members, m)
		}
	}
	restore := in.Restore
	if restore != nil && restore.Phase == RestoreDownload {
		restore = nil // nothing stops while the snapshot is downloaded (finish adds that)
	}
	if restore != nil && restore.Phase == RestoreEtcd {
		// The caller starts the phase with the restored member alone, and keeps the
		// members from then on; members that do not start with it are from before.
		if len(out.Members) == 0 || out.Members[0] != restore.Node {
			out.Members = []string{restore.Node}
		}
		for _, n := range etcd {
			if n.Name != restore.Node {
				b.resetEtcd(n, restore.Generation)
			}
		}
	}
	if len(out.Members) == 0 {
		out.Members = []string{etcd[0].Name}
	}
	if restore != nil && restore.Phase == RestoreEtcd {
		if err := b.restoreEtcd(byName[restore.Node], restore); err != nil {
			return nil, err
		}
	}
	// Once the control planes have been planned they stay planned (but for a
	// restore, which starts them again once etcd is whole); workers stay planned
	// once planned, whatever happens to the API servers.
	cpReached := reached(in.Reached, TierControlPlane) && (restore == nil || restore.Phase == RestoreStop)
	workersReached := reached(in.Reached, TierWorkers)

	// The members so far get their etcd plans; the next etcd node joins once every
	// member is healthy on its current plan.
	out.Tier = TierEtcdInit
	if len(out.Members) > 1 {
		out.Tier = TierEtcdJoin
	}
	for i, m := range out.Members {
		if err := b.etcd(byName[m], out.Members[:i+1]); err != nil {
			return nil, err
		}
	}
	etcdWhole := true
	for {
		if w := b.waitFor(out.Members, ProbeEtcd); w != "" {
			wait(w)
			etcdWhole = false
			break
		}
		next := ""
		for _, n := range etcd {
			if !slices.Contains(out.Members, n.Name) {
				next = n.Name
				break
			}
		}
		if next == "" {
			break
		}
		out.Members = append(out.Members, next)
		out.Tier = TierEtcdJoin
		if err := b.etcd(byName[next], out.Members); err != nil {
			return nil, err
		}
		etcdWhole = false
	}
	b.removeMembers(nodes, out)

	// Control planes, once etcd is whole (or once they have been planned). Workers
	// that have been planned stay planned meanwhile, whatever else waits.
	server := "https://" + hostPort(cps[0].Address, APIServerPort)
	if in.Cluster.ControlPlaneEndpoint != "" {
		server = "https://" + in.Cluster.ControlPlaneEndpoint
	}
	cpsPlanned := etcdWhole || cpReached
	var cpNames []string
	ready := ""
	if cpsPlanned {
		out.Tier = TierControlPlane
		endpoints := make([]string, 0, len(out.Members))
		for _, m := range out.Members {
			endpoints = append(endpoints, "https://"+hostPort(byName[m].Address, 2379))
		}
		for _, n := range cps {
			eps := endpoints
			if slices.Contains(out.Members, n.Name) {
				// A stacked control plane talks to its own member only, as kubeadm's
				// do: adding or removing another member then restarts no API server,
				// where a shared list would restart them all at once.
				eps = []string{"https://" + hostPort(n.Address, 2379)}
			}
			if err := b.controlPlane(n, eps); err != nil {
				return nil, err
			}
			cpNames = append(cpNames, n.Name)
		}
		out.Server = server
		admin, err := b.adminKubeconfig(server)
		if err != nil {
			return nil, err
		}
		out.AdminKubeconfig = admin
		// Workers wait for one API server; Ready waits for them all.
		for _, n := range cps {
			if b.healthy(n.Name, ProbeAPIServer) {
				ready = n.Name
				break
			}
		}
	}
	if ready == "" && !workersReached {
		if cpsPlanned {
			wait(b.waitFor(cpNames[:1], ProbeAPIServer))
		}
		return b.finish(out, in)
	}
	var workerNames []string
	for _, n := range workers {
		if err := b.worker(n, server); err != nil {
			return nil, err
		}
		workerNames = append(workerNames, n.Name)
	}
	if !cpsPlanned {
		return b.finish(out, in) // the tier is etcd's: Waiting says for what
	}
	out.Tier = TierWorkers
	wait(b.waitFor(cpNames, ProbeAPIServer))
	wait(b.waitFor(workerNames, ProbeKubelet))
	if out.Waiting != "" {
		return b.finish(out, in)
	}
	out.Tier = TierReady
	done, err := b.finish(out, in)
	if err != nil {
		return nil, err
	}
	// Ready when every node runs its whole plan.
	for _, n := range nodes {
		if n.AppliedChecksum != done.Checksums[n.Name] {
			done.Tier, done.Waiting = TierWorkers, fmt.Sprintf("node %s to apply its plan", n.Name)
			break
		}
	}
	return done, nil
}

// binariesOf lists the binaries a role runs from the artifact source (containerd and
// ctr are the host's own, from its packages).
var binariesOf = map[Role][]string{
	RoleEtcd:         {"etcd", "etcdctl"},
	RoleControlPlane: {"kube-apiserver", "kube-controller-manager", "kube-scheduler"},
	RoleWorker:       {"kubelet", "kube-proxy"},
}

// bin returns the path of a binary on a node, adding its download to the node's
// plan when the binaries come from the artifact source.
func (b *builder) bin(node, name string) string {
	l := b.layout(node)
	if b.in.Artifacts == nil {
		return l.Bin + "/" + name
	}
	src := b.byName[node].Version + "/" + name
	p := b.plans[node]
	if !slices.ContainsFunc(p.Artifacts, func(a nodeplan.Artifact) bool { return a.Name == src }) {
		p.Artifacts = append(p.Artifacts, nodeplan.Artifact{Name: src, SHA256: b.in.Artifacts[src], URL: b.artifactURL(src)})
	}
	return l.Bin + "/" + src
}

// artifactURL is where a node downloads an artifact from a mirror, or "" for the hub.
func (b *builder) artifactURL(name string) string {
	if b.in.ArtifactsURL == "" {
		return ""
	}
	return strings.TrimSuffix(b.in.ArtifactsURL, "/") + "/" + name
}

// check reports node problems that stop planning.
func check(nodes []Node) []string {
	var out []string
	seen := map[string]string{}
	addrs := map[string]string{}
	for _, n := range nodes {
		if n.Hostname == "" || n.Address == "" || net.ParseIP(n.Address) == nil {
			out = append(out, fmt.Sprintf("node %s: hostname %q and address %q must both be set, the address an IP", n.Name, n.Hostname, n.Address))
			continue
		}
		if other, ok := seen[n.Hostname]; ok {
			out = append(out, fmt.Sprintf("nodes %s and %s have the same hostname %q; every node needs its own", other, n.Name, n.Hostname))
		}
		seen[n.Hostname] = n.Name
		if other, ok := addrs[n.Address]; ok {
			out = append(out, fmt.Sprintf("nodes %s and %s have the same address %s", other, n.Name, n.Address))
		}
		addrs[n.Address] = n.Name
		if len(n.Roles) == 0 {
			out = append(out, fmt.Sprintf("node %s has no role", n.Name))
		}
	}
	return out
}

// builder accumulates the plans of one decision.
type builder struct {
	in     Input
	pki    *pki
	byName map[string]Node
	plans  map[string]*nodeplan.Plan
}

// healthy: the node reports the probe healthy. Tiers are gated on the health of the
// components they need, never on a node having applied its whole plan so far: a
// node's plan grows as tiers are reached (an etcd node that is also a control plane
// gets kube-apiserver later), and gating on it would take the growth back.
func (b *builder) healthy(name, probe string) bool {
	return b.byName[name].Healthy[probe]
}

// waitFor says what the first of names that is not healthy waits for, or "".
func (b *builder) waitFor(names []string, probe string) string {
	for _, name := range names {
		n := b.byName[name]
		switch {
		case n.AppliedChecksum == "":
			return fmt.Sprintf("node %s to apply its first plan", name)
		case !n.Healthy[probe]:
			return fmt.Sprintf("node %s: probe %s to be healthy", name, probe)
		}
	}
	return ""
}

func (b *builder) finish(out *Output, in Input) (*Output, error) {
	if in.Snapshot != nil {
		if err := b.snapshot(*in.Snapshot); err != nil {
			return nil, err
		}
	}
	if in.Restore != nil && in.Restore.Phase == RestoreDownload {
		if err := b.downloadSnapshot(*in.Restore); err != nil {
			return nil, err
		}
	}
	if in.Restore != nil && in.Restore.Phase == RestoreStop {
		b.stopControlPlanes()
	}
	// Components read their certificates when they start: after a rotation each
	// process of the node starts again, with its new ones (containerd has none).
	for name, p := range b.plans {
		if g := b.byName[name].CertificatesGeneration; g > 0 {
			for i := range p.Processes {
				if p.Processes[i].Name != "containerd" {
					p.Processes[i].Env = append(p.Processes[i].Env, fmt.Sprintf("DROVER_CERTIFICATES_GENERATION=%d", g))
				}
			}
		}
	}
	out.Settled, out.Stopped = true, true
	for name, p := range b.plans {
		data, sum, err := nodeplan.Encode(p)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
		out.Plans[name], out.Encoded[name], out.Checksums[name] = p, data, sum
		n := b.byName[name]
		if !settled(n, p, sum) {
			out.Settled = false
		}
		if (n.has(RoleEtcd) || n.has(RoleControlPlane)) && n.AppliedChecksum != sum {
			out.Stopped = false
		}
	}
	out.Certs, out.CertsChanged, out.CertificatesExpire = b.pki.certs, b.pki.changed, b.pki.expires
	return out, nil
}

func (b *builder) layout(name string) Layout { return b.in.LayoutOf(name) }

// leaf issues a certificate for node n at the node's certificate generation.
// Certificates that nodes share (shared) become the node's own once its generation
// is past 0, so that a rotation reaches one node at a time.
func (b *builder) leaf(n Node, name string, shared bool, spec certSpec) (KeyPair, error) {
	spec.generation = n.CertificatesGeneration
	if shared && n.CertificatesGeneration > 0 {
		name += "." + n.Name
	}
	return b.pki.leaf(name, spec)
}

// file adds a file to a node's plan.
func (b *builder) file(name, path string, content []byte, mode uint32) {
	p := b.plans[name]
	for _, f := range p.Files {
		if f.Path == path {
			return
		}
	}
	p.Files = append(p.Files, nodeplan.File{Path: path, Content: content, Mode: mode})
}

// keyPair writes a certificate and its key as <dir>/<base>.crt and .key.
func (b *builder) keyPair(name, dir, base string, kp KeyPair) (crt, key string) {
	crt, key = dir+"/"+base+".crt", dir+"/"+base+".key"
	b.file(name, crt, kp.Cert, 0o644)
	b.file(name, key, kp.Key, 0o600)
	return crt, key
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }

// nodeNames returns the names a node's serving certificates are for.
func nodeNames(n Node) ([]string, []net.IP) {
	return []string{n.Hostname, "localhost"}, []net.IP{net.ParseIP(n.Address), net.ParseIP("127.0.0.1")}
}

// etcd adds the etcd member to a node's plan. members are the members up to and
// including this one, in join order: the first starts a new cluster, the others are
// added to it by an instruction that runs on the joining node.
func (b *builder) etcd(n Node, members []string) error {
	l := b.layout(n.Name)
	ca, _, _, err := b.pki.ca(EtcdCA)
	if err != nil {
		return err
	}
	dns, ips := nodeNames(n)
	server, err := b.leaf(n, "etcd-server-"+n.Name, false, certSpec{ca: EtcdCA, commonName: n.Hostname, dns: dns, ips: ips, server: true, client: true})
	if err != nil {
		return err
	}
	peer, err := b.leaf(n, "etcd-peer-"+n.Name, false, certSpec{ca: EtcdCA, commonName: n.Hostname, dns: dns, ips: ips, server: true, client: true})
	if err != nil {
		return err
	}
	client, err := b.leaf(n, "etcd-healthcheck-client", true, certSpec{ca: EtcdCA, commonName: "drover-etcd-healthcheck", client: true})
	if err != nil {
		return err
	}
	pki := l.Etc + "/pki/etcd"
	b.file(n.Name, pki+"/ca.crt", ca.Cert, 0o644)
	serverCrt, serverKey := b.keyPair(n.Name, pki, "server", server)
	peerCrt, peerKey := b.keyPair(n.Name, pki, "peer", peer)
	clientCrt, clientKey := b.keyPair(n.Name, pki, "healthcheck-client", client)

	var initial []string
	for _, m := range members {
		mn := b.byName[m]
		initial = append(initial, mn.Hostname+"=https://"+hostPort(mn.Address, 2380))
	}
	state := "new"
	peerURL := "https://" + hostPort(n.Address, 2380)
	clientURL := "https://" + hostPort(n.Address, 2379)
	p := b.plans[n.Name]
	if len(members) > 1 {
		state = "existing"
		var endpoints []string
		for _, m := range members[:len(members)-1] {
			endpoints = append(endpoints, "https://"+hostPort(b.byName[m].Address, 2379))
		}
		etcdctl := fmt.Sprintf("%s --endpoints=%s --cacert=%s --cert=%s --key=%s --command-timeout=10s",
			b.bin(n.Name, "etcdctl"), strings.Join(endpoints, ","), pki+"/ca.crt", clientCrt, clientKey)
		// Idempotent: a member already added (the instruction ran, then the node
		// agent restarted before recording it) is not added twice. etcd refuses to
		// add a member until the last one added has been connected for a few
		// seconds ("unhealthy cluster"), so the script tries for half a minute.
		// The member list is read serializably, from the member asked: a node
		// that is a member already must not need a leader to find itself. When
		// the members change (one leaves) this instruction runs again, before the
		// node's etcd starts again, and etcd may have no leader until it does.
		script := fmt.Sprintf("for i in $(seq 30); do %s member list --consistency=s | grep -q -F '%s' && exit 0; %s member add %s --peer-urls=%s && exit 0; sleep 1; done; exit 1",
			etcdctl, peerURL, etcdctl, n.Hostname, peerURL)
		add := nodeplan.Instruction{Name: "etcd-member-add",
			Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script}}, Timeout: nodeplan.Duration{Duration: time.Minute}}
		if r := b.in.Restore; r != nil && r.Phase == RestoreEtcd {
			// During a restore the member joins anew: the instruction runs again.
			// (Never while etcd is stopped: it would fail and block the plan.)
			add.Env = []string{fmt.Sprintf("DROVER_RESTORE=%d", r.Generation)}
		}
		p.Instructions = append(p.Instructions, add)
	}
	p.Processes = append(p.Processes, nodeplan.Process{Name: "etcd", Command: nodeplan.Command{Path: b.bin(n.Name, "etcd"), Args: []string{
		"--name=" + n.Hostname,
		"--data-dir=" + l.Var + "/etcd",
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + strings.Join(initial, ","),
		"--initial-cluster-state=" + state,
		"--initial-cluster-token=" + b.in.Cluster.Name,
		"--listen-metrics-urls=http://" + hostPort(n.Address, 2381),
		"--client-cert-auth", "--trusted-ca-file=" + pki + "/ca.crt", "--cert-file=" + serverCrt, "--key-file=" + serverKey,
		"--peer-client-cert-auth", "--peer-trusted-ca-file=" + pki + "/ca.crt", "--peer-cert-file=" + peerCrt, "--peer-key-file=" + peerKey,
		"--snapshot-count=10000",
	}}})
	p.Probes = append(p.Probes, nodeplan.Probe{Name: ProbeEtcd, HTTPGet: &nodeplan.HTTPGet{
		URL: clientURL + "/health", CAFile: pki + "/ca.crt", CertFile: clientCrt, KeyFile: clientKey},
		Period: nodeplan.Duration{Duration: 2 * time.Second}, Timeout: nodeplan.Duration{Duration: 5 * time.Second}, FailureThreshold: 3})
	return nil
}

// serviceIP is the first address of the service range: the kubernetes Service's.
func serviceIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", cidr, err)
	}
	ip := slices.Clone(n.IP.To4())
	if ip == nil {
		return nil, fmt.Errorf("service CIDR %q: only IPv4 is supported", cidr)
	}
	ip[3]++
	return ip, nil
}

// kubeconfig renders a kubeconfig with a client certificate.
func kubeconfig(cluster, server string, ca []byte, user string, kp KeyPair) []byte {
	b64 := encodeB64
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]s
    certificate-authority-data: %[3]s
users:
- name: %[4]s
  user:
    client-certificate-data: %[5]s
    client-key-data: %[6]s
contexts:
- name: %[4]s@%[1]s
  context: {cluster: %[1]s, user: %[4]s}
current-context: %[4]s@%[1]s
`, cluster, server, b64(ca), user, b64(kp.Cert), b64(kp.Key)))
}

// controlPlane adds kube-apiserver, kube-controller-manager and kube-scheduler.
func (b *builder) controlPlane(n Node, etcdEndpoints []string) error {
	l := b.layout(n.Name)
	c := b.in.Cluster
	ca, _, _, err := b.pki.ca(KubernetesCA)
	if err != nil {
		return err
	}
	fp, _, _, err := b.pki.ca(FrontProxyCA)
	if err != nil {
		return err
	}
	etcdCA, _, _, err := b.pki.ca(EtcdCA)
	if err != nil {
		return err
	}
	sa, err := b.pki.serviceAccountKey()
	if err != nil {
		return err
	}
	svcIP, err := serviceIP(c.ServiceCIDR)
	if err != nil {
		return err
	}
	dns := []string{n.Hostname, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
	ips := []net.IP{net.ParseIP(n.Address), svcIP, net.ParseIP("127.0.0.1")}
	if host, _, err := net.SplitHostPort(c.ControlPlaneEndpoint); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, host)
		}
	}
	apiserver, err := b.leaf(n, "apiserver-"+n.Name, false, certSpec{ca: KubernetesCA, commonName: "kube-apiserver", dns: dns, ips: ips, server: true})
	if err != nil {
		return err
	}
	etcdClient, err := b.leaf(n, "apiserver-etcd-client", true, certSpec{ca: EtcdCA, commonName: "kube-apiserver-etcd-client", client: true})
	if err != nil {
		return err
	}
	kubeletClient, err := b.leaf(n, "apiserver-kubelet-client", true, certSpec{ca: KubernetesCA, commonName: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	proxyClient, err := b.leaf(n, "front-proxy-client", true, certSpec{ca: FrontProxyCA, commonName: "front-proxy-client", client: true})
	if err != nil {
		return err
	}
	cm, err := b.leaf(n, "controller-manager", true, certSpec{ca: KubernetesCA, commonName: "system:kube-controller-manager", client: true})
	if err != nil {
		return err
	}
	sched, err := b.leaf(n, "scheduler", true, certSpec{ca: KubernetesCA, commonName: "system:kube-scheduler", client: true})
	if err != nil {
		return err
	}
	caKP := b.pki.certs[KubernetesCA]
	pki := l.Etc + "/pki"
	b.file(n.Name, pki+"/ca.crt", ca.Cert, 0o644)
	b.file(n.Name, pki+"/ca.key", caKP.Key, 0o600)
	b.file(n.Name, pki+"/front-proxy-ca.crt", fp.Cert, 0o644)
	b.file(n.Name, pki+"/etcd/ca.crt", etcdCA.Cert, 0o644)
	b.file(n.Name, pki+"/sa.pub", sa.Cert, 0o644)
	b.file(n.Name, pki+"/sa.key", sa.Key, 0o600)
	apiCrt, apiKey := b.keyPair(n.Name, pki, "apiserver", apiserver)
	ecCrt, ecKey := b.keyPair(n.Name, pki, "apiserver-etcd-client", etcdClient)
	kcCrt, kcKey := b.keyPair(n.Name, pki, "apiserver-kubelet-client", kubeletClient)
	pcCrt, pcKey := b.keyPair(n.Name, pki, "front-proxy-client", proxyClient)
	local := "https://" + hostPort(n.Address, APIServerPort)
	cmKubeconfig, schedKubeconfig := l.Etc+"/controller-manager.conf", l.Etc+"/scheduler.conf"
	b.file(n.Name, cmKubeconfig, kubeconfig(c.Name, local, ca.Cert, "system:kube-controller-manager", cm), 0o600)
	b.file(n.Name, schedKubeconfig, kubeconfig(c.Name, local, ca.Cert, "system:kube-scheduler", sched), 0o600)

	p := b.plans[n.Name]
	p.Processes = append(p.Processes,
		nodeplan.Process{Name: "kube-apiserver", Command: nodeplan.Command{Path: b.bin(n.Name, "kube-apiserver"), Args: []string{
			"--advertise-address=" + n.Address,
			"--bind-address=" + n.Address,
			fmt.Sprintf("--secure-port=%d", APIServerPort),
			"--etcd-servers=" + strings.Join(etcdEndpoints, ","),
			"--etcd-cafile=" + pki + "/etcd/ca.crt", "--etcd-certfile=" + ecCrt, "--etcd-keyfile=" + ecKey,
			"--client-ca-file=" + pki + "/ca.crt",
			"--tls-cert-file=" + apiCrt, "--tls-private-key-file=" + apiKey,
			"--kubelet-client-certificate=" + kcCrt, "--kubelet-client-key=" + kcKey,
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + pki + "/sa.pub", "--service-account-signing-key-file=" + pki + "/sa.key",
			"--service-cluster-ip-range=" + c.ServiceCIDR,
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			"--requestheader-client-ca-file=" + pki + "/front-proxy-ca.crt",
			"--proxy-client-cert-file=" + pcCrt, "--proxy-client-key-file=" + pcKey,
			"--requestheader-allowed-names=front-proxy-client",
			"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
			"--requestheader-extra-headers-prefix=X-Remote-Extra-",
			"--profiling=false",
		}}},
		nodeplan.Process{Name: "kube-controller-manager", Command: nodeplan.Command{Path: b.bin(n.Name, "kube-controller-manager"), Args: []string{
			"--kubeconfig=" + cmKubeconfig, "--authentication-kubeconfig=" + cmKubeconfig, "--authorization-kubeconfig=" + cmKubeconfig,
			"--bind-address=" + n.Address,
			"--client-ca-file=" + pki + "/ca.crt", "--requestheader-client-ca-file=" + pki + "/front-proxy-ca.crt",
			"--cluster-name=" + c.Name,
			"--cluster-signing-cert-file=" + pki + "/ca.crt", "--cluster-signing-key-file=" + pki + "/ca.key",
			"--root-ca-file=" + pki + "/ca.crt",
			"--service-account-private-key-file=" + pki + "/sa.key",
			"--use-service-account-credentials=true",
			"--controllers=*,bootstrapsigner,tokencleaner",
			"--allocate-node-cidrs=true", "--cluster-cidr=" + c.PodCIDR, "--service-cluster-ip-range=" + c.ServiceCIDR,
			"--leader-elect=true",
			"--profiling=false",
		}}},
		nodeplan.Process{Name: "kube-scheduler", Command: nodeplan.Command{Path: b.bin(n.Name, "kube-scheduler"), Args: []string{
			"--kubeconfig=" + schedKubeconfig, "--authentication-kubeconfig=" + schedKubeconfig, "--authorization-kubeconfig=" + schedKubeconfig,
			"--bind-address=" + n.Address,
			"--leader-elect=true",
			"--profiling=false",
		}}},
	)
	p.Probes = append(p.Probes, nodeplan.Probe{Name: ProbeAPIServer, HTTPGet: &nodeplan.HTTPGet{
		URL: local + "/readyz", CAFile: pki + "/ca.crt"},
		Period: nodeplan.Duration{Duration: 2 * time.Second}, Timeout: nodeplan.Duration{Duration: 5 * time.Second}, FailureThreshold: 3})
	return nil
}

// adminKubeconfig is the hub's kubeconfig for the cluster, as cluster-admin.
func (b *builder) adminKubeconfig(server string) ([]byte, error) {
	ca, _, _, err := b.pki.ca(KubernetesCA)
	if err != nil {
		return nil, err
	}
	admin, err := b.pki.leaf("admin", certSpec{ca: KubernetesCA, commonName: "drover-admin", orgs: []string{"system:masters"}, client: true,
		generation: b.in.Cluster.CertificatesGeneration})
	if err != nil {
		return nil, err
	}
	return kubeconfig(b.in.Cluster.Name, server, ca.Cert, "drover-admin", admin), nil
}

// ProbeContainerd names the probe of a worker's container runtime.
const ProbeContainerd = "containerd"

// PauseImage is the sandbox image the container runtime uses. Provisioned hosts get
// it from the artifact source (images/*.tar under Bin), never from a registry.
const PauseImage = "registry.k8s.io/pause:3.10"

// worker adds containerd and, once it answers, the image import and kubelet. The
// kubelet gets a client certificate the hub issues (system:node:<hostname>), rather
// than joining with a bootstrap token: the hub already holds the cluster CA.
func (b *builder) worker(n Node, server string) error {
	l := b.layout(n.Name)
	c := b.in.Cluster
	ca, _, _, err := b.pki.ca(KubernetesCA)
	if err != nil {
		return err
	}
	sock := l.Run + "/containerd/containerd.sock"
	cniConf := l.Etc + "/cni/net.d"
	b.file(n.Name, l.Etc+"/containerd/config.toml", []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, l.Var+"/containerd", l.Run+"/containerd", sock, PauseImage, cniConf)), 0o644)
	p := b.plans[n.Name]
	p.Processes = append(p.Processes, nodeplan.Process{Name: "containerd", Command: nodeplan.Command{
		Path: "containerd", Args: []string{"--config=" + l.Etc + "/containerd/config.toml"}}})
	p.Probes = append(p.Probes, nodeplan.Probe{Name: ProbeContainerd,
		Exec:   &nodeplan.Command{Path: "ctr", Args: []string{"--address=" + sock, "version"}},
		Period: nodeplan.Duration{Duration: 2 * time.Second}, FailureThreshold: 3})
	if !b.healthy(n.Name, ProbeContainerd) {
		return nil
	}

	// The pod network of this node: a bridge with a /24 of the pod range taken from
	// the node's address, so that it is stable whatever other nodes come and go.
	podNet, err := nodePodCIDR(c.PodCIDR, n.Address)
	if err != nil {
		return err
	}
	b.file(n.Name, cniConf+"/10-drover-bridge.conflist", []byte(fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "drover",
  "plugins": [
    {"type": "bridge", "bridge": "drover0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, podNet)), 0o644)
	dns, ips := nodeNames(n)
	client, err := b.leaf(n, "kubelet-client-"+n.Name, false, certSpec{ca: KubernetesCA, commonName: "system:node:" + n.Hostname, orgs: []string{"system:nodes"}, client: true})
	if err != nil {
		return err
	}
	serving, err := b.leaf(n, "kubelet-serving-"+n.Name, false, certSpec{ca: KubernetesCA, commonName: "system:node:" + n.Hostname, orgs: []string{"system:nodes"}, dns: dns, ips: ips, server: true})
	if err != nil {
		return err
	}
	pki := l.Etc + "/pki"
	b.file(n.Name, pki+"/ca.crt", ca.Cert, 0o644)
	servCrt, servKey := b.keyPair(n.Name, pki, "kubelet", serving)
	kubeletConf := l.Etc + "/kubelet.conf"
	b.file(n.Name, kubeletConf, kubeconfig(c.Name, server, ca.Cert, "system:node:"+n.Hostname, client), 0o600)
	dnsIP, err := serviceIP(c.ServiceCIDR)
	if err != nil {
		return err
	}
	dnsIP[3] += 9 // 10.96.0.10, by convention
	config := l.Etc + "/kubelet-config.yaml"
	b.file(n.Name, config, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host's cgroups are v1: kubelet refuses them unless told otherwise.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
address: %q
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
tlsCertFile: %q
tlsPrivateKeyFile: %q
clusterDomain: cluster.local
clusterDNS: [%q]
containerRuntimeEndpoint: %q
rotateCertificates: false
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 5%%, imagefs.available: 5%%}
%s`, n.Address, pki+"/ca.crt", servCrt, servKey, dnsIP.String(), "unix://"+sock, cgroupRoot(n.KubeletCgroupRoot))), 0o644)
	// Images (the pause image, at least) come from the artifact source's images/
	// directory, since no registry need be reachable; the instruction runs again
	// when they change.
	var images []string
	for name, sum := range b.in.Artifacts {
		if strings.HasPrefix(name, "images/") && strings.HasSuffix(name, ".tar") {
			images = append(images, name+"@"+sum)
			if !slices.ContainsFunc(p.Artifacts, func(a nodeplan.Artifact) bool { return a.Name == name }) {
				p.Artifacts = append(p.Artifacts, nodeplan.Artifact{Name: name, SHA256: sum, URL: b.artifactURL(name)})
			}
		}
	}
	slices.Sort(images)
	slices.SortFunc(p.Artifacts, func(x, y nodeplan.Artifact) int { return strings.Compare(x.Name, y.Name) })
	p.Instructions = append(p.Instructions, nodeplan.Instruction{Name: "import-images",
		Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", fmt.Sprintf(
			"for f in %s/images/*.tar; do [ -e \"$f\" ] || continue; ctr --address=%s -n k8s.io images import --all-platforms \"$f\" || exit 1; done", l.Bin, sock)},
			Env: []string{"DROVER_IMAGES=" + strings.Join(images, ",")}},
		Timeout: nodeplan.Duration{Duration: 5 * time.Minute}})
	p.Processes = append(p.Processes, nodeplan.Process{Name: "kubelet", Command: nodeplan.Command{Path: b.bin(n.Name, "kubelet"), Args: []string{
		"--config=" + config, "--kubeconfig=" + kubeletConf,
		"--hostname-override=" + n.Hostname, "--node-ip=" + n.Address,
		"--root-dir=" + l.Var + "/kubelet",
	}}})
	// kube-proxy, as user system:kube-proxy, whom Kubernetes' bootstrap policy
	// grants what it needs. In a network namespace it may not size the machine's
	// conntrack table: the zeros leave the kernel's settings alone.
	proxy, err := b.leaf(n, "kube-proxy", true, certSpec{ca: KubernetesCA, commonName: "system:kube-proxy", client: true})
	if err != nil {
		return err
	}
	proxyConf, proxyConfig := l.Etc+"/kube-proxy.conf", l.Etc+"/kube-proxy.yaml"
	b.file(n.Name, proxyConf, kubeconfig(c.Name, server, ca.Cert, "system:kube-proxy", proxy), 0o600)
	b.file(n.Name, proxyConfig, []byte(fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
hostnameOverride: %q
mode: iptables
clusterCIDR: %q
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, proxyConf, n.Hostname, c.PodCIDR)), 0o644)
	p.Processes = append(p.Processes, nodeplan.Process{Name: "kube-proxy", Command: nodeplan.Command{Path: b.bin(n.Name, "kube-proxy"),
		Args: []string{"--config=" + proxyConfig}}})
	p.Probes = append(p.Probes, nodeplan.Probe{Name: ProbeKubelet, HTTPGet: &nodeplan.HTTPGet{URL: "http://127.0.0.1:10248/healthz"},
		Period: nodeplan.Duration{Duration: 2 * time.Second}, FailureThreshold: 3})
	return nil
}

// cgroupRoot is the kubelet configuration's cgroupRoot line, if one is set.
func cgroupRoot(root string) string {
	if root == "" {
		return ""
	}
	return fmt.Sprintf("cgroupRoot: %q\n", root)
}

// nodePodCIDR is the /24 of the pod range for a node: its third octet is the last
// octet of the node's address.
func nodePodCIDR(podCIDR, address string) (string, error) {
	_, n, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return "", fmt.Errorf("pod CIDR %q: %w", podCIDR, err)
	}
	ones, _ := n.Mask.Size()
	base, ip := n.IP.To4(), net.ParseIP(address).To4()
	if base == nil || ip == nil || ones > 16 {
		return "", fmt.Errorf("pod CIDR %q: want an IPv4 range of /16 or larger, and an IPv4 node address", podCIDR)
	}
	return fmt.Sprintf("%d.%d.%d.0/24", base[0], base[1], ip[3]), nil
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
