package controllers

import (
	"context"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/planner"
	"github.com/drover-io/drover/snapshotstore"
)

// NodeRemovalFinalizer holds a ClusterNode until it is out of its cluster: its etcd
// member removed, its components stopped.
const NodeRemovalFinalizer = "management.drover.io/node-removal"

// Phases of the operations.
const (
	phaseSaving       = "Saving"
	phaseRemoveMember = "RemoveMember"
	phaseDrain        = "Drain"
	phaseTeardown     = "Teardown"
)

// defaultSnapshotRetention is how many etcd snapshots are kept by default.
const defaultSnapshotRetention = 5

// snapshotRetention is how many snapshots each etcd node keeps.
func snapshotRetention(spec *v1alpha1.ProvisioningSpec) int {
	if spec.EtcdSnapshotRetention > 0 {
		return int(spec.EtcdSnapshotRetention)
	}
	return defaultSnapshotRetention
}

// day2Conditions are the conditions the provisioning controller owns, one per kind
// of operation.
var day2Conditions = map[string]string{
	v1alpha1.OperationUpgrade:             v1alpha1.UpgradingCondition,
	v1alpha1.OperationCertificateRotation: v1alpha1.RotatingCertificatesCondition,
	v1alpha1.OperationEtcdSnapshot:        v1alpha1.SnapshottingEtcdCondition,
	v1alpha1.OperationEtcdRestore:         v1alpha1.RestoringEtcdCondition,
	v1alpha1.OperationNodeRemoval:         v1alpha1.RemovingNodesCondition,
}

// day2 is one reconcile's view of the day-2 operations of a provisioned cluster.
type day2 struct {
	mc *v1alpha1.ManagedCluster
	// base is the cluster as read, before this reconcile changed anything.
	base   *v1alpha1.ManagedCluster
	status *v1alpha1.ProvisioningStatus
	nodes  []v1alpha1.ClusterNode
	now    time.Time
	// results are conditions to set: operation type -> (status, reason, message).
	results map[string]metav1.Condition
	// events to record once the status is kept.
	events []day2Event
	// drained are the workers drained for the rollout; drainNote says what holds
	// a drain up.
	drained   map[string]bool
	drainNote string
	// nextSnapshot is when the next scheduled snapshot is due.
	nextSnapshot time.Time
	// s3 is spec.provisioning.etcdSnapshotS3 with its credentials, when it is set
	// and they could be read; s3Problem says why they could not.
	s3        *snapshotstore.Config
	s3Problem string
}

type day2Event struct{ typ, reason, message string }

func eventsOf(d *day2) []day2Event {
	if d == nil {
		return nil
	}
	return d.events
}

func (d *day2) event(typ, reason, format string, args ...any) {
	d.events = append(d.events, day2Event{typ, reason, fmt.Sprintf(format, args...)})
}

func (d *day2) result(opType string, status metav1.ConditionStatus, reason, message string) {
	d.results[opType] = metav1.Condition{Type: day2Conditions[opType], Status: status, Reason: reason, Message: message}
}

