package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/cluster-api/util/conditions"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/sharding"
	"github.com/drover-io/drover/targetsync"
)

// missingRoleRecheck is how often a cluster whose bindings refer to a ClusterRole it
// lacks is looked at again (Drover does not watch ClusterRoles it does not own).
const missingRoleRecheck = 30 * time.Second

// ClusterSyncReconciler is the per-cluster syncer, the one writer into every target:
// for one ManagedCluster it renders the intents and the agent into the objects the
// target must hold, applies and prunes them (targetsync), and records the outcome for
// the status controllers. It watches the objects it owns in the target, so a deleted
// or edited object is restored at once. It adds the cleanup finalizer just before its
// first write into a target, and on deletion prunes everything it applied there.
type ClusterSyncReconciler struct {
	Client client.Client
	// Reader reads straight from the API server, when the cache is behind.
	Reader        client.Reader
	Remote        *remote.Cache
	Results       *syncResults
	Recorder      events.EventRecorder
	RemoteTimeout time.Duration
	// Hub is this hub's ID (render.HubLabel).
	Hub string
	// AgentImage is the image of the agent Deployment in each target.
	AgentImage string
	// Workers bounds the writes in flight to one target.
	Workers int
	// DeletionTimeout bounds how long deletion waits for an unreachable target.
	DeletionTimeout time.Duration
	// Shards are the shards this replica holds; nil when the hub is not sharded.
	// Only the replica that holds a cluster's shard writes into it.
	Shards *sharding.Shards

	controller controller.Controller
	// rev counts intent changes; a sync stops between writes when it moves, so that
	// a newer state (a revocation, say) never waits behind a long sync.
	rev atomic.Uint64

	mu sync.Mutex
	// failures holds what each cluster's last failed sync left undone, so that it
	// is logged once, not on every retry.
	failures map[string]string
	// retries spaces the retries of failed syncs, per cluster.
	retries workqueue.TypedRateLimiter[string]
	// changeLog says when the hub saw each intent change.
	changeLog *changeLog
	// prepared is the cluster-independent part of rendering the current intents,
	// shared by every cluster's sync until an intent changes.
	prepared render.PreparedCache
}

// SetupWithManager registers the syncer.
func (r *ClusterSyncReconciler) SetupWithManager(mgr ctrl.Manager) error {
	allClusters := handler.EnqueueRequestsFromMapFunc(r.allClusters)
	intentChanged := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionPredicate()))
	c, err := ctrl.NewControllerManagedBy(mgr).
		Named("clustersync").
		For(&v1alpha1.ManagedCluster{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, deletionPredicate(), clusterIDChanged(),
			connectedChanged()))).
		Watches(&v1alpha1.ManagedCluster{}, duplicatePeers(r.Client)).
		Watches(&v1alpha1.RoleTemplate{}, r.changes().handler(kindRoleTemplate, allClusters), intentChanged).
		Watches(&v1alpha1.AccessBinding{}, r.changes().handler(kindAccessBinding, allClusters), intentChanged).
		Watches(&v1alpha1.ClusterProject{}, r.changes().handler(kindClusterProject, allClusters), intentChanged).
		WatchesRawSource(r.Remote.Source()).
		WatchesRawSource(shardChanges(r.Shards, r.Client, func() client.ObjectList { return &v1alpha1.ManagedClusterList{} })).
		WithOptions(controller.Options{MaxConcurrentReconciles: 10}).
		Build(r)
	if err != nil {
		return err
	}
	r.controller = c
	return nil
}

// clusterIDChanged passes status updates that record or change a cluster's identity,
// which decide which of two ManagedClusters of one target may write.
func clusterIDChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1alpha1.ManagedCluster)
		n, ok2 := e.ObjectNew.(*v1alpha1.ManagedCluster)
		return ok1 && ok2 && o.Status.ClusterID != n.Status.ClusterID
	}}
}

// duplicatePeers enqueues the other ManagedClusters of the same target (same
// status.clusterID) when one goes, or its identity changes: a duplicate waiting
// behind it may now take over.
func duplicatePeers(c client.Client) handler.EventHandler {
	peers := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
		ids := map[string]string{}
		for _, o := range objs {
			if mc, ok := o.(*v1alpha1.ManagedCluster); ok && mc.Status.ClusterID != "" {
				ids[mc.Status.ClusterID] = mc.Name
			}
		}
		// The peers only, through the index: every cluster's registration and
		// deletion comes through here, and the whole fleet must not be listed for each.
		for id, self := range ids {
			var list v1alpha1.ManagedClusterList
			if err := c.List(ctx, &list, client.MatchingFields{clusterIDIndex: id}, client.UnsafeDisableDeepCopy); err != nil {
				if err := c.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
					return
				}
			}
			for _, mc := range list.Items {
				if mc.Status.ClusterID == id && mc.Name != self {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: mc.Name}})
				}
			}
		}
	}
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, ok1 := e.ObjectOld.(*v1alpha1.ManagedCluster)
			n, ok2 := e.ObjectNew.(*v1alpha1.ManagedCluster)
			if ok1 && ok2 && (o.Status.ClusterID != n.Status.ClusterID || o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero()) {
				peers(ctx, q, o, n)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			peers(ctx, q, e.Object)
		},
	}
}

