package controllers

import (
	"context"
	"fmt"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/sharding"
)

// RoleTemplateReconciler writes RoleTemplate status: in how many clusters its
// ClusterRole is installed at the current generation, and what is wrong with its
// inheritance, if anything.
type RoleTemplateReconciler struct {
	Client client.Client
	// Reader reads the template itself from the API server.
	Reader   client.Reader
	Results  *syncResults
	Recorder events.EventRecorder
	// Shards are the shards this replica holds; nil when the hub is not sharded.
	Shards *sharding.Shards
}

// SetupWithManager registers the controller.
func (r *RoleTemplateReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(r.allTemplates)
	return ctrl.NewControllerManagedBy(mgr).
		Named("roletemplate").
		For(&v1alpha1.RoleTemplate{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Inheritance: a change to one template can break or mend another.
		Watches(&v1alpha1.RoleTemplate{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ManagedCluster{}, all, builder.WithPredicates(predicate.Or(deletionPredicate(), createDeleteOnly()))).
		WatchesRawSource(r.Results.Source(kindRoleTemplate)).
		Watches(&v1alpha1.RoleTemplate{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(shardEntriesChanged())).
		Watches(&v1alpha1.ManagedCluster{}, all, builder.WithPredicates(shardLabelChanged())).
		WatchesRawSource(shardChanges(r.Shards, r.Client, func() client.ObjectList { return &v1alpha1.RoleTemplateList{} })).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *RoleTemplateReconciler) allTemplates(ctx context.Context, _ client.Object) []reconcile.Request {
	return requestsForAll(ctx, r.Client, &v1alpha1.RoleTemplateList{})
}

// Reconcile computes one template's status.
func (r *RoleTemplateReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := &v1alpha1.RoleTemplate{}
	return reconcileIntentStatus(ctx, r.Client, r.Reader, r.Recorder, r.Shards, kindRoleTemplate, req.NamespacedName, t, func(p *shardPass) (rowSummary, error) { return r.setStatus(ctx, t, p) })
}

// setStatus computes the status of t from the hub's cache and the sync results.
func (r *RoleTemplateReconciler) setStatus(ctx context.Context, t *v1alpha1.RoleTemplate, p *shardPass) (rowSummary, error) {
	var rts v1alpha1.RoleTemplateList
	var mcs v1alpha1.ManagedClusterList
	if err := r.Client.List(ctx, &rts); err != nil {
		return rowSummary{}, err
	}
	// The fleet is read, never changed: no copy of a thousand clusters per status.
	if err := r.Client.List(ctx, &mcs, client.UnsafeDisableDeepCopy); err != nil {
		return rowSummary{}, err
	}
	var problem *render.Problem
	if resolved := render.ResolveTemplates(rts.Items)[t.Name]; resolved != nil {
		problem = resolved.Problem
	}
	var rows []clusterRow
	prev := previousOf(t.Generation, t.Status.ObservedGeneration, t.Status.Failures)
	if problem == nil {
		for _, mc := range mcs.Items {
			if !mc.DeletionTimestamp.IsZero() || p.elsewhere(&mc) {
				continue
			}
			name := t.Name
			row := rowFor(r.Results, &mc, t.Generation, prev, func(res clusterResult) (itemResult, bool) {
				it, ok := res.Templates[name]
				return it, ok
			})
			p.add(&mc, row)
			rows = append(rows, row)
		}
		remote, _ := p.remoteRows(t.Status.Shards)
		rows = append(rows, remote...)
	}
	setIntentStatus(t, problem, rows, "registered")
	st := summarizeRows(rows)
	t.Status.Clusters = st.total
	t.Status.InstalledClusters = st.synced
	t.Status.Installed = fmt.Sprintf("%d/%d", st.synced, st.total)
	t.Status.Failures = st.failures
	t.Status.ObservedGeneration = t.Generation
	return st, nil
}