func gen(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// initActions records, when the cluster is first seen, the generations its actions
// already have: there is nothing to snapshot, restore or rotate in a cluster that
// does not exist yet.
func (d *day2) initActions() {
	spec := d.mc.Spec.Provisioning
	record := func(acted **int64, action *v1alpha1.ActionGeneration) {
		if *acted == nil {
			g := int64(0)
			if action != nil {
				g = action.Generation
			}
			*acted = &g
		}
	}
	record(&d.status.EtcdSnapshotCreateGeneration, spec.EtcdSnapshotCreate)
	record(&d.status.RotateCertificatesGeneration, spec.RotateCertificates)
	if d.status.EtcdSnapshotRestoreGeneration == nil {
		g := int64(0)
		if spec.EtcdSnapshotRestore != nil {
			g = spec.EtcdSnapshotRestore.Generation
		}
		d.status.EtcdSnapshotRestoreGeneration = &g
	}
	if d.status.CertificatesGeneration == nil {
		// Before the certificates had a generation of their own, the action's was.
		g := gen(d.status.RotateCertificatesGeneration)
		d.status.CertificatesGeneration = &g
	}
}

// certificateRenewBefore: when a certificate in use ends sooner than this, Drover
// rotates the cluster's certificates, node by node (the planner itself reissues a
// certificate 30 days before its end, which restarts nothing).
const certificateRenewBefore = 60 * 24 * time.Hour

// renewalDue says whether the certificates in use end soon enough to be rotated.
func (d *day2) renewalDue(out *planner.Output) bool {
	// Only a cluster whose every node is healthy: a rotation waits for each node
	// it moves, and would hold every other operation back meanwhile.
	return d.status.ReachedTier == string(planner.TierReady) && out.Settled && !out.CertificatesExpire.IsZero() &&
		out.CertificatesExpire.Before(d.now.Add(certificateRenewBefore))
}

func (d *day2) node(name string) *v1alpha1.ClusterNode {
	for i := range d.nodes {
		if d.nodes[i].Name == name {
			return &d.nodes[i]
		}
	}
	return nil
}

// start begins the next operation when none runs: a node removal first, then a
// restore, a snapshot, a certificate rotation (upgrades start themselves: the
// planner moves nodes whose version differs). What must wait says so.
func (d *day2) start(artifacts map[string]string) {
	spec := d.mc.Spec.Provisioning
	busy := d.status.Operation
	queued := func(opType, what string) {
		if busy != nil {
			d.result(opType, metav1.ConditionFalse, v1alpha1.ReasonQueued, fmt.Sprintf("%s waits for the %s under way", what, busy.Type))
		}
	}
	// Node removals.
	for i := range d.nodes {
		n := &d.nodes[i]
		if n.DeletionTimestamp.IsZero() || !controllerutil.ContainsFinalizer(n, NodeRemovalFinalizer) {
			continue
		}
		if busy != nil {
			if busy.Type != v1alpha1.OperationNodeRemoval || busy.Target != n.Name {
				queued(v1alpha1.OperationNodeRemoval, "removing node "+n.Name)
			}
			break
		}
		if msg := d.removalRefused(n); msg != "" {
			if c := conditions.Get(d.mc, v1alpha1.RemovingNodesCondition); c == nil || c.Message != msg {
				d.event(corev1.EventTypeWarning, "NodeRemovalRefused", "%s", msg)
			}
			d.result(v1alpha1.OperationNodeRemoval, metav1.ConditionFalse, v1alpha1.ReasonFailed, msg)
			continue
		}
		phase := d.afterDrain(n.Name)
		if slices.Contains(n.Spec.Roles, v1alpha1.NodeRoleWorker) && planner.Tier(d.status.ReachedTier) == planner.TierReady {
			phase = phaseDrain // its pods leave first
		}
		d.begin(v1alpha1.OperationNodeRemoval, 0, n.Name, phase, n.Name)
		return
	}
	if r := spec.EtcdSnapshotRestore; r != nil && r.Generation != gen(d.status.EtcdSnapshotRestoreGeneration) {
		if busy != nil {
			queued(v1alpha1.OperationEtcdRestore, "restoring snapshot "+r.Name)
			return
		}
		g := r.Generation
		d.status.EtcdSnapshotRestoreGeneration = &g
		i := slices.IndexFunc(d.status.EtcdSnapshots, func(s v1alpha1.EtcdSnapshot) bool { return s.Name == r.Name })
		if i < 0 {
			d.fail(v1alpha1.OperationEtcdRestore, fmt.Sprintf("spec.provisioning.etcdSnapshotRestore.name: snapshot %q is not in status.provisioning.etcdSnapshots", r.Name))
			return
		}
		snap := d.status.EtcdSnapshots[i]
		node, problem := d.restoreNode(snap)
		switch {
		case problem != "":
			d.fail(v1alpha1.OperationEtcdRestore, problem)
		case !hasArtifact(artifacts, d.status, node, "etcdutl"):
			d.fail(v1alpha1.OperationEtcdRestore, "the artifact source has no etcdutl for the node's version: add it (hack/artifacts.sh does)")
		default:
			if snap.S3 != nil {
				d.begin(v1alpha1.OperationEtcdRestore, g, r.Name, planner.RestoreDownload, node)
				d.event(corev1.EventTypeNormal, "EtcdRestoreStarted", "restoring etcd snapshot %s from s3://%s/%s: node %s downloads it first, while everything runs",
					r.Name, snap.S3.Bucket, snap.S3.Key, node)
			} else {
				d.begin(v1alpha1.OperationEtcdRestore, g, r.Name, planner.RestoreStop, node)
				d.event(corev1.EventTypeNormal, "EtcdRestoreStarted", "restoring etcd snapshot %s from node %s: stopping etcd and the control planes", r.Name, node)
			}
		}
		return
	}
	if s := spec.EtcdSnapshotCreate; s != nil && s.Generation != gen(d.status.EtcdSnapshotCreateGeneration) {
		if busy != nil {
			queued(v1alpha1.OperationEtcdSnapshot, "the snapshot")
			return
		}
		g := s.Generation
		d.status.EtcdSnapshotCreateGeneration = &g
		d.beginSnapshot(g, artifacts)
		return
	}
	if sched := spec.EtcdSnapshotSchedule; sched != "" && d.status.ReachedTier == string(planner.TierReady) {
		since := d.mc.CreationTimestamp.Time
		if a := d.status.EtcdSnapshotScheduledAt; a != nil && a.After(since) {
			since = a.Time // a scheduled snapshot that failed waits for the next slot
		}
		due, next, err := snapshotDue(sched, since, d.status.EtcdSnapshots, d.now)
		switch {
		case err != nil:
			d.fail(v1alpha1.OperationEtcdSnapshot, err.Error())
		case due && busy != nil:
			queued(v1alpha1.OperationEtcdSnapshot, "the scheduled snapshot")
		case due:
			t := metav1.NewTime(d.now.UTC().Truncate(time.Second))
			d.status.EtcdSnapshotScheduledAt = &t
			d.beginSnapshot(0, artifacts)
			return
		default:
			d.nextSnapshot = next
		}
	}
	if r := spec.RotateCertificates; r != nil && r.Generation != gen(d.status.RotateCertificatesGeneration) {
		if busy != nil {
			queued(v1alpha1.OperationCertificateRotation, "the certificate rotation")
			return
		}
		g, cg := r.Generation, gen(d.status.CertificatesGeneration)+1
		d.status.RotateCertificatesGeneration, d.status.CertificatesGeneration = &g, &cg
		d.event(corev1.EventTypeNormal, "CertificateRotationStarted", "issuing new certificates (generation %d), node by node", cg)
	}
}

// restoreNode chooses the etcd member that restores the snapshot and starts the
// restored cluster: the node that holds it, or for a snapshot in S3 that node if
// it is still a member and else the first member, which downloads it.
func (d *day2) restoreNode(snap v1alpha1.EtcdSnapshot) (string, string) {
	member := func(name string) bool {
		n := d.node(name)
		return n != nil && n.DeletionTimestamp.IsZero() && slices.Contains(d.status.EtcdMembers, name)
	}
	if snap.S3 == nil {
		if !member(snap.Node) {
			return "", fmt.Sprintf("snapshot %s is on node %s, which is no longer an etcd member of the cluster (set spec.provisioning.etcdSnapshotS3 so that snapshots outlive their node)", snap.Name, snap.Node)
		}
		return snap.Node, ""
	}
	if d.s3Problem != "" {
		return "", fmt.Sprintf("snapshot %s is in s3://%s/%s, which cannot be read: %s", snap.Name, snap.S3.Bucket, snap.S3.Key, d.s3Problem)
	}
	if member(snap.Node) {
		return snap.Node, ""
	}
	for _, m := range d.status.EtcdMembers {
		if member(m) {
			return m, ""
		}
	}
	return "", fmt.Sprintf("snapshot %s cannot be restored: the cluster has no etcd member left to restore it on", snap.Name)
}

// restoreS3 is the storage to download a snapshot from: its recorded location,
// with the spec's settings and credentials only where the spec names the same
// endpoint (credentials never go to another endpoint than the one they are for).
func (d *day2) restoreS3(snap v1alpha1.EtcdSnapshot) *snapshotstore.Config {
	var cfg snapshotstore.Config
	if d.s3 != nil && d.s3.Endpoint == snap.S3.Endpoint {
		cfg = *d.s3
	} else if spec := d.mc.Spec.Provisioning.EtcdSnapshotS3; spec != nil && spec.Endpoint == snap.S3.Endpoint {
		cfg = snapshotstore.Config{Region: spec.Region, CA: spec.EndpointCA, Insecure: spec.Insecure}
	}
	cfg.Endpoint, cfg.Bucket = snap.S3.Endpoint, snap.S3.Bucket
	cfg.Folder = strings.TrimSuffix(strings.TrimSuffix(snap.S3.Key, snap.Name+".db"), "/")
	return &cfg
}

// beginSnapshot starts a snapshot on the first healthy member; generation is 0 for
// a scheduled one.
func (d *day2) beginSnapshot(generation int64, artifacts map[string]string) {
	member := ""
	for _, m := range d.status.EtcdMembers {
		if n := d.node(m); n != nil && n.DeletionTimestamp.IsZero() && n.ProbeHealthy(planner.ProbeEtcd) {
			member = m
			break
		}
	}
	switch {
	case d.s3Problem != "":
		d.fail(v1alpha1.OperationEtcdSnapshot, "the snapshot is not taken: "+d.s3Problem)
	case member == "":
		d.fail(v1alpha1.OperationEtcdSnapshot, "no etcd member is healthy to take the snapshot; it is taken once one is (bump spec.provisioning.etcdSnapshotCreate.generation again for one asked for by hand)")
	case !hasArtifact(artifacts, d.status, member, "etcdutl"):
		d.fail(v1alpha1.OperationEtcdSnapshot, "the artifact source has no etcdutl for the node's version, which checks snapshots: add it (hack/artifacts.sh does)")
	default:
		name := d.mc.Name + "-" + d.now.UTC().Format("20060102-150405")
		d.begin(v1alpha1.OperationEtcdSnapshot, generation, name, phaseSaving, member)
	}
}

// keptSnapshots is the list of snapshots that may still exist: each node keeps
// its newest retention files, and the storage its newest retention of the
// cluster's objects.
func keptSnapshots(snaps []v1alpha1.EtcdSnapshot, retention int) []v1alpha1.EtcdSnapshot {
	var kept []v1alpha1.EtcdSnapshot
	count := map[string]int{}
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		where := "node/" + s.Node
		if s.S3 != nil {
			where = "s3/" + s.S3.Endpoint + "/" + s.S3.Bucket + "/" + path.Dir(s.S3.Key)
		}
		if count[where] < retention {
			count[where]++
			kept = append(kept, s)
		}
	}
	slices.Reverse(kept)
	return kept
}

