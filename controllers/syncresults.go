package controllers

import (
	"context"
	"sync"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// itemResult is what one cluster's last sync did for one intent.
type itemResult struct {
	// Generation of the intent that was rendered.
	Generation int64
	OK         bool
	Reason     string
	Message    string
}

// clusterResult is the outcome of the last sync of one cluster.
type clusterResult struct {
	// Synced is false when the cluster could not be synced at all (disconnected,
	// paused); Reason and Message then say why.
	Synced  bool
	Reason  string
	Message string
	// Bindings and Templates hold a result for every AccessBinding that selects the
	// cluster and every RoleTemplate, as last rendered.
	Bindings  map[string]itemResult
	Templates map[string]itemResult
}

// syncResults keeps every cluster's last sync outcome in memory; the status
// controllers turn it into AccessBinding and RoleTemplate status. It is rebuilt after
// a restart by the first sync of each cluster, which every connection triggers.
type syncResults struct {
	mu       sync.Mutex
	clusters map[string]clusterResult
	queues   map[string][]workqueue.TypedRateLimitingInterface[reconcile.Request]
}

const (
	kindAccessBinding = "AccessBinding"
	kindRoleTemplate  = "RoleTemplate"
)

func newSyncResults() *syncResults {
	return &syncResults{clusters: map[string]clusterResult{}, queues: map[string][]workqueue.TypedRateLimitingInterface[reconcile.Request]{}}
}

// Source feeds a status controller of the given kind ("AccessBinding" or
// "RoleTemplate") the names of the intents whose results changed.
func (r *syncResults) Source(kind string) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.queues[kind] = append(r.queues[kind], q)
		return nil
	})
}

// get returns a cluster's result.
func (r *syncResults) get(cluster string) (clusterResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.clusters[cluster]
	return res, ok
}

// set records a cluster's result and notifies the status controllers of every intent
// whose result changed. A zero result with ok=false removes the cluster.
func (r *syncResults) set(cluster string, res clusterResult, keep bool) {
	r.mu.Lock()
	old, had := r.clusters[cluster]
	if keep {
		r.clusters[cluster] = res
	} else {
		delete(r.clusters, cluster)
	}
	bq := append([]workqueue.TypedRateLimitingInterface[reconcile.Request](nil), r.queues[kindAccessBinding]...)
	tq := append([]workqueue.TypedRateLimitingInterface[reconcile.Request](nil), r.queues[kindRoleTemplate]...)
	r.mu.Unlock()

	clusterChanged := !had || old.Synced != res.Synced || old.Reason != res.Reason || old.Message != res.Message || !keep
	notify := func(queues []workqueue.TypedRateLimitingInterface[reconcile.Request], before, after map[string]itemResult) {
		for name, a := range after {
			if b, ok := before[name]; clusterChanged || !ok || b != a {
				for _, q := range queues {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
				}
			}
		}
		for name := range before {
			if _, ok := after[name]; !ok {
				for _, q := range queues {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
				}
			}
		}
	}
	notify(bq, old.Bindings, res.Bindings)
	notify(tq, old.Templates, res.Templates)
}
