package controllers

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// The status of the intents (AccessBinding, RoleTemplate, ClusterProject) follows
// kstatus, so that Flux, Argo CD and `kubectl wait` read it the same way:
//   - Ready: every selected cluster that is connected holds the intent at its
//     current generation. A cluster that is not connected (or is paused, being
//     deleted, or a duplicate of another ManagedCluster) is listed in
//     status.failures and in the message, and does not hold Ready back: a Flux
//     health check must not time out because one cluster of a hundred is down.
//   - Stalled: a person must act: the spec or a reference is invalid, a named
//     cluster does not exist, or a target holds a conflicting object, lacks a
//     referenced ClusterRole, or refuses an object for good (403, 422).
//   - Reconciling: clusters are being synced, or retried after a transient failure.
// These functions are pure, and table-tested with kstatus itself.

// clusterRow is one cluster's state for one intent.
type clusterRow struct {
	cluster string
	synced  bool
	reason  string
	message string
	// previous: taken from the intent's status, as the cluster has not been synced
	// since the manager started.
	previous bool
	// hidden: a row of another shard's cluster that its entry counts but does not
	// name (intent_shards.go); class is its class. It is counted, never described.
	hidden bool
	class  rowClass
}

// rowClass is what one cluster's row means for the intent's readiness.
type rowClass int

const (
	// rowHolds: the cluster holds the intent.
	rowHolds rowClass = iota
	// rowPending: the cluster has not been synced since the intent changed.
	rowPending
	// rowRetrying: syncing failed in a way that is retried by itself.
	rowRetrying
	// rowStalled: a person must act before the cluster can hold the intent.
	rowStalled
	// rowAway: the cluster is not connected, or not Drover's to sync through this
	// ManagedCluster (paused, being deleted, a duplicate); reported, not counted.
	rowAway
)

// classify tells what a row means for readiness, from its reason alone, so that the
// rows a restart takes from status.failures classify as they did before.
func classify(r clusterRow) rowClass {
	if r.synced {
		return rowHolds
	}
	if r.hidden {
		return r.class
	}
	switch r.reason {
	case v1alpha1.ReasonPending:
		return rowPending
	case v1alpha1.ReasonDisconnected, v1alpha1.ReasonPaused, v1alpha1.ReasonClusterDeleting,
		v1alpha1.ReasonDuplicateCluster, v1alpha1.ReasonIdentityUnknown:
		return rowAway
	case v1alpha1.ReasonConflict, v1alpha1.ReasonRejected, v1alpha1.ReasonClusterRoleNotFound, v1alpha1.ReasonClusterNotFound:
		return rowStalled
	}
	return rowRetrying
}

// rowFor reads one cluster's result for one intent at generation gen. A cluster not
// synced since the manager started gets what the intent's status last said of it
// (prev), so that a restart does not flap status.
func rowFor(results *syncResults, mc *v1alpha1.ManagedCluster, gen int64, prev previous, pick func(clusterResult) (itemResult, bool)) clusterRow {
	cluster := mc.Name
	res, ok := results.get(cluster)
	switch {
	case !ok && prev.valid && results.before(mc.CreationTimestamp.Time):
		// Only a cluster that existed before the manager started can have been
		// described by the intent's status; a newer one is pending.
		if row, failed := prev.failures[cluster]; failed {
			row.previous = true
			return row
		}
		return clusterRow{cluster: cluster, synced: true, previous: true}
	case !ok:
		return clusterRow{cluster: cluster, reason: v1alpha1.ReasonPending, message: "not synced yet"}
	case !res.Synced:
		return clusterRow{cluster: cluster, reason: res.Reason, message: res.Message}
	}
	it, ok := pick(res)
	switch {
	case !ok:
		return clusterRow{cluster: cluster, reason: v1alpha1.ReasonPending, message: "not synced yet"}
	case it.Generation != gen:
		return clusterRow{cluster: cluster, reason: v1alpha1.ReasonPending, message: fmt.Sprintf("generation %d not synced yet", gen)}
	case !it.OK:
		return clusterRow{cluster: cluster, reason: it.Reason, message: it.Message}
	}
	return clusterRow{cluster: cluster, synced: true}
}

// missingRows returns a row for each cluster that sel names and that does not exist:
// a typo in a name is Stalled, never a selection of nothing that passes as Ready.
// whose says whose selection it is, for the message ("spec.clusters.names").
func missingRows(sel *v1alpha1.ClusterSelection, clusters []v1alpha1.ManagedCluster, whose string) []clusterRow {
	if sel == nil || len(sel.Names) == 0 {
		return nil
	}
	exists := make(map[string]bool, len(clusters))
	for i := range clusters {
		exists[clusters[i].Name] = true
	}
	var rows []clusterRow
	for _, n := range sel.Names {
		if !exists[n] {
			rows = append(rows, clusterRow{cluster: n, reason: v1alpha1.ReasonClusterNotFound,
				message: fmt.Sprintf("no ManagedCluster is named %q; fix %s or register the cluster", n, whose)})
		}
	}
	return rows
}

// previous is what an intent's status last said of each cluster; valid when that
// status describes the current generation.
type previous struct {
	valid    bool
	failures map[string]clusterRow
}