func hasArtifact(artifacts map[string]string, status *v1alpha1.ProvisioningStatus, node, binary string) bool {
	if artifacts == nil {
		return true // binaries are on the nodes already
	}
	for _, n := range status.Nodes {
		if n.Name == node {
			_, ok := artifacts[n.KubernetesVersion+"/"+binary]
			return ok
		}
	}
	return false
}

func (d *day2) begin(opType string, generation int64, target, phase, node string) {
	t := metav1.NewTime(d.now)
	d.status.Operation = &v1alpha1.ProvisioningOperation{Type: opType, Generation: generation, Target: target, Phase: phase, Node: node, StartTime: &t}
}

func (d *day2) fail(opType, msg string) {
	if c := conditions.Get(d.mc, day2Conditions[opType]); c == nil || c.Reason != v1alpha1.ReasonFailed || c.Message != msg {
		d.event(corev1.EventTypeWarning, opType+"Failed", "%s", msg)
	}
	d.result(opType, metav1.ConditionFalse, v1alpha1.ReasonFailed, msg)
}

func (d *day2) finish(opType, msg string) {
	d.status.Operation = nil
	d.result(opType, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, msg)
	d.event(corev1.EventTypeNormal, opType+"Succeeded", "%s", msg)
}

// afterDrain is the removal's phase after the drain: the etcd member first.
func (d *day2) afterDrain(node string) string {
	if slices.Contains(d.status.EtcdMembers, node) {
		return phaseRemoveMember
	}
	return phaseTeardown
}

