package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/cluster-api/util/conditions"
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
	"github.com/drover-io/drover/registration"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/sharding"
)

// ManagedClusterFinalizer holds a ManagedCluster until Drover has cleaned up after it
// in the target (or given up, after the deletion timeout).
const ManagedClusterFinalizer = "management.drover.io/cleanup"

// clusterIDIndex indexes ManagedClusters by status.clusterID, for finding two that
// manage the same target.
const clusterIDIndex = "status.clusterID"

// secretRefIndex indexes ManagedClusters by the name of their kubeconfig Secret.
const secretRefIndex = "spec.kubeconfig.secretRef.name"

// ManagedClusterReconciler connects to each target cluster, reports its health and
// facts, installs the agent, and cleans up when the ManagedCluster is deleted.
type ManagedClusterReconciler struct {
	Client   client.Client
	Remote   *remote.Cache
	Recorder events.EventRecorder
	// Namespace holds the kubeconfig Secrets.
	Namespace string
	// AgentHeartbeatTimeout is how old the agent's Lease may get before AgentReady
	// turns False.
	AgentHeartbeatTimeout time.Duration
	// RemoteTimeout bounds each call to a target.
	RemoteTimeout time.Duration
	// Results are the cluster syncer's outcomes, for the Synced condition.
	Results *syncResults
	// HubURL is the hub server's URL, for clusters registered with
	// spec.registration; empty when the manager runs without the hub server.
	HubURL string
	// Registrations maps manifest ids to registered clusters, for the hub server.
	Registrations *registration.Registry
	// Tunnels reaches clusters registered with spec.registration; nil without the
	// hub server.
	Tunnels Tunnels
	// Rejections says why agents were turned away; nil without the hub server.
	Rejections *TunnelRejections
	// Shards are the shards this replica holds; nil when the hub is not sharded.
	// Only the replica that holds a cluster's shard connects to it and writes its
	// status.
	Shards *sharding.Shards

	controller controller.Controller
}

// SetupWithManager registers the controller.
func (r *ManagedClusterReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.ManagedCluster{}, secretRefIndex, func(o client.Object) []string {
		mc := o.(*v1alpha1.ManagedCluster)
		switch {
		case mc.Spec.Kubeconfig != nil:
			return []string{mc.Spec.Kubeconfig.SecretRef.Name}
		case mc.Spec.Registration != nil:
			ref, _ := tokenRef(mc)
			return []string{ref.Name}
		case mc.Spec.Provisioning != nil:
			return []string{ProvisionedKubeconfigSecretName(mc.Name)}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.ManagedCluster{}, clusterIDIndex, func(o client.Object) []string {
		if id := o.(*v1alpha1.ManagedCluster).Status.ClusterID; id != "" {
			return []string{id}
		}
		return nil
	}); err != nil {
		return err
	}
	c, err := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ManagedCluster{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{},
			predicate.AnnotationChangedPredicate{}, deletionPredicate()))).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clustersForSecret)).
		Watches(&v1alpha1.ManagedCluster{}, duplicatePeers(r.Client)).
		WatchesRawSource(r.Remote.Source()).
		WatchesRawSource(r.Results.Source(kindManagedCluster)).
		WatchesRawSource(shardChanges(r.Shards, r.Client, func() client.ObjectList { return &v1alpha1.ManagedClusterList{} })).
		WithOptions(controller.Options{MaxConcurrentReconciles: 10}).
		Named("managedcluster").
		Build(r)
	if err != nil {
		return err
	}
	r.controller = c
	return nil
}

// deletionPredicate passes updates that set a deletion timestamp (which does not bump
// the generation of a custom resource when finalizers hold it).
func deletionPredicate() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !e.ObjectNew.GetDeletionTimestamp().IsZero() && e.ObjectOld.GetDeletionTimestamp().IsZero()
		},
	}
}

