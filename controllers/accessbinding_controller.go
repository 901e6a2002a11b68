package controllers

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
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
)

// Status reasons of AccessBindings and RoleTemplates.
const (
	// ReasonSyncFailed: at least one selected cluster does not hold the intent.
	ReasonSyncFailed = "SyncFailed"
	// ReasonNoClusters: the intent selects no cluster.
	ReasonNoClusters = "NoClustersSelected"
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
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *AccessBindingReconciler) allBindings(ctx context.Context, _ client.Object) []reconcile.Request {
	return requestsForAll(ctx, r.Client, &v1alpha1.AccessBindingList{})
}

// Reconcile computes one binding's status.
func (r *AccessBindingReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &v1alpha1.AccessBinding{}
	return reconcileIntentStatus(ctx, r.Client, r.Reader, r.Recorder, req.NamespacedName, b, func() error { return r.setStatus(ctx, b) })
}

// setStatus computes the status of b from the hub's cache and the sync results.
func (r *AccessBindingReconciler) setStatus(ctx context.Context, b *v1alpha1.AccessBinding) error {
	var rts v1alpha1.RoleTemplateList
	var cps v1alpha1.ClusterProjectList
	var mcs v1alpha1.ManagedClusterList
	for _, l := range []client.ObjectList{&rts, &cps, &mcs} {
		if err := r.Client.List(ctx, l); err != nil {
			return err
		}
	}
	projects := map[string]*v1alpha1.ClusterProject{}
	for i := range cps.Items {
		projects[cps.Items[i].Name] = &cps.Items[i]
	}
	problem := render.BindingProblem(b, render.ResolveTemplates(rts.Items), projects)

	var placement *v1alpha1.ClusterSelection
	if b.Spec.Project != "" {
		if p := projects[b.Spec.Project]; p != nil {
			placement = &p.Spec.Clusters
		}
	} else {
		placement = b.Spec.Clusters
	}
	var rows []clusterRow
	prev := previousOf(b.Generation, b.Status.ObservedGeneration, b.Status.Failures)
	if problem == nil && placement != nil {
		for _, mc := range mcs.Items {
			if ok, _ := render.Selects(*placement, render.Cluster{Name: mc.Name, Labels: mc.Labels}); !ok {
				continue
			}
			rows = append(rows, r.row(&mc, b.Name, b.Generation, prev))
		}
	}
	setIntentStatus(b, problem, rows, "selected")
	st := summarizeRows(rows)
	b.Status.SelectedClusters = st.total
	b.Status.SyncedClusters = st.synced
	b.Status.Synced = fmt.Sprintf("%d/%d", st.synced, st.total)
	b.Status.Failures = st.failures
	b.Status.ObservedGeneration = b.Generation
	return nil
}

func (r *AccessBindingReconciler) row(mc *v1alpha1.ManagedCluster, name string, gen int64, prev previous) clusterRow {
	return rowFor(r.Results, mc, gen, prev, func(res clusterResult) (itemResult, bool) {
		it, ok := res.Bindings[name]
		return it, ok
	})
}

// clusterRow is one cluster's state for one intent.
type clusterRow struct {
	cluster string
	synced  bool
	reason  string
	message string
	// previous: taken from the intent's status, as the cluster has not been synced
	// since the manager started.
	previous bool
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
		return clusterRow{cluster, false, ReasonPending, "not synced yet", false}
	case !res.Synced:
		return clusterRow{cluster, false, res.Reason, res.Message, false}
	}
	it, ok := pick(res)
	switch {
	case !ok:
		return clusterRow{cluster, false, ReasonPending, "not synced yet", false}
	case it.Generation != gen:
		return clusterRow{cluster, false, ReasonPending, fmt.Sprintf("generation %d not synced yet", gen), false}
	case !it.OK:
		return clusterRow{cluster, false, it.Reason, it.Message, false}
	}
	return clusterRow{cluster: cluster, synced: true}
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
	total, synced int32
	pending       bool
	failures      []v1alpha1.ClusterFailure
}

