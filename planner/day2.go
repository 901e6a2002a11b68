package planner

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/drover-io/drover/nodeplan"
	"github.com/drover-io/drover/snapshotstore"
)

// Rollout is an upgrade or a certificate rotation under way.
type Rollout struct {
	// Kind is "Upgrade" (the version moves) or "CertificateRotation".
	Kind string
	// Phase is the group of nodes being moved: "etcd", "control planes" or "workers".
	Phase string
	// Nodes are the nodes of the group that move now (moved, not yet settled).
	Nodes []string
	// Done and Total count the nodes at the cluster's version and generation.
	Done, Total int
	// Drain are the workers to drain before they move (Input.Drain).
	Drain []string
}

// settled: the node runs its whole plan and every probe of it is healthy.
func settled(n Node, p *nodeplan.Plan, sum string) bool {
	if n.AppliedChecksum != sum {
		return false
	}
	for _, pr := range p.Probes {
		if !n.Healthy[pr.Name] {
			return false
		}
	}
	return true
}

// rollout decides which nodes move to the cluster's version and certificate
// generation now, from a first decision (out) with every node where it is. Groups
// move in order: the etcd members one at a time (in the order they joined, so
// quorum is never at stake), then the other control planes (ControlPlaneConcurrency
// at a time), then the other workers (WorkerConcurrency at a time). A node counts
// as moved once it runs its new plan and its probes are healthy; a group starts
// only when every node before it has moved, so no control plane is ever older than
// a kubelet.
func rollout(in Input, out *Output) (map[string]bool, *Rollout) {
	byName := map[string]Node{}
	for _, n := range in.Nodes {
		byName[n.Name] = n
	}
	current := func(n Node) bool {
		return n.Version == in.Cluster.KubernetesVersion && n.CertificatesGeneration == in.Cluster.CertificatesGeneration
	}
	var groups [3][]Node
	seen := map[string]bool{}
	add := func(g int, n Node) {
		if !seen[n.Name] && !n.Removing {
			seen[n.Name] = true
			groups[g] = append(groups[g], n)
		}
	}
	for _, m := range out.Members {
		add(0, byName[m])
	}
	names := make([]string, 0, len(in.Nodes))
	for _, n := range in.Nodes {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	for _, name := range names {
		if n := byName[name]; n.has(RoleEtcd) {
			add(0, n)
		}
	}
	for _, name := range names {
		if n := byName[name]; n.has(RoleControlPlane) {
			add(1, n)
		}
	}
	for _, name := range names {
		add(2, byName[name])
	}
	ro := &Rollout{Kind: "CertificateRotation"}
	for _, g := range groups {
		for _, n := range g {
			ro.Total++
			if current(n) {
				ro.Done++
			}
			if n.Version != in.Cluster.KubernetesVersion {
				ro.Kind = "Upgrade"
			}
		}
	}
	moved := map[string]bool{}
	phases := [3]string{"etcd", "control planes", "workers"}
	for i, g := range groups {
		var outdated, inflight []string
		for _, n := range g {
			switch {
			case !current(n):
				outdated = append(outdated, n.Name)
			case !settled(n, out.Plans[n.Name], out.Checksums[n.Name]):
				inflight = append(inflight, n.Name)
			}
		}
		if len(outdated) == 0 && len(inflight) == 0 {
			continue
		}
		if len(outdated) == 0 && ro.Done == ro.Total {
			// Everything is current: what is not settled is not a rollout's doing.
			return nil, nil
		}
		limit := 1
		switch i {
		case 1:
			limit = max(in.Cluster.ControlPlaneConcurrency, 1)
		case 2:
			limit = workerConcurrency(in.Cluster.WorkerConcurrency, len(g))
		}
		for len(inflight)+len(ro.Drain) < limit && len(outdated) > 0 {
			next := outdated[0]
			outdated = outdated[1:]
			if i == 2 && in.Drain && !in.Drained[next] {
				ro.Drain = append(ro.Drain, next) // moves once drained
				continue
			}
			moved[next] = true
			inflight = append(inflight, next)
			ro.Done++
		}
		ro.Phase, ro.Nodes = phases[i], inflight
		return moved, ro
	}
	return nil, nil
}

// workerConcurrency resolves "25%" or "2" against the number of workers: at least 1.
func workerConcurrency(s string, workers int) int {
	if s == "" {
		s = "25%"
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		pct, err := strconv.Atoi(p)
		if err != nil || pct <= 0 {
			return 1
		}
		return max(1, int(math.Floor(float64(workers)*float64(pct)/100)))
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// etcdctl is an etcdctl command line against the node's own member.
func (b *builder) etcdctl(n Node) string {
	pki := b.layout(n.Name).Etc + "/pki/etcd"
	return fmt.Sprintf("%s --endpoints=https://%s --cacert=%s/ca.crt --cert=%s/healthcheck-client.crt --key=%s/healthcheck-client.key --command-timeout=30s",
		b.bin(n.Name, "etcdctl"), hostPort(n.Address, 2379), pki, pki, pki)
}

// snapshot has a member save an etcd snapshot, check it with etcdutl, keep only
// the newest Retention snapshot files, and store it in S3 when asked to. Each
// step is idempotent, so the instruction is safe to run again after a failure.
func (b *builder) snapshot(s Snapshot) error {
	n, ok := b.byName[s.Node]
	if !ok || !n.has(RoleEtcd) || !slices.ContainsFunc(b.plans[s.Node].Processes, func(p nodeplan.Process) bool { return p.Name == "etcd" }) {
		return fmt.Errorf("node %s cannot take snapshot %s: it runs no etcd member", s.Node, s.Name)
	}
	l := b.layout(n.Name)
	f := SnapshotPath(l, s.Name)
	dir := f[:strings.LastIndex(f, "/")]
	keep := max(s.Retention, 1)
	upload, env := "", []string{"DROVER_SNAPSHOT=" + s.Name}
	if s.S3 != nil {
		cfg, err := b.s3Config(n, *s.S3)
		if err != nil {
			return err
		}
		// The newest file is kept by the clean-up above, so a failing upload
		// leaves no more than Retention files behind.
		upload = fmt.Sprintf("%s upload --config=%s --file=%s --name=%s --cluster=%s --retention=%d\n",
			snapshotCommand, cfg, f, s.Name, b.in.Cluster.Name, keep)
		// Where it goes is part of the instruction: another bucket uploads again.
		env = append(env, "DROVER_SNAPSHOT_S3="+s.S3.Location(s.Name))
	}
	script := fmt.Sprintf(`set -e
mkdir -p %[1]s
if [ ! -s %[2]s ]; then
  rm -f %[2]s.part
  %[3]s snapshot save %[2]s.part
  %[4]s snapshot status %[2]s.part -w json
  mv %[2]s.part %[2]s
fi
ls -1t %[1]s/*.db | tail -n +%[5]d | xargs -r rm -f
%[6]s`, dir, f, b.etcdctl(n), b.bin(n.Name, "etcdutl"), keep+1, upload)
	p := b.plans[n.Name]
	p.Instructions = append(p.Instructions, nodeplan.Instruction{Name: "etcd-snapshot",
		Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script}, Env: env},
		Timeout: nodeplan.Duration{Duration: 10 * time.Minute}})
	return nil
}

// downloadSnapshot has the node that will restore a snapshot stored in S3
// download and check it, before anything is stopped.
func (b *builder) downloadSnapshot(r Restore) error {
	n, ok := b.byName[r.Node]
	if !ok || r.S3 == nil {
		return fmt.Errorf("snapshot %s: node %s cannot download it", r.Name, r.Node)
	}
	cfg, err := b.s3Config(n, *r.S3)
	if err != nil {
		return err
	}
	dst := DownloadPath(b.layout(n.Name), r.Name)
	script := fmt.Sprintf("set -e\nmkdir -p %s\n%s download --config=%s --file=%s --name=%s --timeout=29m\n",
		dst[:strings.LastIndex(dst, "/")], snapshotCommand, cfg, dst, r.Name)
	p := b.plans[n.Name]
	p.Instructions = append(p.Instructions, nodeplan.Instruction{Name: "etcd-snapshot-download",
		Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script},
			Env: []string{fmt.Sprintf("DROVER_RESTORE=%d", r.Generation), "DROVER_SNAPSHOT_S3=" + r.S3.Location(r.Name)}},
		Timeout: nodeplan.Duration{Duration: nodeplan.MaxStepTimeout}})
	return nil
}