func (r *ManagedClusterReconciler) clustersForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != r.Namespace {
		return nil
	}
	var list v1alpha1.ManagedClusterList
	if err := r.Client.List(ctx, &list, client.MatchingFields{secretRefIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list ManagedClusters for a Secret", "secret", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, mc := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Name: mc.Name}})
	}
	return reqs
}

// Reconcile brings one ManagedCluster's connection, agent and status up to date.
func (r *ManagedClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	mc := &v1alpha1.ManagedCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, mc); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !owns(r.Shards, mc) {
		// Another replica's shard: it connects, and writes status. This replica
		// only serves the cluster's agent manifest, as any replica may be asked.
		r.release(mc.Name)
		if mc.Spec.Registration != nil && mc.DeletionTimestamp.IsZero() {
			if token, ok := RegistrationToken(ctx, r.Client, r.Namespace, mc.Name); ok {
				r.Registrations.Set(mc.Name, registration.ID(token))
			} else {
				r.Registrations.Remove(mc.Name)
			}
		}
		return ctrl.Result{}, nil
	}
	helper, err := clusterv1patch.NewHelper(mc, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	before := mc.DeepCopy()
	s := &clusterScope{cluster: mc, now: time.Now()}
	defer func() {
		setManagedClusterStatus(s)
		if err := helper.Patch(ctx, mc, clusterv1patch.WithOwnedConditions{Conditions: managedClusterConditions}); err != nil && !isNotFound(err) {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		r.recordTransitions(before, mc)
		recordClusterMetrics(mc)
		if retErr != nil {
			reconcileErrors.WithLabelValues(mc.Name).Inc()
		}
	}()

	if !mc.DeletionTimestamp.IsZero() {
		// The cluster syncer cleans the target up (or orphans it) and releases
		// the finalizer; the connection is left as it is meanwhile.
		s.deleting = true
		return ctrl.Result{}, nil
	}
	if mc.Spec.Paused {
		// Paused: no connection, no probes, no watches; nothing happens for this
		// cluster until it is resumed.
		s.paused = true
		r.Remote.Disconnect(mc.Name)
		return ctrl.Result{}, nil
	}
	res, err = r.reconcileNormal(ctx, s)
	if err == nil && s.problem != nil && s.problem.stalled {
		// A spec or Secret problem needs a person: no retry, no backoff. The
		// Secret and ManagedCluster watches bring the cluster back when it is fixed.
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("%s: %s", s.problem.reason, s.problem.message))
	}
	return res, err
}