// removalRefused says why a node may not leave now, or "".
func (d *day2) removalRefused(n *v1alpha1.ClusterNode) string {
	if slices.Contains(n.Spec.Roles, v1alpha1.NodeRoleControlPlane) {
		others := 0
		for i := range d.nodes {
			o := &d.nodes[i]
			if o.Name != n.Name && o.DeletionTimestamp.IsZero() && slices.Contains(o.Spec.Roles, v1alpha1.NodeRoleControlPlane) {
				others++
			}
		}
		if others == 0 {
			return fmt.Sprintf("node %s is the last control plane of cluster %s: add another before removing it", n.Name, d.mc.Name)
		}
	}
	if !slices.Contains(d.status.EtcdMembers, n.Name) {
		return ""
	}
	return planner.QuorumRefusal(n.Name, d.status.EtcdMembers, func(m string) bool {
		o := d.node(m)
		return o != nil && o.ProbeHealthy(planner.ProbeEtcd)
	})
}

// input sets what the planner needs of the operation under way.
func (d *day2) input(in *planner.Input) {
	spec := d.mc.Spec.Provisioning
	in.Cluster.CertificatesGeneration = gen(d.status.CertificatesGeneration)
	if s := spec.UpgradeStrategy; s != nil {
		in.Cluster.ControlPlaneConcurrency = int(s.ControlPlaneConcurrency)
		if s.WorkerConcurrency != nil {
			in.Cluster.WorkerConcurrency = s.WorkerConcurrency.String()
		}
	}
	in.Drain = spec.UpgradeStrategy != nil && spec.UpgradeStrategy.Drain
	in.Drained = d.drained
	in.Reached = planner.Tier(d.status.ReachedTier)
	if in.Reached == "" {
		in.Reached = planner.Tier(d.status.Tier)
	}
	states := map[string]v1alpha1.ProvisionedNode{}
	for _, n := range d.status.Nodes {
		states[n.Name] = n
	}
	op := d.status.Operation
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if st, ok := states[n.Name]; ok {
			n.Version, n.CertificatesGeneration = st.KubernetesVersion, st.CertificatesGeneration
		}
		if op != nil && op.Type == v1alpha1.OperationNodeRemoval && op.Target == n.Name && op.Phase != phaseDrain {
			// A node being drained keeps running what it runs: its pods must be able
			// to stop, which takes its kubelet.
			n.Removing, n.MemberRemoved = true, op.Phase == phaseTeardown
		}
	}
	if op == nil {
		return
	}
	switch op.Type {
	case v1alpha1.OperationEtcdSnapshot:
		in.Snapshot = &planner.Snapshot{Name: op.Target, Node: op.Node, Retention: snapshotRetention(spec), S3: d.s3}
		in.Hold = true
	case v1alpha1.OperationEtcdRestore:
		in.Restore = &planner.Restore{Generation: op.Generation, Phase: op.Phase, Node: op.Node, Name: op.Target}
		for _, s := range d.status.EtcdSnapshots {
			if s.Name == op.Target {
				in.Restore.Path = s.Path
				if s.S3 != nil {
					in.Restore.S3 = d.restoreS3(s)
				}
			}
		}
		in.Hold = true
	case v1alpha1.OperationNodeRemoval:
		in.Hold = true
	}
}

