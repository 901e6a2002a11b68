package controllers

import (
	"context"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/sharding"
)

// An intent's status in a sharded hub. Each replica knows the sync results of the
// clusters of the shards it holds, and no others. So:
//   - for each shard K it holds, a replica writes status.shards[K]: how many of the
//     shard's clusters hold the intent, the counts of the others by class, the first
//     failures and (projects) each cluster's state. It writes it with server-side
//     apply and field manager drover-shard-K, so entries of different shards never
//     overwrite each other, whichever replica holds them;
//   - the replica that holds shard 0 computes the rest of status (Ready, counts,
//     failures) from its own rows and the other shards' entries, and is the only
//     one that writes it.
// Every write is compared first: an idle hub writes nothing, and no two replicas
// write the same field.

// shardFieldManager is the field manager of shard k's entries.
func shardFieldManager(k int) string { return "drover-shard-" + fmt.Sprint(k) }

// shardPass collects, during one status computation, the rows of the clusters of the
// shards this replica holds, and the names of the others' clusters.
type shardPass struct {
	shards *sharding.Shards
	gen    int64
	local  map[int][]clusterRow
	remote map[int][]string
	// projects holds the per-cluster project state of local rows (ClusterProject).
	projects map[string]v1alpha1.ProjectClusterStatus
}

// newShardPass returns nil when the hub is not sharded: every method of a nil pass
// says "local".
func newShardPass(s *sharding.Shards, gen int64) *shardPass {
	if s == nil {
		return nil
	}
	return &shardPass{shards: s, gen: gen, local: map[int][]clusterRow{}, remote: map[int][]string{},
		projects: map[string]v1alpha1.ProjectClusterStatus{}}
}

// elsewhere records mc as a cluster of a shard this replica does not hold, and says
// so; its row comes from that shard's entry.
func (p *shardPass) elsewhere(mc *v1alpha1.ManagedCluster) bool {
	if p == nil {
		return false
	}
	k := p.shards.Of(mc.Name, mc.Labels)
	if p.shards.Holds(k) {
		return false
	}
	p.remote[k] = append(p.remote[k], mc.Name)
	return true
}

// add records the row of a cluster of a shard this replica holds.
func (p *shardPass) add(mc *v1alpha1.ManagedCluster, row clusterRow) {
	if p == nil {
		return
	}
	k := p.shards.Of(mc.Name, mc.Labels)
	p.local[k] = append(p.local[k], row)
}

// addProject records a cluster's project state, for shard entries.
func (p *shardPass) addProject(cs v1alpha1.ProjectClusterStatus) {
	if p != nil {
		p.projects[cs.Cluster] = cs
	}
}

// entries returns the entries of the shards this replica holds, as they should be.
func (p *shardPass) entries() []v1alpha1.ShardStatus {
	var out []v1alpha1.ShardStatus
	for _, k := range p.shards.Held() {
		rows := append([]clusterRow(nil), p.local[k]...)
		s := summarizeRows(rows)
		e := v1alpha1.ShardStatus{Shard: int32(k), ObservedGeneration: p.gen, Clusters: s.total, Synced: s.synced,
			Pending: int32(s.count[rowPending]), Retrying: int32(s.count[rowRetrying]), Stalled: int32(s.count[rowStalled]),
			NotConnected: int32(s.count[rowAway]), Failures: s.failures}
		for _, r := range rows {
			if cs, ok := p.projects[r.cluster]; ok && len(e.ProjectClusters) < maxProjectClusters {
				e.ProjectClusters = append(e.ProjectClusters, cs)
			}
		}
		out = append(out, e)
	}
	return out
}

// remoteRows returns rows for the clusters of the shards this replica does not
// hold, from their entries in existing. A shard whose entry is missing, describes
// another generation or another number of clusters has its clusters Pending. valid
// holds the entries used.
func (p *shardPass) remoteRows(existing []v1alpha1.ShardStatus) (rows []clusterRow, valid map[int]v1alpha1.ShardStatus) {
	if p == nil {
		return nil, nil
	}
	byShard := map[int]v1alpha1.ShardStatus{}
	for _, e := range existing {
		byShard[int(e.Shard)] = e
	}
	valid = map[int]v1alpha1.ShardStatus{}
	ks := make([]int, 0, len(p.remote))
	for k := range p.remote {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	for _, k := range ks {
		names := p.remote[k]
		e, ok := byShard[k]
		if !ok || e.ObservedGeneration != p.gen || int(e.Clusters) != len(names) {
			for _, n := range names {
				rows = append(rows, clusterRow{cluster: n, reason: v1alpha1.ReasonPending,
					message: fmt.Sprintf("shard %d has not reported generation %d yet", k, p.gen)})
			}
			continue
		}
		valid[k] = e
		for range e.Synced {
			rows = append(rows, clusterRow{synced: true, hidden: true})
		}
		sampled := map[rowClass]int{}
		for _, f := range e.Failures {
			r := clusterRow{cluster: f.Cluster, reason: f.Reason, message: f.Message}
			sampled[classify(r)]++
			rows = append(rows, r)
		}
		for class, n := range map[rowClass]int32{rowPending: e.Pending, rowRetrying: e.Retrying, rowStalled: e.Stalled, rowAway: e.NotConnected} {
			for range int(n) - sampled[class] {
				rows = append(rows, clusterRow{hidden: true, class: class})
			}
		}
	}
	return rows, valid
}

// writeShardEntries applies the entries that differ from what obj's status holds.
func writeShardEntries(ctx context.Context, c client.Client, kind string, obj client.Object, existing, want []v1alpha1.ShardStatus) error {
	have := map[int32]v1alpha1.ShardStatus{}
	for _, e := range existing {
		have[e.Shard] = e
	}
	for _, e := range want {
		if h, ok := have[e.Shard]; ok && equality.Semantic.DeepEqual(normalEntry(h), normalEntry(e)) {
			continue
		}
		entry, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&e)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(v1alpha1.GroupVersion.String())
		u.SetKind(kind)
		u.SetName(obj.GetName())
		if err := unstructured.SetNestedSlice(u.Object, []any{entry}, "status", "shards"); err != nil {
			return err
		}
		if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
			client.FieldOwner(shardFieldManager(int(e.Shard))), client.ForceOwnership); err != nil {
			return fmt.Errorf("write the entry of shard %d: %w", e.Shard, err)
		}
	}
	return nil
}

// normalEntry drops the difference between an empty and a missing list.
func normalEntry(e v1alpha1.ShardStatus) v1alpha1.ShardStatus {
	if len(e.Failures) == 0 {
		e.Failures = nil
	}
	if len(e.ProjectClusters) == 0 {
		e.ProjectClusters = nil
	}
	return e
}

// shardsOf returns an intent's shard entries.
func shardsOf(o client.Object) []v1alpha1.ShardStatus {
	switch t := o.(type) {
	case *v1alpha1.AccessBinding:
		return t.Status.Shards
	case *v1alpha1.ClusterProject:
		return t.Status.Shards
	case *v1alpha1.RoleTemplate:
		return t.Status.Shards
	}
	return nil
}

// shardEntriesChanged passes updates that change an intent's shard entries, which
// the replica that holds shard 0 sums.
func shardEntriesChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !equality.Semantic.DeepEqual(shardsOf(e.ObjectOld), shardsOf(e.ObjectNew))
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