func (r *ManagedClusterReconciler) reconcileNormal(ctx context.Context, s *clusterScope) (ctrl.Result, error) {
	cl := r.reconcileConnection(ctx, s)
	switch {
	case cl != nil && cl.State() == remote.StateUnidentified:
		// Reached, but not identified: nothing is synced until it is, and status
		// says so rather than keep what it said before.
		// Refused (401, 403): a person must grant the credentials get on
		// namespaces, so it is Stalled; anything else may pass by itself.
		s.problem = &problem{v1alpha1.ReasonIdentityUnknown, cl.IdentityError(), cl.IdentityDenied()}
		return ctrl.Result{}, nil
	case cl != nil && cl.State() == remote.StateSettling && s.problem == nil && conditions.Has(s.cluster, v1alpha1.ReadyCondition):
		// The connection is being (re)built, after a restart say: what status says
		// still holds until it has something to report, which it signals. No write.
		s.settling = true
		return ctrl.Result{}, nil
	}
	if cl == nil || !s.health.Connected {
		// Nothing more to do until the connection changes: the Secret watch and
		// the connection's probe events bring us back. No polling.
		return ctrl.Result{}, nil
	}
	s.clusterID = cl.ID()
	if other := duplicateOf(ctx, r.Client, r.Remote, s.cluster, s.clusterID); other != "" {
		s.problem = &problem{v1alpha1.ReasonDuplicateCluster, fmt.Sprintf(
			"ManagedCluster %s already manages this cluster (status.clusterID %s): Drover writes nothing through this one; delete it", other, s.clusterID), true}
		return ctrl.Result{}, nil
	}
	if res, ok := r.Results.get(s.cluster.Name); ok {
		s.sync = &res
	}
	var errs []error
	if err := r.reconcileFacts(ctx, s, cl); err != nil {
		errs = append(errs, err)
	}
	r.reconcileAgent(s)
	requeue := r.reconcileAgentLease(ctx, s, cl)
	if err := kerrors.NewAggregate(errs); err != nil {
		return ctrl.Result{}, err
	}
	if s.factsErr != "" {
		// The facts come from the cluster's cache; look again shortly.
		requeue = 2 * time.Second
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// reconcileAgent reads the agent's install state from the cluster syncer, which
// applies the agent's objects with everything else it writes into the target.
func (r *ManagedClusterReconciler) reconcileAgent(s *clusterScope) {
	switch {
	case s.sync == nil || !s.sync.Synced:
		// Not synced since the manager started (or the connection is being set
		// up): what Ready said about the agent still holds.
		s.agentInstalled = conditions.IsTrue(s.cluster, v1alpha1.ReadyCondition)
	case s.sync.Agent.OK:
		s.agentInstalled = true
	case s.sync.Agent.Reason == v1alpha1.ReasonConflict:
		s.agentErr = "the agent's objects in the target belong to another Drover hub or ManagedCluster; Drover does not take them over: " + s.sync.Agent.Message
		s.agentConflict = true
	default:
		s.agentErr = "installing the agent failed: " + s.sync.Agent.Message
	}
}

// forget drops everything held for a cluster that no longer exists.
func (r *ManagedClusterReconciler) forget(name string) {
	r.Registrations.Remove(name)
	r.Remote.Forget(name)
	if r.Tunnels != nil {
		// The ManagedCluster is gone: its agent's credential no longer matches
		// anything, and the tunnel it holds closes now.
		r.Tunnels.Close(name)
	}
	r.Rejections.forget(name)
	remote.ForgetMetrics(name)
	forgetClusterMetrics(name)
}

// release drops the connection and the metrics of a cluster that another replica
// owns (sharding). Its tunnel, if it lands on this replica, stays open: the owner
// reaches the cluster through it.
func (r *ManagedClusterReconciler) release(name string) {
	if r.Remote.Get(name) != nil {
		ctrl.Log.WithName("sharding").Info("Releasing a cluster of a shard this replica no longer holds", "ManagedCluster", name)
	}
	r.Remote.Forget(name)
	remote.ForgetMetrics(name)
	forgetClusterMetrics(name)
}

// recordTransitions emits an event for each condition that changed status or reason.
func (r *ManagedClusterReconciler) recordTransitions(before, after *v1alpha1.ManagedCluster) {
	if r.Recorder == nil {
		return
	}
	for _, t := range []string{v1alpha1.ConnectedCondition, v1alpha1.AgentReadyCondition, v1alpha1.ReadyCondition, v1alpha1.WarningCondition} {
		old := findCondition(before.Status.Conditions, t)
		cur := findCondition(after.Status.Conditions, t)
		if cur == nil || (old != nil && old.Status == cur.Status && old.Reason == cur.Reason) {
			continue
		}
		typ := corev1.EventTypeNormal
		switch {
		case t == v1alpha1.WarningCondition:
			// Warning is the one condition whose True is bad news.
			if cur.Status == metav1.ConditionTrue {
				typ = corev1.EventTypeWarning
			}
		case cur.Status != "True" && cur.Reason != v1alpha1.ReasonProgressing && cur.Reason != v1alpha1.ReasonProbing &&
			cur.Reason != v1alpha1.ReasonAgentInstalling && cur.Reason != v1alpha1.ReasonPaused:
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(after, nil, typ, cur.Reason, t, "%s=%s: %s", t, cur.Status, cur.Message)
	}
}

func (r *ManagedClusterReconciler) remoteCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.RemoteTimeout)
}

func secretSource(ns string, ref v1alpha1.SecretKeyReference) string {
	return fmt.Sprintf("secret %s/%s key '%s'", ns, ref.Name, ref.KeyOrDefault())
}