// advance moves the operation under way on from what the planner decided, and
// says whether its phase changed (the plans are then decided again).
func (d *day2) advance(ctx context.Context, r *ProvisioningReconciler, out *planner.Output) (bool, error) {
	op := d.status.Operation
	applied := func(node string) bool {
		n := d.node(node)
		return n != nil && n.Status.AppliedChecksum != "" && n.Status.AppliedChecksum == out.Checksums[node]
	}
	if op == nil && out.Rollout == nil && d.renewalDue(out) {
		g := gen(d.status.CertificatesGeneration) + 1
		d.status.CertificatesGeneration = &g
		d.event(corev1.EventTypeNormal, "CertificatesExpiring", "a certificate in use ends on %s, within %d days: issuing new certificates (generation %d), node by node",
			out.CertificatesExpire.UTC().Format(time.RFC3339), int(certificateRenewBefore.Hours()/24), g)
		return true, nil
	}
	if op == nil || op.Type == v1alpha1.OperationUpgrade || op.Type == v1alpha1.OperationCertificateRotation {
		d.rollout(out)
		return false, nil
	}
	switch op.Type {
	case v1alpha1.OperationEtcdSnapshot:
		if f := d.failure(op.Node, "etcd-snapshot"); f != "" {
			d.status.Operation = nil
			d.fail(op.Type, fmt.Sprintf("snapshot %s on node %s failed: %s", op.Target, op.Node, f))
			return true, nil
		}
		if d.s3Problem != "" {
			d.status.Operation = nil
			d.fail(op.Type, fmt.Sprintf("snapshot %s was not stored: %s", op.Target, d.s3Problem))
			return true, nil
		}
		op.Message = fmt.Sprintf("node %s saves snapshot %s", op.Node, op.Target)
		if d.s3 != nil {
			op.Message += " and stores it in " + d.s3.URL(op.Target)
		}
		if !applied(op.Node) {
			return false, nil
		}
		t := metav1.NewTime(d.now)
		snap := v1alpha1.EtcdSnapshot{Name: op.Target, Node: op.Node,
			Path: planner.SnapshotPath(planner.DefaultLayout, op.Target), CreatedAt: &t, KubernetesVersion: d.mc.Spec.Provisioning.KubernetesVersion}
		msg := fmt.Sprintf("snapshot %s taken on node %s", op.Target, op.Node)
		if d.s3 != nil {
			snap.S3 = &v1alpha1.EtcdSnapshotS3Location{Endpoint: d.s3.Endpoint, Bucket: d.s3.Bucket, Key: d.s3.Key(op.Target)}
			msg += " and stored in " + d.s3.URL(op.Target)
		}
		d.status.EtcdSnapshots = keptSnapshots(append(d.status.EtcdSnapshots, snap), snapshotRetention(d.mc.Spec.Provisioning))
		d.finish(op.Type, msg)
		return true, nil
	case v1alpha1.OperationEtcdRestore:
		for _, step := range []string{"etcd-restore", "etcd-reset"} {
			for _, m := range d.status.EtcdMembers {
				if f := d.failure(m, step); f != "" {
					op.Message = fmt.Sprintf("node %s: %s failed (retrying): %s", m, step, f)
					return false, nil
				}
			}
		}
		switch op.Phase {
		case planner.RestoreDownload:
			if f := d.failure(op.Node, "etcd-snapshot-download"); f != "" {
				// Nothing was stopped: the restore ends here, and says why.
				d.status.Operation = nil
				d.fail(op.Type, fmt.Sprintf("snapshot %s could not be downloaded by node %s, so nothing was stopped: %s", op.Target, op.Node, f))
				return true, nil
			}
			op.Message = fmt.Sprintf("node %s downloads and checks snapshot %s", op.Node, op.Target)
			if applied(op.Node) {
				op.Phase = planner.RestoreStop
				d.event(corev1.EventTypeNormal, "EtcdSnapshotDownloaded", "node %s downloaded and checked snapshot %s; stopping etcd and the control planes", op.Node, op.Target)
				return true, nil
			}
		case planner.RestoreStop:
			op.Message = "waiting for every etcd member and control plane to stop"
			if out.Stopped {
				// The restored member starts alone; the others join it again.
				op.Phase, d.status.EtcdMembers = planner.RestoreEtcd, []string{op.Node}
				d.event(corev1.EventTypeNormal, "EtcdRestoring", "etcd and the control planes are stopped; restoring %s on node %s", op.Target, op.Node)
				return true, nil
			}
		case planner.RestoreEtcd:
			op.Message = out.Waiting
			if out.Tier == planner.TierReady && out.Settled {
				d.finish(op.Type, fmt.Sprintf("snapshot %s restored from node %s; every member and control plane is back", op.Target, op.Node))
				return true, nil
			}
		}
	case v1alpha1.OperationNodeRemoval:
		n := d.node(op.Target)
		if n == nil {
			d.finish(op.Type, fmt.Sprintf("node %s removed", op.Target))
			return true, nil
		}
		switch op.Phase {
		case phaseDrain:
			op.Node, op.Message = op.Target, fmt.Sprintf("draining node %s", op.Target)
			drained, err := r.drainFor(ctx, d, []string{op.Target})
			waited := d.now.Sub(n.DeletionTimestamp.Time)
			switch {
			case err == nil && drained[op.Target]:
			case waited > teardownTimeout:
				d.event(corev1.EventTypeWarning, "NodeNotDrained", "node %s could not be drained within %s; it leaves with what still runs there", op.Target, teardownTimeout)
			case err != nil:
				op.Message += ": " + err.Error()
				return false, nil
			default:
				if d.drainNote != "" {
					op.Message += ": " + d.drainNote
				}
				return false, nil
			}
			op.Phase = d.afterDrain(op.Target)
			return true, nil
		case phaseRemoveMember:
			op.Node = out.MemberRemoval
			op.Message = fmt.Sprintf("node %s removes etcd member %s", out.MemberRemoval, op.Target)
			if out.MemberRemoval != "" && applied(out.MemberRemoval) {
				op.Phase, op.Node = phaseTeardown, op.Target
				d.event(corev1.EventTypeNormal, "EtcdMemberRemoved", "etcd member %s removed by node %s", op.Target, out.MemberRemoval)
				return true, nil
			}
		case phaseTeardown:
			op.Node, op.Message = op.Target, fmt.Sprintf("node %s stops its components", op.Target)
			waited := d.now.Sub(n.DeletionTimestamp.Time)
			if applied(op.Target) || waited > teardownTimeout {
				if !applied(op.Target) {
					d.event(corev1.EventTypeWarning, "NodeGivenUp", "node %s did not stop its components within %s; it is released as it is", op.Target, teardownTimeout)
				}
				r.deleteTargetNode(ctx, d.mc, n)
				before := n.DeepCopy()
				controllerutil.RemoveFinalizer(n, NodeRemovalFinalizer)
				if err := r.Client.Patch(ctx, n, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
					return false, err
				}
				d.finish(op.Type, fmt.Sprintf("node %s removed from the cluster", op.Target))
				return true, nil
			}
		}
	}
	return false, nil
}

