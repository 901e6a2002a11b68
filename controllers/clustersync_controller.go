package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/targetsync"
)

// Reasons of per-cluster sync results.
const (
	// ReasonPending: the cluster has not been synced since the intent changed.
	ReasonPending = "Pending"
	// ReasonApplyFailed: the target rejected an object.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonConflict: an object Drover needs exists in the target and is not Drover's.
	ReasonConflict = "Conflict"
	// ReasonClusterRoleNotFound: a binding's roleRef ClusterRole does not exist in the target.
	ReasonClusterRoleNotFound = "ClusterRoleNotFound"
	// ReasonClusterDeleting: the ManagedCluster is being deleted.
	ReasonClusterDeleting = "ClusterDeleting"
)

// missingRoleRecheck is how often a cluster whose bindings refer to a ClusterRole it
// lacks is looked at again (Drover does not watch ClusterRoles it does not own).
const missingRoleRecheck = 30 * time.Second

// ClusterSyncReconciler is the per-cluster syncer: for one ManagedCluster it renders
// the intents into the objects the target must hold, applies and prunes them, and
// records the outcome for the status controllers. It watches the objects it owns in
// the target, so a deleted or edited object is restored at once.
type ClusterSyncReconciler struct {
	Client        client.Client
	Remote        *remote.Cache
	Results       *syncResults
	RemoteTimeout time.Duration

	controller controller.Controller
}

// SetupWithManager registers the syncer.
func (r *ClusterSyncReconciler) SetupWithManager(mgr ctrl.Manager) error {
	allClusters := handler.EnqueueRequestsFromMapFunc(r.allClusters)
	intentChanged := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionPredicate()))
	c, err := ctrl.NewControllerManagedBy(mgr).
		Named("clustersync").
		For(&v1alpha1.ManagedCluster{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, deletionPredicate()))).
		Watches(&v1alpha1.RoleTemplate{}, allClusters, intentChanged).
		Watches(&v1alpha1.AccessBinding{}, allClusters, intentChanged).
		Watches(&v1alpha1.ClusterProject{}, allClusters, intentChanged).
		WatchesRawSource(r.Remote.Source()).
		WithOptions(controller.Options{MaxConcurrentReconciles: 10}).
		Build(r)
	if err != nil {
		return err
	}
	r.controller = c
	return nil
}

func (r *ClusterSyncReconciler) allClusters(ctx context.Context, _ client.Object) []reconcile.Request {
	return requestsForAll(ctx, r.Client, &v1alpha1.ManagedClusterList{})
}

// Reconcile syncs one cluster.
func (r *ClusterSyncReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mc := &v1alpha1.ManagedCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, mc); err != nil {
		if apierrors.IsNotFound(err) {
			r.Results.set(req.Name, clusterResult{}, false)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	switch {
	case !mc.DeletionTimestamp.IsZero():
		// The ManagedCluster controller cleans the target up (or orphans it).
		r.Results.set(mc.Name, clusterResult{Reason: ReasonClusterDeleting, Message: "the cluster is being deleted"}, true)
		return ctrl.Result{}, nil
	case mc.Spec.Paused:
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonPaused, Message: "the cluster is paused"}, true)
		return ctrl.Result{}, nil
	}
	cl := r.Remote.Get(mc.Name)
	if cl == nil || !cl.Health().Connected || cl.Client() == nil {
		msg := "the cluster is not connected"
		switch {
		case cl != nil && cl.Health().Connected:
			msg = "the connection to the cluster is being set up"
		case cl != nil && cl.Health().Message != "":
			msg += ": " + cl.Health().Message
		}
		// The connection's events bring us back when it comes up; no polling.
		r.Results.set(mc.Name, clusterResult{Reason: v1alpha1.ReasonDisconnected, Message: msg}, true)
		return ctrl.Result{}, nil
	}
	for _, w := range []struct {
		name string
		obj  client.Object
	}{{"clusterroles", &rbacv1.ClusterRole{}}, {"clusterrolebindings", &rbacv1.ClusterRoleBinding{}},
		{"rolebindings", &rbacv1.RoleBinding{}}, {"namespaces", &corev1.Namespace{}},
		{"resourcequotas", &corev1.ResourceQuota{}}, {"limitranges", &corev1.LimitRange{}},
		{"networkpolicies", &networkingv1.NetworkPolicy{}}} {
		if err := r.Remote.Watch(mc.Name, "sync-"+w.name, r.controller, ownedSource(mc.Name, w.obj)); err != nil {
			return ctrl.Result{}, fmt.Errorf("watch %s in cluster %s: %w", w.name, mc.Name, err)
		}
	}

	in, err := r.intents(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	res := render.Render(render.Cluster{Name: mc.Name, Labels: mc.Labels}, in)

	rctx, cancel := context.WithTimeout(ctx, r.RemoteTimeout)
	defer cancel()
	syncer := &targetsync.Syncer{Cached: cl.Client(), Direct: cl.Reader, Kinds: targetsync.DefaultKinds()}
	rep, syncErr := syncer.Sync(rctx, res.Objects, targetsync.Options{Adoptable: res.Adoptable, NamespacePolicy: res.NamespacePolicy})
	if rep.Applied > 0 || rep.Pruned > 0 {
		ctrl.LoggerFrom(ctx).V(1).Info("Synced cluster", "applied", rep.Applied, "pruned", rep.Pruned)
	}
	missing, roleErr := r.missingClusterRoles(rctx, cl, res.ClusterRoleRefs)
	outcome := summarize(in, res, rep, missing)
	if err := addUsage(rctx, cl.Client(), outcome.Projects); err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("Cannot read quota usage", "error", shortErr(err))
	}
	if syncErr != nil {
		outcome = clusterResult{Reason: ReasonApplyFailed, Message: "syncing failed: " + shortErr(syncErr)}
	}
	r.Results.set(mc.Name, outcome, true)
	switch {
	case syncErr != nil:
		return ctrl.Result{}, syncErr
	case roleErr != nil:
		return ctrl.Result{}, roleErr
	case len(rep.Failed) > 0 || len(rep.PruneFailed) > 0:
		// Rejected writes are retried with the controller's backoff.
		return ctrl.Result{}, fmt.Errorf("cluster %s: %d objects could not be applied and %d not pruned", mc.Name, len(rep.Failed), len(rep.PruneFailed))
	case len(missing) > 0:
		return ctrl.Result{RequeueAfter: missingRoleRecheck}, nil
	}
	return ctrl.Result{}, nil
}