// snapshotCommand runs drover etcd-snapshot-s3 through the node agent's own
// binary, and says so when the agent is too old to give it.
var snapshotCommand = fmt.Sprintf(`"${%s:?the node agent is too old for etcdSnapshotS3}" %s`, nodeplan.SelfEnv, snapshotstore.Command)

// s3Config puts the storage's configuration, credentials included, in a file of
// the node's plan that only root reads, and returns its path.
func (b *builder) s3Config(n Node, cfg snapshotstore.Config) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", fmt.Errorf("etcd snapshot storage: %w", err)
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := S3ConfigPath(b.layout(n.Name))
	b.file(n.Name, path, data, 0o600)
	return path, nil
}

// controlPlaneProcesses are what a restore stops.
var controlPlaneProcesses = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// stopControlPlanes takes etcd and the control plane out of every plan, with their
// probes; the rest (files, kubelet) stays.
func (b *builder) stopControlPlanes() {
	for _, p := range b.plans {
		p.Processes = slices.DeleteFunc(p.Processes, func(pr nodeplan.Process) bool { return slices.Contains(controlPlaneProcesses, pr.Name) })
		p.Probes = slices.DeleteFunc(p.Probes, func(pr nodeplan.Probe) bool { return pr.Name == ProbeEtcd || pr.Name == ProbeAPIServer })
	}
}