// rollout shows the upgrade or certificate rotation the planner is rolling out.
func (d *day2) rollout(out *planner.Output) {
	op := d.status.Operation
	if out.Rollout == nil {
		if op != nil {
			what := "every node runs Kubernetes " + op.Target
			if op.Type == v1alpha1.OperationCertificateRotation {
				what = "every node has certificates of generation " + op.Target
			}
			d.finish(op.Type, what)
		}
		return
	}
	opType, target := v1alpha1.OperationCertificateRotation, fmt.Sprint(gen(d.status.CertificatesGeneration))
	if out.Rollout.Kind == "Upgrade" {
		opType, target = v1alpha1.OperationUpgrade, d.mc.Spec.Provisioning.KubernetesVersion
	}
	if op == nil || op.Type != opType || op.Target != target {
		d.begin(opType, 0, target, "", "")
		d.event(corev1.EventTypeNormal, opType+"Started", "rolling out %s", target)
	}
	op = d.status.Operation
	op.Phase, op.Node = out.Rollout.Phase, strings.Join(out.Rollout.Nodes, ",")
	op.Message = fmt.Sprintf("%d of %d nodes done", out.Rollout.Done, out.Rollout.Total)
	if len(out.Rollout.Drain) > 0 {
		op.Message += "; draining " + strings.Join(out.Rollout.Drain, ",")
		if d.drainNote != "" {
			op.Message += ": " + d.drainNote
		}
	} else if out.Waiting != "" {
		op.Message += "; waiting for " + out.Waiting
	}
}

