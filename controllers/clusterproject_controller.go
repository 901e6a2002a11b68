package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/cluster-api/util/conditions"
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

// maxProjectClusters bounds status.clusters of a ClusterProject.
const maxProjectClusters = 100

// ClusterProjectReconciler writes ClusterProject status from the per-cluster sync
// results: where the project holds at its current generation, its quota usage per
// cluster, and what is wrong (quota overflow, namespace conflicts). The cluster
// syncer does the work in the targets.
type ClusterProjectReconciler struct {
	Client client.Client
	// Reader reads the project itself from the API server.
	Reader   client.Reader
	Results  *syncResults
	Recorder events.EventRecorder
	// Shards are the shards this replica holds; nil when the hub is not sharded.
	Shards *sharding.Shards
}

// SetupWithManager registers the controller.
func (r *ClusterProjectReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(r.allProjects)
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusterproject").
		For(&v1alpha1.ClusterProject{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Another project's namespaces can conflict with this one's.
		Watches(&v1alpha1.ClusterProject{}, all, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, createDeleteOnly()))).
		Watches(&v1alpha1.ManagedCluster{}, all, builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate(), createDeleteOnly()))).
		WatchesRawSource(r.Results.Source(kindClusterProject)).
		Watches(&v1alpha1.ClusterProject{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(shardEntriesChanged())).
		WatchesRawSource(shardChanges(r.Shards, r.Client, func() client.ObjectList { return &v1alpha1.ClusterProjectList{} })).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func (r *ClusterProjectReconciler) allProjects(ctx context.Context, _ client.Object) []reconcile.Request {
	return requestsForAll(ctx, r.Client, &v1alpha1.ClusterProjectList{})
}

// Reconcile computes one project's status.
func (r *ClusterProjectReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &v1alpha1.ClusterProject{}
	return reconcileIntentStatus(ctx, r.Client, r.Reader, r.Recorder, r.Shards, kindClusterProject, req.NamespacedName, p, func(sp *shardPass) (rowSummary, error) { return r.setStatus(ctx, p, sp) })
}

// setStatus computes the status of p from the hub's cache and the sync results.
func (r *ClusterProjectReconciler) setStatus(ctx context.Context, p *v1alpha1.ClusterProject, sp *shardPass) (rowSummary, error) {
	var mcs v1alpha1.ManagedClusterList
	// The fleet is read, never changed: no copy of a thousand clusters per status.
	if err := r.Client.List(ctx, &mcs, client.UnsafeDisableDeepCopy); err != nil {
		return rowSummary{}, err
	}
	var rows []clusterRow
	var clusters []v1alpha1.ProjectClusterStatus
	var notes []string
	problem := render.ValidateSelection("spec.clusters", &p.Spec.Clusters)
	if problem == nil {
		problem = render.QuotaOverflow(p)
	}
	var prevFailures []v1alpha1.ClusterFailure
	prevClusters := map[string]v1alpha1.ProjectClusterStatus{}
	for _, c := range p.Status.Clusters {
		prevClusters[c.Cluster] = c
		if !c.Synced {
			prevFailures = append(prevFailures, v1alpha1.ClusterFailure{Cluster: c.Cluster, Reason: c.Reason, Message: c.Message})
		}
	}
	prev := previousOf(p.Generation, p.Status.ObservedGeneration, prevFailures)
	for _, mc := range mcs.Items {
		if problem != nil && problem.Reason == render.ReasonInvalidSelector {
			break
		}
		if ok, _ := render.Selects(p.Spec.Clusters, render.Cluster{Name: mc.Name, Labels: mc.Labels}); !ok || sp.elsewhere(&mc) {
			continue
		}
		var it itemResult
		row := rowFor(r.Results, &mc, p.Generation, prev, func(res clusterResult) (itemResult, bool) {
			i, ok := res.Projects[p.Name]
			it = i
			return i, ok
		})
		rows = append(rows, row)
		sp.add(&mc, row)
		if pc, ok := prevClusters[mc.Name]; row.previous && ok {
			// Not synced since the manager started: keep what status said.
			clusters = append(clusters, pc)
			sp.addProject(pc)
			if pc.Synced && pc.Message != "" {
				notes = append(notes, mc.Name+": "+pc.Message)
			}
			continue
		}
		cs := v1alpha1.ProjectClusterStatus{Cluster: mc.Name, Synced: row.synced, Reason: row.reason, Message: truncate(row.message, 1024)}
		if row.synced {
			cs.Reason = "Synced"
			if it.Message != "" {
				cs.Message = truncate(it.Message, 1024)
				notes = append(notes, mc.Name+": "+it.Message)
			}
		}
		if len(it.Used) > 0 {
			cs.Used = v1alpha1.ResourceList(it.Used)
		}
		if len(it.Hard) > 0 {
			cs.Hard = v1alpha1.ResourceList(it.Hard)
		}
		clusters = append(clusters, cs)
		sp.addProject(cs)
	}
	if sp != nil {
		// The clusters of the shards this replica does not hold: from their entries.
		remote, valid := sp.remoteRows(p.Status.Shards)
		rows = append(rows, remote...)
		for k, names := range sp.remote {
			e, ok := valid[k]
			if !ok {
				for _, n := range names {
					clusters = append(clusters, v1alpha1.ProjectClusterStatus{Cluster: n, Reason: v1alpha1.ReasonPending,
						Message: fmt.Sprintf("shard %d has not reported generation %d yet", k, p.Generation)})
				}
				continue
			}
			for _, cs := range e.ProjectClusters {
				clusters = append(clusters, cs)
				if cs.Synced && cs.Message != "" {
					notes = append(notes, cs.Cluster+": "+cs.Message)
				}
			}
		}
	}
	if problem == nil || problem.Reason != render.ReasonInvalidSelector {
		for _, row := range missingRows(&p.Spec.Clusters, mcs.Items, "spec.clusters.names") {
			rows = append(rows, row)
			clusters = append(clusters, v1alpha1.ProjectClusterStatus{Cluster: row.cluster, Reason: row.reason, Message: row.message})
		}
	}
	sort.Slice(clusters, func(i, j int) bool { return clusters[i].Cluster < clusters[j].Cluster })
	if len(clusters) > maxProjectClusters {
		clusters = clusters[:maxProjectClusters]
	}

	setIntentStatus(p, problem, rows, "placed")
	if len(notes) > 0 && readySucceeded(p) {
		sort.Strings(notes)
		set(p, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonSucceeded,
			conditions.GetMessage(p, v1alpha1.ReadyCondition)+"; "+strings.Join(notes, "; "))
	}
	st := summarizeRows(rows)
	p.Status.PlacedClusters = st.total
	p.Status.SyncedClusters = st.synced
	p.Status.Synced = fmt.Sprintf("%d/%d", st.synced, st.total)
	p.Status.NamespaceCount = int32(len(p.Spec.Namespaces))
	if !equality.Semantic.DeepEqual(p.Status.Clusters, clusters) {
		p.Status.Clusters = clusters
	}
	p.Status.ObservedGeneration = p.Generation
	return st, nil
}

func readySucceeded(p *v1alpha1.ClusterProject) bool {
	c := findCondition(p.Status.Conditions, v1alpha1.ReadyCondition)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonSucceeded
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