// connectedChanged passes status updates that change a cluster's Connected
// condition, which says why a cluster without a connection is not synced.
func connectedChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*v1alpha1.ManagedCluster)
		n, ok2 := e.ObjectNew.(*v1alpha1.ManagedCluster)
		if !ok1 || !ok2 {
			return false
		}
		a, b := conditions.Get(o, v1alpha1.ConnectedCondition), conditions.Get(n, v1alpha1.ConnectedCondition)
		return (a == nil) != (b == nil) || (a != nil && (a.Status != b.Status || a.Reason != b.Reason || a.Message != b.Message))
	}}
}

func (r *ClusterSyncReconciler) allClusters(ctx context.Context, _ client.Object) []reconcile.Request {
	r.rev.Add(1)
	return requestsForAll(ctx, r.Client, &v1alpha1.ManagedClusterList{})
}

// Reconcile syncs one cluster.
func (r *ClusterSyncReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rev := r.rev.Load()
	mc := &v1alpha1.ManagedCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, mc); err != nil {
		if apierrors.IsNotFound(err) {
			r.Results.set(req.Name, clusterResult{}, false)
			r.backoff().Forget(req.Name)
			r.forgetFailure(req.Name)
			// The ManagedCluster controller drops the cluster's series too; this
			// drops those a sync that ended after it may have written.
			forgetSyncMetrics(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !owns(r.Shards, mc) {
		// Another replica's shard: it syncs the cluster, and reports its results
		// in the intents' shard entries. Drop what this replica held of it.
		if _, ok := r.Results.get(mc.Name); ok {
			r.Results.set(mc.Name, clusterResult{}, false)
		}
		r.backoff().Forget(mc.Name)
		r.forgetFailure(mc.Name)
		forgetSyncMetrics(mc.Name)
		return ctrl.Result{}, nil
	}
	if !mc.DeletionTimestamp.IsZero() {
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonClusterDeleting, Message: "the cluster is being deleted"}, true)
		return r.reconcileDelete(ctx, mc)
	}
	if mc.Spec.Paused {
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonPaused, Message: "the cluster is paused"}, true)
		return ctrl.Result{}, nil
	}
	cl := r.Remote.Get(mc.Name)
	if c := conditions.Get(mc, v1alpha1.ConnectedCondition); cl == nil && c != nil && c.Status == metav1.ConditionFalse {
		// No connection, and the ManagedCluster says why (a missing Secret, an
		// invalid kubeconfig, an agent not connected yet): the intents' status
		// says so too.
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonDisconnected, Message: "the cluster is not connected: " + c.Message}, true)
		return ctrl.Result{}, nil
	}
	var state remote.State
	if cl != nil {
		state = cl.State()
	}
	switch {
	case cl == nil || state == remote.StateSettling:
		// Not known yet (just started, or the connection is being set up): keep
		// whatever was recorded, so that a restart does not flap every intent's
		// status. The connection's events bring us back; no polling.
		return ctrl.Result{}, nil
	case state == remote.StateUnidentified:
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonIdentityUnknown, Message: cl.IdentityError()}, true)
		return ctrl.Result{}, nil
	case state == remote.StateDisconnected:
		msg := "the cluster is not connected"
		if cl.Health().Message != "" {
			msg += ": " + cl.Health().Message
		}
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonDisconnected, Message: msg}, true)
		return ctrl.Result{}, nil
	}
	if other := duplicateOf(ctx, r.Client, r.Remote, mc, cl.ID()); other != "" {
		// Another ManagedCluster manages this target: write nothing, ever.
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonDuplicateCluster,
			Message: "ManagedCluster " + other + " already manages this cluster"}, true)
		return ctrl.Result{}, nil
	}
	start := time.Now()
	in, err := r.intents(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	res := r.prepared.Prepare(in).Render(render.Cluster{Name: mc.Name, Labels: mc.Labels, Hub: r.Hub, AgentImage: r.AgentImage,
		Tunnel: mc.Spec.Registration != nil})
	kinds := r.kindsInUse(ctx, cl, res.Objects)
	if err := r.watchOwned(mc.Name, kinds); err != nil {
		return ctrl.Result{}, err
	}
	syncer := r.syncer(cl)
	syncer.Kinds = targetsync.KindsNamed(kinds...)
	rep, syncErr := syncer.Sync(ctx, res.Objects, targetsync.Options{
		Adoptable: res.Adoptable, NamespacePolicy: res.NamespacePolicy, Hold: res.Hold, UseExisting: res.UseExisting,
		// Stop between writes when the intents change (start again from the new
		// state) or the target stops answering (its connection event comes back).
		Interrupted: func() bool {
			return r.rev.Load() != rev || !cl.Health().Connected || r.Remote.Get(mc.Name) != cl
		},
		BeforeWrite: func(ctx context.Context) error { return r.ensureFinalizer(ctx, mc) },
	})
	if rep.Applied > 0 || rep.Pruned > 0 {
		// Only when something was written: an idle fleet logs nothing.
		ctrl.LoggerFrom(ctx).Info("Wrote to the cluster", "applied", rep.Applied, "pruned", rep.Pruned, "held", rep.Held)
	}
	if errors.Is(syncErr, targetsync.ErrInterrupted) {
		// The intents changed while this sync ran, or the target went away; the
		// change enqueued this cluster again, and the next sync starts from the
		// new state at once. What is recorded stays as it was until a sync
		// completes.
		return ctrl.Result{}, nil
	}
	syncDuration.WithLabelValues(mc.Name).Observe(time.Since(start).Seconds())
	rctx, cancel := context.WithTimeout(ctx, r.RemoteTimeout)
	defer cancel()
	missing, roleErr := r.missingClusterRoles(rctx, cl, res.ClusterRoleRefs)
	outcome := summarize(in, res, rep, missing)
	if err := addUsage(rctx, cl.Client(), outcome.Projects, slices.Contains(kinds, "ResourceQuota")); err != nil {
		reason, _ := remote.Describe(err)
		ctrl.LoggerFrom(ctx).V(1).Info("Cannot read quota usage", "reason", reason)
	}
	if syncErr != nil {
		reason, msg := remote.Describe(syncErr)
		if errors.Is(syncErr, targetsync.ErrBeforeWrite) {
			reason, msg = v1alpha1.ReasonApplyFailed, "cannot add the cleanup finalizer on the hub"
		}
		result := v1alpha1.ReasonApplyFailed
		if rejectedReasons[reason] {
			result = v1alpha1.ReasonRejected
		}
		outcome = clusterResult{Reason: result, Message: fmt.Sprintf("syncing failed: %s (%s)", msg, reason)}
	}
	before, _ := r.Results.get(mc.Name)
	if outcome.Synced {
		carryHeld(before, &outcome)
		outcome.Since = start
		if before.Synced && !before.Since.IsZero() {
			outcome.Since = before.Since
		}
	}
	r.Results.set(mc.Name, outcome, true)
	r.changes().observe(mc.Name, before, outcome, time.Now())
	return r.finish(ctx, mc.Name, syncErr, roleErr, rep, missing)
}