// failure returns the message of a node's failing step when it is the named
// instruction.
func (d *day2) failure(node, instruction string) string {
	n := d.node(node)
	if n == nil || n.Status.Failure == nil || !strings.Contains(n.Status.Failure.Step, "("+instruction+")") {
		return ""
	}
	return n.Status.Failure.Message
}

// keep records the planner's decision in the status.
func (d *day2) keep(out *planner.Output) {
	if out.Nodes != nil {
		d.status.Nodes = d.status.Nodes[:0]
		for name, st := range out.Nodes {
			d.status.Nodes = append(d.status.Nodes, v1alpha1.ProvisionedNode{Name: name, KubernetesVersion: st.Version, CertificatesGeneration: st.CertificatesGeneration})
		}
		sort.Slice(d.status.Nodes, func(i, j int) bool { return d.status.Nodes[i].Name < d.status.Nodes[j].Name })
	}
	if out.Reached != "" {
		d.status.ReachedTier = string(out.Reached)
	}
	if !out.CertificatesExpire.IsZero() {
		t := metav1.NewTime(out.CertificatesExpire.UTC().Truncate(time.Second))
		if d.status.CertificatesExpire == nil || !d.status.CertificatesExpire.Equal(&t) {
			d.status.CertificatesExpire = &t
		}
	}
}

