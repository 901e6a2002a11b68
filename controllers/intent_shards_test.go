package controllers

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// TestShardEntries checks that the replica holding shard 0 sums the other shards'
// entries into the status an unsharded hub would write.
func TestShardEntries(t *testing.T) {
	local := []clusterRow{{cluster: "a", synced: true}}
	failures := func(n int, reason string) []v1alpha1.ClusterFailure {
		var out []v1alpha1.ClusterFailure
		for i := range n {
			out = append(out, v1alpha1.ClusterFailure{Cluster: fmt.Sprintf("r-%02d", i), Reason: reason, Message: "boom"})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		remote  []string
		entry   *v1alpha1.ShardStatus
		total   int32
		synced  int32
		ready   metav1.ConditionStatus
		reason  string
		kstatus kstatus.Status
		message string
	}{{
		name:   "all hold",
		remote: []string{"b", "c"},
		entry:  &v1alpha1.ShardStatus{Shard: 1, ObservedGeneration: 2, Clusters: 2, Synced: 2},
		total:  3, synced: 3, ready: metav1.ConditionTrue, reason: v1alpha1.ReasonSucceeded, kstatus: kstatus.CurrentStatus,
		message: "held by all 3 selected clusters",
	}, {
		name:   "another shard's failures are named",
		remote: []string{"b", "c", "d"},
		entry: &v1alpha1.ShardStatus{Shard: 1, ObservedGeneration: 2, Clusters: 3, Synced: 1, Stalled: 1, NotConnected: 1,
			Failures: []v1alpha1.ClusterFailure{{Cluster: "c", Reason: v1alpha1.ReasonClusterRoleNotFound, Message: "no view"}, {Cluster: "d", Reason: v1alpha1.ReasonDisconnected}}},
		total: 4, synced: 2, ready: metav1.ConditionFalse, reason: v1alpha1.ReasonClusterRoleNotFound, kstatus: kstatus.FailedStatus,
		message: "c: ClusterRoleNotFound (no view)",
	}, {
		name:   "an entry of an older generation is pending",
		remote: []string{"b", "c"},
		entry:  &v1alpha1.ShardStatus{Shard: 1, ObservedGeneration: 1, Clusters: 2, Synced: 2},
		total:  3, synced: 1, ready: metav1.ConditionFalse, reason: v1alpha1.ReasonProgressing, kstatus: kstatus.InProgressStatus,
		message: "shard 1 has not reported generation 2 yet",
	}, {
		name:   "an entry that counts other clusters is pending",
		remote: []string{"b", "c", "e"},
		entry:  &v1alpha1.ShardStatus{Shard: 1, ObservedGeneration: 2, Clusters: 2, Synced: 2},
		total:  4, synced: 1, ready: metav1.ConditionFalse, reason: v1alpha1.ReasonProgressing, kstatus: kstatus.InProgressStatus,
	}, {
		name:   "no entry is pending",
		remote: []string{"b"},
		total:  2, synced: 1, ready: metav1.ConditionFalse, reason: v1alpha1.ReasonProgressing, kstatus: kstatus.InProgressStatus,
	}, {
		name:   "failures beyond those an entry names are counted",
		remote: make([]string, 30),
		entry:  &v1alpha1.ShardStatus{Shard: 1, ObservedGeneration: 2, Clusters: 30, Synced: 5, Retrying: 25, Failures: failures(20, v1alpha1.ReasonApplyFailed)},
		total:  31, synced: 6, ready: metav1.ConditionFalse, reason: v1alpha1.ReasonApplyFailed, kstatus: kstatus.InProgressStatus,
		message: "and 22 more (see status)",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := &shardPass{gen: 2, remote: map[int][]string{1: tc.remote}}
			var existing []v1alpha1.ShardStatus
			if tc.entry != nil {
				existing = append(existing, *tc.entry)
			}
			rows, _ := p.remoteRows(existing)
			rows = append(rows, local...)
			b := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "x", Generation: 2}}
			setIntentStatus(b, nil, rows, "selected")
			b.Status.ObservedGeneration = 2
			s := summarizeRows(rows)
			if s.total != tc.total || s.synced != tc.synced {
				t.Errorf("held by %d of %d, want %d of %d", s.synced, s.total, tc.synced, tc.total)
			}
			for _, f := range s.failures {
				if f.Cluster == "" {
					t.Errorf("a failure without a cluster: %+v", f)
				}
			}
			ready := conditions.Get(b, v1alpha1.ReadyCondition)
			if ready.Status != tc.ready || ready.Reason != tc.reason || !strings.Contains(ready.Message, tc.message) {
				t.Errorf("Ready = %s %s %q; want %s %s, containing %q", ready.Status, ready.Reason, ready.Message, tc.ready, tc.reason, tc.message)
			}
			if got := kstatusOf(t, b); got != tc.kstatus {
				t.Errorf("kstatus %s, want %s", got, tc.kstatus)
			}
		})
	}
}