// finish turns what went wrong in a sync into the log, the metrics and a retry.
// A target that refuses, conflicts or fails is an expected condition: it is logged
// once per change of what failed (naming each object and why, in Drover's words),
// counted in drover_cluster_sync_errors_total and retried with a per-cluster
// backoff, rather than returned to controller-runtime, which would log every retry
// as an error with a stack trace.
func (r *ClusterSyncReconciler) finish(ctx context.Context, cluster string, syncErr, roleErr error, rep targetsync.Report, missing map[string]bool) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var reason string
	var objects []string
	switch {
	case errors.Is(syncErr, targetsync.ErrBeforeWrite):
		// The hub itself failed: unexpected, returned.
		syncErrors.WithLabelValues(cluster, v1alpha1.ReasonApplyFailed).Inc()
		reconcileErrors.WithLabelValues(cluster).Inc()
		return ctrl.Result{}, fmt.Errorf("cluster %s: %w", cluster, syncErr)
	case syncErr != nil:
		var msg string
		reason, msg = remote.Describe(syncErr)
		objects = []string{"syncing failed: " + msg}
	case roleErr != nil:
		var msg string
		reason, msg = remote.Describe(roleErr)
		objects = []string{"checking the ClusterRoles that bindings refer to failed: " + msg}
	case len(rep.Failed) > 0 || len(rep.PruneFailed) > 0:
		for _, k := range targetsync.SortedKeys(rep.Failed) {
			reason = graver(reason, failureReason(rep.Failed[k]))
			objects = append(objects, rep.Failed[k].Error())
		}
		for _, k := range targetsync.SortedKeys(rep.PruneFailed) {
			reason = graver(reason, v1alpha1.ReasonApplyFailed)
			objects = append(objects, k.String()+" could not be removed: "+rep.PruneFailed[k].Error())
		}
	}
	if reason == "" {
		r.backoff().Forget(cluster)
		if r.forgetFailure(cluster) {
			log.Info("The cluster holds every object again")
		}
		if len(missing) > 0 {
			// Reported on each binding (ClusterRoleNotFound); Drover does not
			// watch ClusterRoles it does not own, so it looks again a while later.
			return ctrl.Result{RequeueAfter: missingRoleRecheck}, nil
		}
		return ctrl.Result{}, nil
	}
	syncErrors.WithLabelValues(cluster, reason).Inc()
	reconcileErrors.WithLabelValues(cluster).Inc()
	retry := r.backoff().When(cluster)
	shown := objects
	if len(shown) > 5 {
		shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(objects)-5))
	}
	if r.noteFailure(cluster, reason+"\n"+strings.Join(objects, "\n")) {
		log.Info("Sync of the cluster left objects not as desired; retrying", "reason", reason, "failed", len(objects), "objects", shown, "retryAfter", retry)
	} else {
		log.V(1).Info("Sync of the cluster still leaves objects not as desired; retrying", "reason", reason, "failed", len(objects), "retryAfter", retry)
	}
	return ctrl.Result{RequeueAfter: retry}, nil
}