// conditions sets the operation conditions on the cluster.
func (d *day2) conditions() {
	if op := d.status.Operation; op != nil {
		msg := op.Phase
		if op.Node != "" {
			msg += " on node " + op.Node
		}
		if op.Message != "" {
			msg += ": " + op.Message
		}
		if op.Target != "" {
			msg = op.Target + ": " + strings.TrimPrefix(msg, ": ")
		}
		d.result(op.Type, metav1.ConditionTrue, v1alpha1.ReasonInProgress, msg)
	}
	for _, c := range d.results {
		set(d.mc, c.Type, c.Status, c.Reason, c.Message)
	}
}

// deleteTargetNode deletes a leaving node's Node object in the cluster, through the
// hub's kubeconfig for it, best effort: a cluster that cannot be reached keeps a
// NotReady Node, which says so in an event.
func (r *ProvisioningReconciler) deleteTargetNode(ctx context.Context, mc *v1alpha1.ManagedCluster, n *v1alpha1.ClusterNode) {
	cs, err := r.targetClientset(ctx, mc)
	if err != nil {
		return // no kubeconfig yet, or none that parses: there is no Node to delete
	}
	err = cs.CoreV1().Nodes().Delete(ctx, n.Spec.Hostname, metav1.DeleteOptions{})
	if client.IgnoreNotFound(err) != nil {
		r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "NodeNotDeleted", "Remove",
			"node %s left, but its Node object %s could not be deleted in the cluster: %v", n.Name, n.Spec.Hostname, err)
	}
}

// snapshotDue says whether a scheduled snapshot is due at now, and when the next
// one is: a schedule counts from the newest snapshot (or from the cluster's
// creation), so that a manager that was down takes one snapshot when it returns,
// not every one it missed.
func snapshotDue(schedule string, created time.Time, snapshots []v1alpha1.EtcdSnapshot, now time.Time) (bool, time.Time, error) {
	sched, err := cron.ParseStandard(schedule)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("spec.provisioning.etcdSnapshotSchedule %q: %w", schedule, err)
	}
	last := created
	for _, s := range snapshots {
		if s.CreatedAt != nil && s.CreatedAt.After(last) {
			last = s.CreatedAt.Time
		}
	}
	next := sched.Next(last.UTC())
	if !next.After(now) {
		return true, sched.Next(now.UTC()), nil
	}
	return false, next, nil
}

// Keys of the Secret that spec.provisioning.etcdSnapshotS3.credentialsSecretRef names.
const (
	s3AccessKeyID     = "accessKeyID"
	s3SecretAccessKey = "secretAccessKey"
	s3SessionToken    = "sessionToken"
)

// snapshotS3 reads spec.provisioning.etcdSnapshotS3 and its credentials. It
// returns nil and "" when it is not set, and a problem, naming the field, when
// it cannot be used; an error only when the hub cannot be read.
func (r *ProvisioningReconciler) snapshotS3(ctx context.Context, mc *v1alpha1.ManagedCluster) (*snapshotstore.Config, string, error) {
	spec := mc.Spec.Provisioning.EtcdSnapshotS3
	if spec == nil {
		return nil, "", nil
	}
	cfg := snapshotstore.Config{Endpoint: spec.Endpoint, Bucket: spec.Bucket, Folder: spec.Folder, Region: spec.Region,
		CA: spec.EndpointCA, Insecure: spec.Insecure}
	if ref := spec.CredentialsSecretRef; ref != nil {
		field := "spec.provisioning.etcdSnapshotS3.credentialsSecretRef"
		var sec corev1.Secret
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: ref.Name}, &sec); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Sprintf("%s: Secret %s/%s does not exist", field, r.Namespace, ref.Name), nil
			}
			return nil, "", err
		}
		cfg.AccessKeyID = string(sec.Data[s3AccessKeyID])
		cfg.SecretAccessKey = string(sec.Data[s3SecretAccessKey])
		cfg.SessionToken = string(sec.Data[s3SessionToken])
		if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
			return nil, fmt.Sprintf("%s: Secret %s/%s needs the keys %s and %s", field, r.Namespace, ref.Name, s3AccessKeyID, s3SecretAccessKey), nil
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, "spec.provisioning.etcdSnapshotS3: " + err.Error(), nil
	}
	return &cfg, "", nil
}
