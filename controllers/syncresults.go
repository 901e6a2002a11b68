package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// itemResult is what one cluster's last sync did for one intent.
type itemResult struct {
	// Generation of the intent that was rendered.
	Generation int64
	OK         bool
	Reason     string
	// Message says why the item failed, or notes something about an item that holds.
	Message string
	// Used and Hard sum a project's namespace quotas in the cluster (projects only).
	Used, Hard corev1.ResourceList
	// HeldGeneration is the last generation the cluster held, kept through syncs
	// that fail the item, so that propagation is measured once per change.
	HeldGeneration int64
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
	// Projects holds a result for every ClusterProject placed on the cluster.
	Projects map[string]itemResult
	// Agent is the result of the agent's objects: OK once installed as desired.
	Agent itemResult
	// Since is when the sync started that began the cluster's current run of
	// completed syncs (zero when not Synced), for drover_intent_propagation_seconds.
	Since time.Time
}

// syncResults keeps every cluster's last sync outcome in memory; the status
// controllers turn it into AccessBinding and RoleTemplate status. It is rebuilt after
// a restart by the first sync of each cluster, which every connection triggers.
type syncResults struct {
	// started is when the manager started: only clusters created before it can
	// have been described by status that a restart should keep.
	started  time.Time
	mu       sync.Mutex
	clusters map[string]clusterResult
	queues   map[string][]workqueue.TypedRateLimitingInterface[reconcile.Request]
	// spacing spaces each intent's status recomputations while its clusters
	// report one after another.
	spacing spacer
}

// statusSpacing is the least time between two status recomputations of one intent
// that its clusters' results ask for. A change that reaches a thousand clusters
// brings a thousand results within a few seconds: each would recompute the intent's
// status over the whole fleet and write it (12/1000, 13/1000, ...). The first result
// is passed on at once (a change to a few clusters shows in status as soon as it
// holds), later ones at most once per statusSpacing, and the last is never dropped,
// so status still ends up describing every cluster, a fraction of a second later.
const statusSpacing = 500 * time.Millisecond

// spacer spaces recomputations per key: delay says how long to wait before
// enqueueing a key so that it runs at most once per interval.
type spacer struct {
	mu sync.Mutex
	// next holds, per key, when it was last let through or is due to be.
	next  map[string]time.Time
	swept time.Time
}

// delay returns how long to wait before enqueueing key (0: at once), and books that
// time. A key already due later joins that time: the workqueue holds one waiting
// item per key and keeps the earliest time it was asked for.
func (s *spacer) delay(key string, now time.Time, interval time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = map[string]time.Time{}
	}
	if now.Sub(s.swept) > time.Minute {
		// Forget keys not seen for a while (deleted intents).
		for k, t := range s.next {
			if now.Sub(t) > interval {
				delete(s.next, k)
			}
		}
		s.swept = now
	}
	last, seen := s.next[key]
	switch {
	case seen && last.After(now):
		return last.Sub(now)
	case !seen || now.Sub(last) >= interval:
		s.next[key] = now
		return 0
	}
	due := last.Add(interval)
	s.next[key] = due
	return due.Sub(now)
}

const (
	kindAccessBinding  = "AccessBinding"
	kindRoleTemplate   = "RoleTemplate"
	kindManagedCluster = "ManagedCluster"
	kindClusterProject = "ClusterProject"
)

// summary is a one-line account of a cluster's result, for its Synced condition.
func (c clusterResult) summary() (ok bool, reason, message string) {
	if !c.Synced {
		return false, c.Reason, c.Message
	}
	var failed []string
	for _, kind := range []struct {
		what  string
		items map[string]itemResult
	}{{"AccessBinding", c.Bindings}, {"RoleTemplate", c.Templates}, {"ClusterProject", c.Projects}} {
		for _, name := range sortedNames(kind.items) {
			if it := kind.items[name]; !it.OK {
				failed = append(failed, fmt.Sprintf("%s %s: %s", kind.what, name, it.Reason))
			}
		}
	}
	if len(failed) == 0 {
		// No counts: a message that changed with every intent added or removed
		// would rewrite every ManagedCluster's status on each change (a thousand
		// hub writes per AccessBinding at a thousand clusters).
		return true, v1alpha1.ReasonSucceeded, "holds every RoleTemplate, AccessBinding and ClusterProject placed on it"
	}
	msg := strings.Join(failed, "; ")
	if len(failed) > 5 {
		msg = strings.Join(failed[:5], "; ") + fmt.Sprintf("; and %d more", len(failed)-5)
	}
	return false, v1alpha1.ReasonSyncFailed, fmt.Sprintf("%d intents not held: %s", len(failed), msg)
}

func sortedNames(m map[string]itemResult) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func newSyncResults() *syncResults {
	return &syncResults{started: time.Now(), clusters: map[string]clusterResult{}, queues: map[string][]workqueue.TypedRateLimitingInterface[reconcile.Request]{}}
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

// before tells whether t is before the manager started.
func (r *syncResults) before(t time.Time) bool { return t.Before(r.started) }

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
	mq := append([]workqueue.TypedRateLimitingInterface[reconcile.Request](nil), r.queues[kindManagedCluster]...)
	pq := append([]workqueue.TypedRateLimitingInterface[reconcile.Request](nil), r.queues[kindClusterProject]...)
	r.mu.Unlock()

	ok1, r1, m1 := old.summary()
	ok2, r2, m2 := res.summary()
	if !had || !keep || ok1 != ok2 || r1 != r2 || m1 != m2 || !equality.Semantic.DeepEqual(old.Agent, res.Agent) {
		for _, q := range mq {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: cluster}})
		}
	}

	clusterChanged := !had || old.Synced != res.Synced || old.Reason != res.Reason || old.Message != res.Message || !keep
	now := time.Now()
	notify := func(kind string, queues []workqueue.TypedRateLimitingInterface[reconcile.Request], before, after map[string]itemResult) {
		enqueue := func(name string) {
			d := r.spacing.delay(kind+"/"+name, now, statusSpacing)
			for _, q := range queues {
				q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}}, d)
			}
		}
		for name, a := range after {
			if b, ok := before[name]; clusterChanged || !ok || !equality.Semantic.DeepEqual(a, b) {
				enqueue(name)
			}
		}
		for name := range before {
			if _, ok := after[name]; !ok {
				enqueue(name)
			}
		}
	}
	notify(kindAccessBinding, bq, old.Bindings, res.Bindings)
	notify(kindRoleTemplate, tq, old.Templates, res.Templates)
	notify(kindClusterProject, pq, old.Projects, res.Projects)
}