// noteFailure records what failed in a cluster's last sync; it reports whether that
// differs from what was last logged.
func (r *ClusterSyncReconciler) noteFailure(cluster, what string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[string]string{}
	}
	if r.failures[cluster] == what {
		return false
	}
	r.failures[cluster] = what
	return true
}

// forgetFailure drops what failed in a cluster; it reports whether anything had.
func (r *ClusterSyncReconciler) forgetFailure(cluster string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, had := r.failures[cluster]
	delete(r.failures, cluster)
	return had
}

// backoff spaces the retries of a cluster whose sync fails.
func (r *ClusterSyncReconciler) backoff() workqueue.TypedRateLimiter[string] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retries == nil {
		r.retries = workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Minute)
	}
	return r.retries
}

// changes is the log of intent changes, for the propagation metric.
func (r *ClusterSyncReconciler) changes() *changeLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changeLog == nil {
		r.changeLog = newChangeLog()
	}
	return r.changeLog
}

func (r *ClusterSyncReconciler) syncer(cl *remote.Cluster) *targetsync.Syncer {
	return &targetsync.Syncer{Cached: cl.Client(), Direct: cl.Reader, Kinds: targetsync.DefaultKinds(),
		Hub: r.Hub, Cluster: cl.Name, Workers: r.Workers, RequestTimeout: r.RemoteTimeout, Describe: remote.Describe,
		Gone: func(name string) bool {
			err := r.Client.Get(context.Background(), client.ObjectKey{Name: name}, &v1alpha1.ManagedCluster{})
			return apierrors.IsNotFound(err)
		}}
}

var ownedWatches = []struct {
	name string
	obj  client.Object
}{{"clusterroles", &rbacv1.ClusterRole{}}, {"clusterrolebindings", &rbacv1.ClusterRoleBinding{}},
	{"rolebindings", &rbacv1.RoleBinding{}}, {"roles", &rbacv1.Role{}}, {"namespaces", &corev1.Namespace{}},
	{"resourcequotas", &corev1.ResourceQuota{}}, {"limitranges", &corev1.LimitRange{}},
	{"networkpolicies", &networkingv1.NetworkPolicy{}}, {"serviceaccounts", &corev1.ServiceAccount{}},
	{"deployments", &appsv1.Deployment{}}}

// watchOwned watches the given kinds of what the syncer writes, once per connection.
func (r *ClusterSyncReconciler) watchOwned(cluster string, kinds []string) error {
	for _, w := range ownedWatches {
		if !slices.Contains(kinds, targetsync.KeyOf(w.obj).Kind) {
			continue
		}
		if err := r.Remote.Watch(cluster, "sync-"+w.name, r.controller, ownedSource(cluster, w.obj)); err != nil {
			return fmt.Errorf("watch %s in cluster %s: %w", w.name, cluster, err)
		}
	}
	return nil
}

// kindsInUse are the kinds the syncer works with in a cluster: those it is to hold
// (desired), those it already watches there, and, once per connection, those the
// target holds objects of with Drover's label (from an intent removed while the
// manager was away, say). A kind that none of these name is neither watched nor
// listed: a fleet without projects runs no quota, limit or network policy watches.
// When a target cannot be asked, the kind counts as in use.
func (r *ClusterSyncReconciler) kindsInUse(ctx context.Context, cl *remote.Cluster, desired []client.Object) []string {
	want := map[string]bool{}
	for _, o := range desired {
		want[targetsync.KeyOf(o).Kind] = true
	}
	var out []string
	for _, w := range ownedWatches {
		kind := targetsync.KeyOf(w.obj).Kind
		switch {
		case want[kind] || cl.Watching("sync-"+w.name):
		case cl.Mark("probed-" + w.name):
			if !r.holdsOwned(ctx, cl, w.obj) {
				continue
			}
		default:
			continue
		}
		out = append(out, kind)
	}
	return out
}