func previousOf(gen, observed int64, failures []v1alpha1.ClusterFailure) previous {
	p := previous{valid: observed == gen && gen != 0, failures: map[string]clusterRow{}}
	for _, f := range failures {
		p.failures[f.Cluster] = clusterRow{cluster: f.Cluster, reason: f.Reason, message: f.Message}
	}
	return p
}

type rowSummary struct {
	// total counts every row (the selected clusters, and the named ones that do
	// not exist); synced those that hold the intent.
	total, synced int32
	// count is the number of rows of each class.
	count    map[rowClass]int
	failures []v1alpha1.ClusterFailure
}

// connected counts the rows of clusters that can be synced.
func (s rowSummary) connected() int { return int(s.total) - s.count[rowAway] }

func summarizeRows(rows []clusterRow) rowSummary {
	sort.Slice(rows, func(i, j int) bool { return rows[i].cluster < rows[j].cluster })
	s := rowSummary{total: int32(len(rows)), count: map[rowClass]int{}}
	for _, r := range rows {
		s.count[classify(r)]++
		if r.synced {
			s.synced++
			continue
		}
		if !r.hidden && len(s.failures) < v1alpha1.MaxReportedFailures {
			s.failures = append(s.failures, v1alpha1.ClusterFailure{Cluster: r.cluster, Reason: r.reason, Message: truncate(r.message, 1024)})
		}
	}
	return s
}

// setIntentStatus sets Ready, Reconciling and Stalled from a spec problem and the
// clusters' rows. what says how the clusters were chosen ("selected", "placed",
// "registered"), for messages.
func setIntentStatus(obj intentObject, problem *render.Problem, rows []clusterRow, what string) {
	if problem != nil {
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, problem.Reason, problem.Message)
		set(obj, v1alpha1.StalledCondition, metav1.ConditionTrue, problem.Reason, problem.Message)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, problem.Reason, "waiting for the spec or its references to be fixed")
		return
	}
	s := summarizeRows(rows)
	connected := s.connected()
	held := fmt.Sprintf("held by %d of %d %s clusters", s.synced, s.total, what)
	if s.count[rowAway] > 0 {
		held = fmt.Sprintf("held by %d of %d connected %s clusters", s.synced, connected, what)
	}
	away := ""
	if n := s.count[rowAway]; n > 0 {
		away = fmt.Sprintf("; %d not connected: %s", n, describeRows(rows, rowAway))
	}
	switch {
	case s.total == 0:
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonNoClustersSelected, "no cluster is "+what)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonNoClustersSelected, "")
		set(obj, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonNoClustersSelected, "")
	case s.count[rowStalled] > 0:
		reason := commonReason(rows, rowStalled)
		msg := describeRows(rows, rowStalled)
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, reason, held+"; "+msg+away)
		set(obj, v1alpha1.StalledCondition, metav1.ConditionTrue, reason, "a person must act: "+msg)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, reason, "waiting for the clusters listed in status to be fixed")
	case s.count[rowPending] > 0:
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonProgressing, held+"; "+describeRows(rows, rowPending)+away)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ReasonProgressing, "syncing the clusters")
		set(obj, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonProgressing, "")
	case s.count[rowRetrying] > 0:
		reason := commonReason(rows, rowRetrying)
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, reason, held+"; "+describeRows(rows, rowRetrying)+away)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, reason, "retrying the clusters that failed")
		set(obj, v1alpha1.StalledCondition, metav1.ConditionFalse, reason, "")
	case connected == 0:
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonNoClustersConnected,
			fmt.Sprintf("none of the %d %s clusters is connected; it is applied to each as it connects%s", s.total, what, away))
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonNoClustersConnected, "")
		set(obj, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonNoClustersConnected, "")
	default:
		msg := fmt.Sprintf("held by all %d %s clusters", s.total, what)
		if s.count[rowAway] > 0 {
			msg = fmt.Sprintf("held by all %d connected %s clusters%s", connected, what, away)
		}
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, msg)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "")
		set(obj, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "")
	}
}

// describedRows is how many rows a condition message describes.
const describedRows = 3

// describeRows lists the first rows of a class, "cluster: Reason (message)", and how
// many more there are.
func describeRows(rows []clusterRow, class rowClass) string {
	const limit = describedRows
	var parts []string
	n := 0
	for _, r := range rows {
		if classify(r) != class {
			continue
		}
		n++
		if len(parts) == limit || r.hidden {
			continue
		}
		p := r.cluster + ": " + r.reason
		if r.message != "" {
			p += " (" + truncate(r.message, 256) + ")"
		}
		parts = append(parts, p)
	}
	out := strings.Join(parts, "; ")
	if n > limit {
		out += fmt.Sprintf("; and %d more (see status)", n-limit)
	}
	return out
}

// commonReason is the reason the rows of a class share, or SyncFailed when they differ.
func commonReason(rows []clusterRow, class rowClass) string {
	reason := ""
	for _, r := range rows {
		if classify(r) != class || r.hidden {
			continue
		}
		if reason != "" && r.reason != reason {
			return v1alpha1.ReasonSyncFailed
		}
		reason = r.reason
	}
	if reason == "" {
		return v1alpha1.ReasonSyncFailed
	}
	return reason
}