// intents reads every intent from the hub's cache.
func (r *ClusterSyncReconciler) intents(ctx context.Context) (render.Intents, error) {
	var rts v1alpha1.RoleTemplateList
	var abs v1alpha1.AccessBindingList
	var cps v1alpha1.ClusterProjectList
	for _, l := range []client.ObjectList{&rts, &abs, &cps} {
		if err := r.Client.List(ctx, l); err != nil {
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
	failures := map[string][]string{} // intent label value -> failures
	projectFailures := map[string][]string{}
	conflict := map[string]bool{}
	objs := map[targetsync.Key]client.Object{}
	for _, o := range res.Objects {
		objs[targetsync.KeyOf(o)] = o
	}
	for _, k := range targetsync.SortedKeys(rep.Failed) {
		o := objs[k]
		if o == nil {
			continue
		}
		msg := shortErr(rep.Failed[k])
		isConflict := strings.Contains(msg, targetsync.ErrConflict.Error())
		for _, key := range []string{render.AccessBindingLabel, render.RoleTemplateLabel, render.ProjectLabel} {
			if v := o.GetLabels()[key]; v != "" {
				if key == render.RoleTemplateLabel && k.Kind != "ClusterRole" {
					continue // a binding's failure is the binding's, not its template's
				}
				id := key + "=" + v
				failures[id] = append(failures[id], msg)
				conflict[id] = conflict[id] || isConflict
			}
		}
		// A project fails for its own objects, not for the bindings placed in it.
		if p := o.GetLabels()[render.ProjectLabel]; p != "" && o.GetLabels()[render.AccessBindingLabel] == "" {
			id := render.ProjectLabel + "=" + p
			projectFailures[id] = append(projectFailures[id], msg)
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
	item := func(gen int64, fails []string, isConflict bool) itemResult {
		if len(fails) == 0 {
			return itemResult{Generation: gen, OK: true}
		}
		reason := ReasonApplyFailed
		if isConflict {
			reason = ReasonConflict
		}
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
		isConflict := conflict[id]
		if c := res.NamespaceConflicts[p]; len(c) > 0 {
			var lost []string
			for _, m := range c {
				if strings.Contains(m, "claimed it first") {
					lost = append(lost, m)
				}
			}
			if len(lost) > 0 {
				fails = append(fails, lost...)
				isConflict = true
			}
		}
		it := item(gens["p/"+p], fails, isConflict)
		if it.OK && len(res.NamespaceConflicts[p]) > 0 {
			it.Message = strings.Join(res.NamespaceConflicts[p], "; ")
		}
		out.Projects[p] = it
	}
	for _, t := range res.Templates {
		id := render.RoleTemplateLabel + "=" + t
		out.Templates[t] = item(gens["t/"+t], failures[id], conflict[id])
	}
	for _, b := range res.Bindings {
		id := render.AccessBindingLabel + "=" + b
		fails := failures[id]
		isConflict := conflict[id]
		if p := project[b]; p != "" {
			// A project namespace that Drover does not hold fails the binding too.
			pid := render.ProjectLabel + "=" + p
			for _, f := range failures[pid] {
				if strings.HasPrefix(f, "Namespace ") {
					fails = append(fails, f)
				}
			}
			isConflict = isConflict || conflict[pid]
		}
		it := item(gens["b/"+b], dedupeStrings(fails), isConflict)
		if role, ok := res.ClusterRoleRefs[b]; ok && missingRoles[role] && it.OK {
			it = itemResult{Generation: it.Generation, Reason: ReasonClusterRoleNotFound,
				Message: fmt.Sprintf("ClusterRole %q does not exist in this cluster; the binding is in place but grants nothing until it does", role)}
		}
		out.Bindings[b] = it
	}
	return out
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
func addUsage(ctx context.Context, c client.Reader, projects map[string]itemResult) error {
	if len(projects) == 0 {
		return nil
	}
	var quotas corev1.ResourceQuotaList
	if err := c.List(ctx, &quotas, client.MatchingLabels{render.ManagedByLabel: render.ManagedByValue}); err != nil {
		return err
	}
	for _, q := range quotas.Items {
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
// only those) and enqueues the cluster, so drift is repaired at once.
func ownedSource(cluster string, obj client.Object) func(cache.Cache) source.Source {
	return func(c cache.Cache) source.Source {
		enqueue := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: cluster}}}
		})
		return source.Kind(c, obj, enqueue, predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return ownedObjectChanged(e.ObjectOld, e.ObjectNew) },
		})
	}
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