// holdsOwned tells whether a target holds any object of obj's kind with Drover's
// label (one metadata-only request); true when it cannot tell.
func (r *ClusterSyncReconciler) holdsOwned(ctx context.Context, cl *remote.Cluster, obj client.Object) bool {
	gvk, err := apiutil.GVKForObject(obj, cl.Reader.Scheme())
	if err != nil {
		return true
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	rctx, cancel := context.WithTimeout(ctx, r.RemoteTimeout)
	defer cancel()
	if err := cl.Reader.List(rctx, list, client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}, client.Limit(1)); err != nil {
		return true
	}
	return len(list.Items) > 0
}

// duplicateOf names the ManagedCluster that manages the same target (same identity)
// and takes precedence over mc (the older one, then the first by name), or "".
// It looks only at the ManagedClusters that status or a live connection gives that
// identity (an index), not at the whole fleet: every reconcile of every cluster
// asks.
func duplicateOf(ctx context.Context, c client.Client, rc *remote.Cache, mc *v1alpha1.ManagedCluster, id string) string {
	if id == "" {
		return ""
	}
	var list v1alpha1.ManagedClusterList
	if err := c.List(ctx, &list, client.MatchingFields{clusterIDIndex: id}, client.UnsafeDisableDeepCopy); err != nil {
		// No index (a client without one): look at every cluster.
		if err := c.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return ""
		}
	}
	candidates := map[string]*v1alpha1.ManagedCluster{}
	for i := range list.Items {
		candidates[list.Items[i].Name] = &list.Items[i]
	}
	for _, name := range rc.NamesWithID(id) {
		if _, ok := candidates[name]; ok {
			continue
		}
		o := &v1alpha1.ManagedCluster{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, o); err == nil {
			candidates[name] = o
		}
	}
	best := ""
	for _, o := range candidates {
		if o.Name == mc.Name || (o.Status.ClusterID != id && rc.IDOf(o.Name) != id) {
			continue
		}
		if o.CreationTimestamp.Before(&mc.CreationTimestamp) ||
			(o.CreationTimestamp.Equal(&mc.CreationTimestamp) && o.Name < mc.Name) {
			// The first by age and name, so that the answer does not depend on the
			// order of a map.
			if best == "" || o.Name < best {
				best = o.Name
			}
		}
	}
	return best
}

// ensureFinalizer adds the cleanup finalizer, on its own request, before the first
// write into the target: from then on deletion waits for cleanup.
func (r *ClusterSyncReconciler) ensureFinalizer(ctx context.Context, mc *v1alpha1.ManagedCluster) error {
	if controllerutil.ContainsFinalizer(mc, ManagedClusterFinalizer) {
		return nil
	}
	return r.patchFinalizers(ctx, mc.Name, func(obj *v1alpha1.ManagedCluster) (bool, error) {
		if !obj.DeletionTimestamp.IsZero() {
			return false, errors.New("the cluster is being deleted")
		}
		return controllerutil.AddFinalizer(obj, ManagedClusterFinalizer), nil
	})
}

// patchFinalizers changes a ManagedCluster's finalizers with an optimistic lock,
// reading it again from the API server when the cache was behind, so that no
// finalizer someone else added meanwhile is lost.
func (r *ClusterSyncReconciler) patchFinalizers(ctx context.Context, name string, change func(*v1alpha1.ManagedCluster) (bool, error)) error {
	var reader client.Reader = r.Client
	var err error
	for range 5 {
		obj := &v1alpha1.ManagedCluster{}
		if err = reader.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
			return client.IgnoreNotFound(err)
		}
		base := obj.DeepCopy()
		changed, cerr := change(obj)
		if cerr != nil || !changed {
			return cerr
		}
		err = r.Client.Patch(ctx, obj, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		if !apierrors.IsConflict(err) {
			return client.IgnoreNotFound(err)
		}
		if r.Reader != nil {
			reader = r.Reader
		}
	}
	return err
}