func summarizeRows(rows []clusterRow) rowSummary {
	sort.Slice(rows, func(i, j int) bool { return rows[i].cluster < rows[j].cluster })
	s := rowSummary{total: int32(len(rows))}
	for _, r := range rows {
		if r.synced {
			s.synced++
			continue
		}
		if r.reason == ReasonPending {
			s.pending = true
		}
		if len(s.failures) < v1alpha1.MaxReportedFailures {
			msg := r.message
			if len(msg) > 1024 {
				msg = msg[:1021] + "..."
			}
			s.failures = append(s.failures, v1alpha1.ClusterFailure{Cluster: r.cluster, Reason: r.reason, Message: msg})
		}
	}
	return s
}

// reconcileIntentStatus is the skeleton the status controllers share: get the
// object, skip it while it is being deleted, let set compute its status, and write
// what changed through a patch helper that owns the kstatus conditions, with an
// event for each transition.
//
// The object is read from the API server, not the cache: the patch is computed
// against what it holds, so a write that the cache has not seen yet is never undone
// or left half-applied (a Ready=True status still listing a Pending failure, say).
func reconcileIntentStatus(ctx context.Context, c client.Client, reader client.Reader, rec events.EventRecorder, key client.ObjectKey, obj intentObject, set func() error) (_ ctrl.Result, retErr error) {
	if err := reader.Get(ctx, key, obj); err != nil {
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
	defer func() {
		if err := helper.Patch(ctx, obj, clusterv1patch.WithOwnedConditions{Conditions: intentConditions}); err != nil && !isNotFound(err) {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		recordIntentTransitions(rec, before, obj)
	}()
	return ctrl.Result{}, set()
}

// intentObject is an AccessBinding, a RoleTemplate or a ClusterProject.
type intentObject interface {
	client.Object
	GetConditions() []metav1.Condition
	SetConditions([]metav1.Condition)
}

// setIntentStatus sets Ready, Reconciling and Stalled from a spec problem and the
// clusters' rows. what is "selected" or "connected", for messages.
func setIntentStatus(obj intentObject, problem *render.Problem, rows []clusterRow, what string) {
	if problem != nil {
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, problem.Reason, problem.Message)
		set(obj, v1alpha1.StalledCondition, metav1.ConditionTrue, problem.Reason, problem.Message)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, problem.Reason, "waiting for the spec or its references to be fixed")
		return
	}
	s := summarizeRows(rows)
	set(obj, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "")
	switch {
	case s.total == 0:
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, ReasonNoClusters, "no cluster is "+what)
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, ReasonNoClusters, "")
	case s.synced == s.total:
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, fmt.Sprintf("held by all %d %s clusters", s.total, what))
		set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "")
	default:
		msg := fmt.Sprintf("held by %d of %d %s clusters", s.synced, s.total, what)
		for i, f := range s.failures {
			if i == 3 {
				msg += fmt.Sprintf("; and %d more (see status.failures)", int(s.total-s.synced)-3)
				break
			}
			msg += fmt.Sprintf("; %s: %s", f.Cluster, f.Reason)
			if f.Message != "" {
				msg += " (" + f.Message + ")"
			}
		}
		reason := ReasonSyncFailed
		if s.pending {
			reason = v1alpha1.ReasonProgressing
		} else if allReason(s.failures, v1alpha1.ReasonDisconnected) {
			reason = v1alpha1.ReasonDisconnected
		}
		set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, reason, msg)
		if s.pending {
			set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ReasonProgressing, "syncing the clusters")
		} else {
			set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, reason, "retrying the clusters that failed")
		}
	}
}

func allReason(fs []v1alpha1.ClusterFailure, reason string) bool {
	for _, f := range fs {
		if f.Reason != reason {
			return false
		}
	}
	return len(fs) > 0
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
