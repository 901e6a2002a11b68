package controllers

import (
	"context"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/sharding"
)

// Sharding (--shard=K/N, docs/sharding.md): a replica connects to, syncs and writes
// the status of the ManagedClusters of the shards it holds, and of no others. The
// ManagedCluster controller, the cluster syncer and the provisioning controller skip
// every other cluster; the status controllers write, for each shard held, that
// shard's entry in an intent's status.shards, and the replica that holds shard 0
// sums the entries into the rest of the intent's status (intent_shards.go).

// owns tells whether this replica handles mc: always, unless the hub is sharded.
func owns(s *sharding.Shards, mc *v1alpha1.ManagedCluster) bool {
	return s == nil || s.Owns(mc.Name, mc.Labels)
}

// aggregates tells whether this replica writes the intents' summary status: always,
// unless the hub is sharded; then the replica that holds shard 0.
func aggregates(s *sharding.Shards) bool {
	return s == nil || s.Holds(0)
}

// shardChanges enqueues every object of a list each time the shards this replica
// holds change; nil (a source that does nothing) when the hub is not sharded.
func shardChanges(s *sharding.Shards, c client.Client, newList func() client.ObjectList) source.Source {
	return source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		if s == nil {
			return nil
		}
		all := func() {
			for _, r := range requestsForAll(ctx, c, newList()) {
				q.Add(r)
			}
		}
		s.OnChange(all)
		// Shards taken before this controller started (its first reconciles may
		// have found nothing held) are not missed: look at everything once more.
		if len(s.Held()) > 0 {
			go all()
		}
		return nil
	})
}

// shardLabelChanged passes updates that move a ManagedCluster to another shard.
func shardLabelChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetLabels()[sharding.Label] != e.ObjectNew.GetLabels()[sharding.Label]
		},
	}
}