// reconcileDelete removes what this hub applied in the target (deletionPolicy
// Delete) by syncing it to nothing, or leaves it (Orphan, or a paused cluster), and
// releases the finalizer. An unreachable target is given DeletionTimeout to come
// back; then deletion completes anyway, with a Warning event that says what was left.
func (r *ClusterSyncReconciler) reconcileDelete(ctx context.Context, mc *v1alpha1.ManagedCluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(mc, ManagedClusterFinalizer) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)
	switch {
	case mc.Spec.Paused:
		r.event(mc, corev1.EventTypeNormal, "CleanupSkipped", "the cluster is paused: nothing in the target was touched")
		return ctrl.Result{}, r.release(ctx, mc)
	case mc.DeletionPolicyOrDefault() == v1alpha1.DeletionPolicyOrphan:
		r.event(mc, corev1.EventTypeNormal, "CleanupSkipped", "deletionPolicy is Orphan: everything Drover installed stays in the target")
		return ctrl.Result{}, r.release(ctx, mc)
	}
	cl := r.Remote.Get(mc.Name)
	if cl == nil {
		// The ManagedCluster controller keeps the connection (or rebuilds it from
		// the last kubeconfig read) while the cluster is being deleted.
		cl = r.Remote.Reconnect(ctx, mc.Name)
	}
	why := "the cluster is unreachable"
	if cl != nil && cl.Health().Connected && cl.Client() != nil {
		id := cl.ID()
		if id == "" {
			id = mc.Status.ClusterID
		}
		if other := duplicateOf(ctx, r.Client, r.Remote, mc, id); other != "" {
			// Never remove what the other ManagedCluster of this target holds.
			r.event(mc, corev1.EventTypeNormal, "CleanupSkipped", "ManagedCluster "+other+" manages this cluster: nothing in the target was touched")
			return ctrl.Result{}, r.release(ctx, mc)
		}
		rep, err := r.syncer(cl).Sync(ctx, nil, targetsync.Options{})
		if err == nil && len(rep.PruneFailed) == 0 {
			log.Info("Removed everything this hub applied in the cluster", "pruned", rep.Pruned)
			r.event(mc, corev1.EventTypeNormal, "CleanedUp", fmt.Sprintf("removed the agent and %d objects this hub applied in the target", rep.Pruned))
			return ctrl.Result{}, r.release(ctx, mc)
		}
		if err != nil {
			_, why = remote.Describe(err)
		} else {
			k := targetsync.SortedKeys(rep.PruneFailed)[0]
			why = rep.PruneFailed[k].Error()
		}
		log.Info("Cleanup of the target is incomplete; retrying", "reason", why)
	} else if cl != nil && cl.Health().Message != "" {
		why = cl.Health().Message
	}
	waited := time.Since(mc.DeletionTimestamp.Time)
	if waited >= r.DeletionTimeout {
		r.event(mc, corev1.EventTypeWarning, "CleanupAbandoned", fmt.Sprintf(
			"gave up cleaning the target after %s (%s); left behind: the agent (namespace %s) and every object labelled %s=%s",
			r.DeletionTimeout, why, render.AgentNamespace, render.HubLabel, r.Hub))
		return ctrl.Result{}, r.release(ctx, mc)
	}
	return ctrl.Result{RequeueAfter: min(2*time.Second, r.DeletionTimeout-waited)}, nil
}

func (r *ClusterSyncReconciler) release(ctx context.Context, mc *v1alpha1.ManagedCluster) error {
	return r.patchFinalizers(ctx, mc.Name, func(obj *v1alpha1.ManagedCluster) (bool, error) {
		return controllerutil.RemoveFinalizer(obj, ManagedClusterFinalizer), nil
	})
}

func (r *ClusterSyncReconciler) event(mc *v1alpha1.ManagedCluster, typ, reason, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(mc, nil, typ, reason, "Delete", "%s", msg)
	}
}

// intents reads every intent from the hub's cache. They are the cache's own
// objects, not copies (every cluster's sync reads them all): rendering and
// summarize only read them, and nothing may change them.
func (r *ClusterSyncReconciler) intents(ctx context.Context) (render.Intents, error) {
	var rts v1alpha1.RoleTemplateList
	var abs v1alpha1.AccessBindingList
	var cps v1alpha1.ClusterProjectList
	for _, l := range []client.ObjectList{&rts, &abs, &cps} {
		if err := r.Client.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return render.Intents{}, err
		}
	}
	return render.Intents{RoleTemplates: rts.Items, AccessBindings: abs.Items, Projects: cps.Items}, nil
}

// missingClusterRoles checks that the pre-existing ClusterRoles bindings refer to
// exist in the target. Those are not Drover's, so the cache does not hold them.
func (r *ClusterSyncReconciler) missingClusterRoles(ctx context.Context, cl *remote.Cluster, refs map[string]string) (map[string]bool, error) {
	missing := map[string]bool{}
	checked := map[string]bool{}
	for _, role := range refs {
		if checked[role] {
			continue
		}
		checked[role] = true
		err := cl.Reader.Get(ctx, client.ObjectKey{Name: role}, &rbacv1.ClusterRole{})
		switch {
		case apierrors.IsNotFound(err):
			missing[role] = true
		case err != nil:
			return missing, err
		}
	}
	return missing, nil
}