// resetEtcd sets a member's data aside before it joins the restored cluster again.
func (b *builder) resetEtcd(n Node, generation int64) {
	data := b.layout(n.Name).Var + "/etcd"
	script := fmt.Sprintf("set -e; if [ -d %[1]s ]; then rm -rf %[1]s.before-restore-%[2]d; mv %[1]s %[1]s.before-restore-%[2]d; fi", data, generation)
	p := b.plans[n.Name]
	p.Instructions = append(p.Instructions, nodeplan.Instruction{Name: "etcd-reset",
		Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script}, Env: []string{fmt.Sprintf("DROVER_RESTORE=%d", generation)}}})
}

// restoreEtcd restores the snapshot on the node that holds it, as a new one-member
// cluster, keeping the data it had beside it. It is safe to run again: it restores
// into a fresh directory and swaps it in last.
func (b *builder) restoreEtcd(n Node, r *Restore) error {
	if n.Name == "" {
		return fmt.Errorf("the node that restores snapshot %s is not part of the cluster", r.Name)
	}
	data := b.layout(n.Name).Var + "/etcd"
	peer := "https://" + hostPort(n.Address, 2380)
	src, cleanup := r.Path, ""
	if r.S3 != nil {
		// Downloaded and checked in the RestoreDownload phase.
		src = DownloadPath(b.layout(n.Name), r.Name)
		cleanup = "rm -f " + src + "\n"
	}
	script := fmt.Sprintf(`set -e
rm -rf %[1]s.restoring
%[2]s snapshot restore %[3]s --name=%[4]s --initial-cluster=%[4]s=%[5]s --initial-advertise-peer-urls=%[5]s --initial-cluster-token=%[6]s --bump-revision=1000000000 --mark-compacted --data-dir=%[1]s.restoring
if [ -d %[1]s ]; then rm -rf %[1]s.before-restore-%[7]d; mv %[1]s %[1]s.before-restore-%[7]d; fi
mv %[1]s.restoring %[1]s
%[8]s`, data, b.bin(n.Name, "etcdutl"), src, n.Hostname, peer, b.in.Cluster.Name, r.Generation, cleanup)
	p := b.plans[n.Name]
	p.Instructions = append(p.Instructions, nodeplan.Instruction{Name: "etcd-restore",
		Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script}, Env: []string{fmt.Sprintf("DROVER_RESTORE=%d", r.Generation)}},
		Timeout: nodeplan.Duration{Duration: 10 * time.Minute}})
	return nil
}

// removeMembers has a healthy member remove a leaving node from etcd (idempotent:
// a member already gone is not looked for again).
func (b *builder) removeMembers(nodes []Node, out *Output) {
	for _, n := range nodes {
		if !n.Removing || n.MemberRemoved || !slices.Contains(out.Members, n.Name) {
			continue
		}
		var by Node
		for _, m := range out.Members {
			if m != n.Name && b.healthy(m, ProbeEtcd) {
				by = b.byName[m]
				break
			}
		}
		if by.Name == "" {
			return // no healthy member to do it: Waiting says why
		}
		script := fmt.Sprintf(`set -e
id=$(%[1]s member list | awk -F', ' '$3 == "%[2]s" {print $1}')
[ -z "$id" ] || %[1]s member remove "$id"
`, b.etcdctl(by), n.Hostname)
		p := b.plans[by.Name]
		p.Instructions = append(p.Instructions, nodeplan.Instruction{Name: "etcd-member-remove",
			Command: nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script}, Env: []string{"DROVER_MEMBER=" + n.Hostname}},
			Timeout: nodeplan.Duration{Duration: time.Minute}})
		out.MemberRemoval = by.Name
		return // one at a time
	}
}

// QuorumRefusal says why removing member from an etcd cluster of members would
// break quorum, or "": the members that stay must be a majority of the members
// now, and healthy.
func QuorumRefusal(member string, members []string, healthy func(string) bool) string {
	quorum := len(members)/2 + 1
	stay, healthyStay := 0, 0
	for _, m := range members {
		if m == member {
			continue
		}
		stay++
		if healthy(m) {
			healthyStay++
		}
	}
	switch {
	case stay < quorum:
		return fmt.Sprintf("removing etcd member %s would leave %d of %d members, fewer than the %d etcd needs for quorum: add an etcd node first", member, stay, len(members), quorum)
	case healthyStay < quorum:
		return fmt.Sprintf("removing etcd member %s would leave %d healthy members of %d, fewer than the %d etcd needs for quorum: make the others healthy first", member, healthyStay, len(members), quorum)
	}
	return ""
}
