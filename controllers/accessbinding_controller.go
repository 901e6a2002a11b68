package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clusterv1patch "sigs.k8s.io/cluster-api/util/patch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/sharding"
)

// intentConditions are the conditions the status controllers own.
var intentConditions = []string{v1alpha1.ReadyCondition, v1alpha1.ReconcilingCondition, v1alpha1.StalledCondition}

// AccessBindingReconciler writes AccessBinding status from the per-cluster sync
// results: how many selected clusters hold the binding at its current generation,
// and which do not, and why. It never writes to targets; the cluster syncer does.
type AccessBindingReconciler struct {
	Client client.Client
	// Reader reads the binding itself from the API server.
	Reader   client.Reader
	Results  *syncResults
	Recorder events.EventRecorder
	// Shards are the shards this replica holds; nil when the hub is not sharded.
	Shards *sharding.Shards
}

// SetupWithManager registers the controller.
func (r *AccessBindingReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(r.allBindings)
	return ctrl.NewControllerManagedBy(mgr).
		Named("accessbinding").
		For(&v1alpha1.AccessBinding{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ManagedCluster{}, all, builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate(), createDeleteOnly()))).
		Watches(&v1alpha1.RoleTemplate{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ClusterProject{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(r.Results.Source(kindAccessBinding)).
		Watches(&v1alpha1.AccessBinding{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(shardEntriesChanged())).
		WatchesRawSource(shardChanges(r.Shards, r.Client, func() client.ObjectList { return &v1alpha1.AccessBindingList{} })).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *AccessBindingReconciler) allBindings(ctx context.Context, _ client.Object) []reconcile.Request {
	return requestsForAll(ctx, r.Client, &v1alpha1.AccessBindingList{})
}

// Reconcile computes one binding's status.
func (r *AccessBindingReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &v1alpha1.AccessBinding{}
	return reconcileIntentStatus(ctx, r.Client, r.Reader, r.Recorder, r.Shards, kindAccessBinding, req.NamespacedName, b, func(p *shardPass) (rowSummary, error) { return r.setStatus(ctx, b, p) })
}

// setStatus computes the status of b from the hub's cache and the sync results.
func (r *AccessBindingReconciler) setStatus(ctx context.Context, b *v1alpha1.AccessBinding, p *shardPass) (rowSummary, error) {
	var rts v1alpha1.RoleTemplateList
	var cps v1alpha1.ClusterProjectList
	var mcs v1alpha1.ManagedClusterList
	for _, l := range []client.ObjectList{&rts, &cps} {
		if err := r.Client.List(ctx, l); err != nil {
			return rowSummary{}, err
		}
	}
	// The fleet is read, never changed: no copy of a thousand clusters per status.
	if err := r.Client.List(ctx, &mcs, client.UnsafeDisableDeepCopy); err != nil {
		return rowSummary{}, err
	}
	projects := map[string]*v1alpha1.ClusterProject{}
	for i := range cps.Items {
		projects[cps.Items[i].Name] = &cps.Items[i]
	}
	problem := render.BindingProblem(b, render.ResolveTemplates(rts.Items), projects)

	var placement *v1alpha1.ClusterSelection
	whose := "spec.clusters.names"
	if b.Spec.Project != "" {
		if p := projects[b.Spec.Project]; p != nil {
			placement = &p.Spec.Clusters
			whose = "spec.clusters.names of ClusterProject " + p.Name
		}
	} else {
		placement = b.Spec.Clusters
	}
	var rows []clusterRow
	prev := previousOf(b.Generation, b.Status.ObservedGeneration, b.Status.Failures)
	if problem == nil && placement != nil {
		for _, mc := range mcs.Items {
			if ok, _ := render.Selects(*placement, render.Cluster{Name: mc.Name, Labels: mc.Labels}); !ok || p.elsewhere(&mc) {
				continue
			}
			row := r.row(&mc, b.Name, b.Generation, prev)
			p.add(&mc, row)
			rows = append(rows, row)
		}
		remote, _ := p.remoteRows(b.Status.Shards)
		rows = append(rows, remote...)
		rows = append(rows, missingRows(placement, mcs.Items, whose)...)
	}
	setIntentStatus(b, problem, rows, "selected")
	st := summarizeRows(rows)
	b.Status.SelectedClusters = st.total
	b.Status.SyncedClusters = st.synced
	b.Status.Synced = fmt.Sprintf("%d/%d", st.synced, st.total)
	b.Status.Failures = st.failures
	b.Status.ObservedGeneration = b.Generation
	return st, nil
}

func (r *AccessBindingReconciler) row(mc *v1alpha1.ManagedCluster, name string, gen int64, prev previous) clusterRow {
	return rowFor(r.Results, mc, gen, prev, func(res clusterResult) (itemResult, bool) {
		it, ok := res.Bindings[name]
		return it, ok
	})
}

// reconcileIntentStatus is the skeleton the status controllers share: get the
// object, skip it while it is being deleted, let set compute its status, and write
// what changed through a patch helper that owns the kstatus conditions, with an
// event for each transition. In a sharded hub (intent_shards.go) it first writes the
// entries of the shards this replica holds, and writes the rest only on the replica
// that holds shard 0.
//
// The object is read from the API server, not the cache: the patch is computed
// against what it holds, so a write that the cache has not seen yet is never undone
// or left half-applied (a Ready=True status still listing a Pending failure, say).
func reconcileIntentStatus(ctx context.Context, c client.Client, reader client.Reader, rec events.EventRecorder, shards *sharding.Shards,
	kind string, key client.ObjectKey, obj intentObject, set func(*shardPass) (rowSummary, error)) (_ ctrl.Result, retErr error) {
	if err := reader.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			forgetIntentMetrics(kind, key.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, nil
	}
	helper, err := clusterv1patch.NewHelper(obj, c)
	if err != nil {
		return ctrl.Result{}, err
	}
	before := obj.DeepCopyObject().(intentObject)
	pass := newShardPass(shards, obj.GetGeneration())
	summary, err := set(pass)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pass != nil {
		if err := writeShardEntries(ctx, c, kind, obj, shardsOf(before), pass.entries()); err != nil && !isNotFound(err) {
			return ctrl.Result{}, err
		}
		if !aggregates(shards) {
			// The replica that holds shard 0 exports the intents' series.
			forgetIntentMetrics(kind, key.Name)
			return ctrl.Result{}, nil
		}
	}
	if err := helper.Patch(ctx, obj, clusterv1patch.WithOwnedConditions{Conditions: intentConditions}); err != nil && !isNotFound(err) {
		return ctrl.Result{}, err
	}
	recordIntentTransitions(rec, before, obj)
	recordIntentMetrics(kind, obj, summary)
	return ctrl.Result{}, nil
}

// intentObject is an AccessBinding, a RoleTemplate or a ClusterProject.
type intentObject interface {
	client.Object
	GetConditions() []metav1.Condition
	SetConditions([]metav1.Condition)
}

// recordIntentTransitions emits an event when Ready or Stalled changes.
func recordIntentTransitions(rec events.EventRecorder, before, after intentObject) {
	if rec == nil {
		return
	}
	for _, t := range []string{v1alpha1.StalledCondition, v1alpha1.ReadyCondition} {
		old := findCondition(before.GetConditions(), t)
		cur := findCondition(after.GetConditions(), t)
		if cur == nil || (old != nil && old.Status == cur.Status && old.Reason == cur.Reason) {
			continue
		}
		if t == v1alpha1.StalledCondition && cur.Status != metav1.ConditionTrue {
			continue
		}
		typ := corev1.EventTypeNormal
		if t == v1alpha1.StalledCondition || (cur.Status == metav1.ConditionFalse && cur.Reason != v1alpha1.ReasonProgressing) {
			typ = corev1.EventTypeWarning
		}
		if cur.Reason == v1alpha1.ReasonProgressing {
			continue
		}
		rec.Eventf(after, nil, typ, cur.Reason, t, "%s=%s: %s", t, cur.Status, cur.Message)
	}
}

// createDeleteOnly passes creations and deletions, not updates.
func createDeleteOnly() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}
}