// summarize turns a sync report into per-intent results.
func summarize(in render.Intents, res render.Result, rep targetsync.Report, missingRoles map[string]bool) clusterResult {
	out := clusterResult{Synced: true, Bindings: map[string]itemResult{}, Templates: map[string]itemResult{}}
	var agentFails []string
	agentConflict := false
	failures := map[string][]string{} // intent label value -> failures
	projectFailures := map[string][]string{}
	namespaceFailures := map[string][]string{} // a project's namespaces that are not held
	worst := map[string]string{}               // intent label value -> the gravest reason of its failures
	objs := map[targetsync.Key]client.Object{}
	for _, o := range res.Objects {
		objs[targetsync.KeyOf(o)] = o
	}
	for _, k := range targetsync.SortedKeys(rep.Failed) {
		o := objs[k]
		if o == nil {
			continue
		}
		msg := rep.Failed[k].Error()
		reason := failureReason(rep.Failed[k])
		if o.GetLabels()[render.ComponentLabel] == render.AgentComponent {
			agentFails = append(agentFails, msg)
			agentConflict = agentConflict || reason == v1alpha1.ReasonConflict
			continue
		}
		for _, key := range []string{render.AccessBindingLabel, render.RoleTemplateLabel, render.ProjectLabel} {
			if v := o.GetLabels()[key]; v != "" {
				if key == render.RoleTemplateLabel && k.Kind != "ClusterRole" {
					continue // a binding's failure is the binding's, not its template's
				}
				id := key + "=" + v
				failures[id] = append(failures[id], msg)
				worst[id] = graver(worst[id], reason)
			}
		}
		// A project fails for its own objects, not for the bindings placed in it.
		if p := o.GetLabels()[render.ProjectLabel]; p != "" && o.GetLabels()[render.AccessBindingLabel] == "" {
			id := render.ProjectLabel + "=" + p
			projectFailures[id] = append(projectFailures[id], msg)
			if k.Kind == "Namespace" {
				namespaceFailures[id] = append(namespaceFailures[id], msg)
			}
		}
	}
	gens := map[string]int64{}
	for _, t := range in.RoleTemplates {
		gens["t/"+t.Name] = t.Generation
	}
	for _, b := range in.AccessBindings {
		gens["b/"+b.Name] = b.Generation
	}
	project := map[string]string{}
	for _, b := range in.AccessBindings {
		project[b.Name] = b.Spec.Project
	}
	item := func(gen int64, fails []string, reason string) itemResult {
		if len(fails) == 0 {
			return itemResult{Generation: gen, OK: true}
		}
		reason = graver(reason, v1alpha1.ReasonApplyFailed)
		msg := strings.Join(fails, "; ")
		if len(fails) > 3 {
			msg = strings.Join(fails[:3], "; ") + fmt.Sprintf("; and %d more", len(fails)-3)
		}
		return itemResult{Generation: gen, Reason: reason, Message: msg}
	}
	out.Projects = map[string]itemResult{}
	for _, p := range in.Projects {
		gens["p/"+p.Name] = p.Generation
	}
	for _, p := range res.Projects {
		id := render.ProjectLabel + "=" + p
		fails := append([]string(nil), projectFailures[id]...)
		reason := worst[id]
		if lost := res.NamespacesLost[p]; len(lost) > 0 {
			fails = append(fails, lost...)
			reason = v1alpha1.ReasonConflict
		}
		it := item(gens["p/"+p], fails, reason)
		if it.OK && len(res.NamespaceConflicts[p]) > 0 {
			it.Message = strings.Join(res.NamespaceConflicts[p], "; ")
		}
		out.Projects[p] = it
	}
	for _, t := range res.Templates {
		id := render.RoleTemplateLabel + "=" + t
		out.Templates[t] = item(gens["t/"+t], failures[id], worst[id])
	}
	for _, b := range res.Bindings {
		id := render.AccessBindingLabel + "=" + b
		fails := failures[id]
		reason := worst[id]
		if p := project[b]; p != "" {
			// A project namespace that Drover does not hold fails the binding too.
			pid := render.ProjectLabel + "=" + p
			fails = append(fails, namespaceFailures[pid]...)
			if len(namespaceFailures[pid]) > 0 {
				reason = graver(reason, worst[pid])
			}
		}
		it := item(gens["b/"+b], dedupeStrings(fails), reason)
		if role, ok := res.ClusterRoleRefs[b]; ok && missingRoles[role] && it.OK {
			it = itemResult{Generation: it.Generation, Reason: v1alpha1.ReasonClusterRoleNotFound,
				Message: fmt.Sprintf("ClusterRole %q does not exist in this cluster; the binding is in place but grants nothing until it does", role)}
		}
		out.Bindings[b] = it
	}
	agentReason := ""
	if agentConflict {
		agentReason = v1alpha1.ReasonConflict
	}
	out.Agent = item(0, agentFails, agentReason)
	if len(res.Objects) == 0 || res.Objects[0].GetLabels()[render.ComponentLabel] != render.AgentComponent {
		out.Agent = itemResult{} // no agent rendered
	}
	return out
}

// failureReason is the per-cluster reason of an object a target does not hold:
// Conflict when it (or the namespace or role it needs) belongs to someone else,
// Rejected when the target refused it for good (a person must act), else
// ApplyFailed, which is retried.
func failureReason(err error) string {
	if errors.Is(err, targetsync.ErrConflict) {
		return v1alpha1.ReasonConflict
	}
	// A failure caused by a dependency wraps the dependency's own failure.
	var te *targetsync.Error
	for e := err; errors.As(e, &te); e = te.Err {
		if rejectedReasons[te.Reason] {
			return v1alpha1.ReasonRejected
		}
	}
	return v1alpha1.ReasonApplyFailed
}

// rejectedReasons are the answers of a target that retrying does not change.
var rejectedReasons = map[string]bool{
	remote.DescribeForbidden: true, remote.DescribeUnauthorized: true, remote.DescribeInvalid: true,
	remote.DescribeTooLarge: true, targetsync.ReasonNoMatch: true,
}

// graver returns the graver of two per-cluster reasons: Conflict, then Rejected,
// then ApplyFailed; "" is no failure.
func graver(a, b string) string {
	rank := map[string]int{"": 0, v1alpha1.ReasonApplyFailed: 1, v1alpha1.ReasonRejected: 2, v1alpha1.ReasonConflict: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func dedupeStrings(in []string) []string {
	seen := map[string]bool{}
	out := in[:0:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// addUsage sums the status of each project's namespace quotas in the cluster.
func addUsage(ctx context.Context, c client.Reader, projects map[string]itemResult, quotas bool) error {
	if len(projects) == 0 || !quotas {
		return nil
	}
	var list corev1.ResourceQuotaList
	if err := c.List(ctx, &list, client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}); err != nil {
		return err
	}
	for _, q := range list.Items {
		p := q.Labels[render.ProjectLabel]
		it, ok := projects[p]
		if !ok || q.Name != render.ProjectQuotaName {
			continue
		}
		it.Used = addResources(it.Used, q.Status.Used)
		it.Hard = addResources(it.Hard, q.Status.Hard)
		projects[p] = it
	}
	return nil
}

func addResources(sum, add corev1.ResourceList) corev1.ResourceList {
	if len(add) == 0 {
		return sum
	}
	if sum == nil {
		sum = corev1.ResourceList{}
	}
	for k, v := range add {
		cur := sum[k]
		cur.Add(v)
		sum[k] = cur
	}
	return sum
}

// ownedSource watches one kind of Drover-owned object in a target (the cache holds
// only those) and enqueues the cluster, so drift is repaired at once. A ResourceQuota
// whose status alone changed (its usage, which the API server recomputes as pods come
// and go) enqueues the cluster a while later instead: the projects' usage is refreshed
// at most once per quotaUsageDelay, not on every pod.
func ownedSource(cluster string, obj client.Object) func(cache.Cache) source.Source {
	return func(c cache.Cache) source.Source {
		req := reconcile.Request{NamespacedName: client.ObjectKey{Name: cluster}}
		h := handler.Funcs{
			CreateFunc: func(_ context.Context, _ event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				q.Add(req)
			},
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				switch {
				case quotaUsageOnly(e.ObjectOld, e.ObjectNew):
					q.AddAfter(req, quotaUsageDelay)
				case ownedObjectChanged(e.ObjectOld, e.ObjectNew):
					q.Add(req)
				}
			},
			DeleteFunc: func(_ context.Context, _ event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				q.Add(req)
			},
		}
		return source.Kind(c, obj, h)
	}
}

// quotaUsageDelay bounds how often quota usage in a target leads to a sync.
const quotaUsageDelay = 10 * time.Second

// quotaUsageOnly tells whether an update of a ResourceQuota changed nothing but its
// status.
func quotaUsageOnly(old, cur client.Object) bool {
	o, ok1 := old.(*corev1.ResourceQuota)
	n, ok2 := cur.(*corev1.ResourceQuota)
	return ok1 && ok2 && equality.Semantic.DeepEqual(o.Spec, n.Spec) &&
		equality.Semantic.DeepEqual(o.Labels, n.Labels) && equality.Semantic.DeepEqual(o.Annotations, n.Annotations) &&
		o.DeletionTimestamp.Equal(n.DeletionTimestamp)
}

// ownedObjectChanged ignores updates that cannot be drift (a namespace's status).
func ownedObjectChanged(old, cur client.Object) bool {
	if _, ok := cur.(*corev1.Namespace); ok {
		return !equality.Semantic.DeepEqual(old.GetLabels(), cur.GetLabels()) ||
			!equality.Semantic.DeepEqual(old.GetAnnotations(), cur.GetAnnotations()) ||
			!old.GetDeletionTimestamp().Equal(cur.GetDeletionTimestamp())
	}
	return true
}
