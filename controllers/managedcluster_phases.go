package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/clusterfacts"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/targetsync"
)

// clusterScope carries what one reconcile learnt; setManagedClusterStatus turns it
// into status.
type clusterScope struct {
	cluster *v1alpha1.ManagedCluster
	now     time.Time

	paused   bool
	deleting bool
	// released is set once the finalizer is gone: the object may no longer exist.
	released bool

	// problem is a spec or Secret problem that stops the connection.
	problem *problem
	// health of the connection, when there is one.
	health   remote.Health
	endpoint string

	nodes        *clusterfacts.NodeSummary
	distribution v1alpha1.Distribution
	factsErr     string

	// sync is the cluster syncer's last result, if any.
	sync *clusterResult

	agentInstalled bool
	agentErr       string
	lease          *leaseState
}

type problem struct {
	reason, message string
	// stalled problems need a person to change something.
	stalled bool
}

type leaseState struct {
	found      bool
	renewTime  time.Time
	version    string
	expired    bool
	expiredFor time.Duration
}

// reconcileConnection reads the kubeconfig Secret and gets the connection for it.
func (r *ManagedClusterReconciler) reconcileConnection(ctx context.Context, s *clusterScope) *remote.Cluster {
	mc := s.cluster
	switch {
	case mc.Spec.Registration != nil:
		s.problem = &problem{v1alpha1.ReasonConnectionModeUnsupported,
			"spec.registration (agent-initiated registration) is not supported by this version of Drover; use spec.kubeconfig", true}
		return nil
	case mc.Spec.Kubeconfig == nil:
		s.problem = &problem{v1alpha1.ReasonNoConnectionMode,
			"set spec.kubeconfig.secretRef to a Secret in " + r.Namespace + " holding the cluster's kubeconfig", true}
		return nil
	}
	ref := mc.Spec.Kubeconfig.SecretRef
	source := secretSource(r.Namespace, ref)
	var secret corev1.Secret
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			s.problem = &problem{v1alpha1.ReasonSecretNotFound, fmt.Sprintf("secret %s/%s does not exist; create it with the cluster's kubeconfig under key '%s'", r.Namespace, ref.Name, ref.KeyOrDefault()), true}
		} else {
			s.problem = &problem{v1alpha1.ReasonSecretNotFound, fmt.Sprintf("cannot read secret %s/%s: %v", r.Namespace, ref.Name, err), false}
		}
		r.Remote.Disconnect(mc.Name)
		return nil
	}
	data, ok := secret.Data[ref.KeyOrDefault()]
	if !ok {
		s.problem = &problem{v1alpha1.ReasonSecretKeyNotFound, fmt.Sprintf("secret %s/%s has no key '%s' (it has: %s)", r.Namespace, ref.Name, ref.KeyOrDefault(), keyList(secret.Data)), true}
		r.Remote.Disconnect(mc.Name)
		return nil
	}
	cl, err := r.Remote.Connect(ctx, mc.Name, data, source)
	if err != nil {
		if errors.Is(err, remote.ErrInvalidKubeconfig) {
			s.problem = &problem{v1alpha1.ReasonInvalidKubeconfig, fmt.Sprintf("%s does not hold a usable kubeconfig: %s", source, strings.TrimPrefix(err.Error(), remote.ErrInvalidKubeconfig.Error()+": ")), true}
		} else {
			ctrl.LoggerFrom(ctx).Error(err, "Cannot set up a client", "source", source)
			s.problem = &problem{v1alpha1.ReasonProbeFailed, fmt.Sprintf("cannot set up a client from %s", source), false}
		}
		r.Remote.Disconnect(mc.Name)
		return nil
	}
	s.health = cl.Health()
	s.endpoint = cl.Endpoint
	if s.health.Connected && cl.Cache() != nil {
		if err := r.Remote.Watch(mc.Name, "nodes", r.controller, nodeSource(mc.Name)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to watch Nodes")
		}
		if err := r.Remote.Watch(mc.Name, "agent-lease", r.controller, agentLeaseSource(mc.Name)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to watch the agent's Lease")
		}
		if err := r.Remote.Watch(mc.Name, "agent-deployment", r.controller, agentDeploymentSource(mc.Name)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to watch the agent's Deployment")
		}
	}
	return cl
}

func keyList(m map[string][]byte) string {
	if len(m) == 0 {
		return "no keys"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// nodeSource watches a target's Nodes and enqueues its ManagedCluster when something
// facts depend on changes (not on every status heartbeat).
func nodeSource(cluster string) func(cache.Cache) source.Source {
	return func(c cache.Cache) source.Source {
		return source.Kind(c, &corev1.Node{},
			handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *corev1.Node) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: cluster}}}
			}),
			predicate.TypedFuncs[*corev1.Node]{
				UpdateFunc: func(e event.TypedUpdateEvent[*corev1.Node]) bool {
					return nodeChanged(e.ObjectOld, e.ObjectNew)
				},
			})
	}
}

// agentLeaseSource watches the agent's Lease in a target. A Lease that appears, goes,
// or changes version enqueues the cluster; a renewal does not (the expiry is checked
// by a timed requeue), so a healthy fleet costs nothing.
func agentLeaseSource(cluster string) func(cache.Cache) source.Source {
	return func(c cache.Cache) source.Source {
		enqueue := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: cluster}}}
		})
		return source.Kind(c, client.Object(&coordinationv1.Lease{}), enqueue, predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return e.Object.GetName() == AgentName },
			DeleteFunc: func(e event.DeleteEvent) bool { return e.Object.GetName() == AgentName },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectNew.GetName() == AgentName &&
					e.ObjectOld.GetAnnotations()[agent.LeaseAnnotationVersion] != e.ObjectNew.GetAnnotations()[agent.LeaseAnnotationVersion]
			},
			GenericFunc: func(event.GenericEvent) bool { return false },
		})
	}
}

// agentDeploymentSource notices when the agent's Deployment is deleted (or its
// namespace with it) and enqueues the cluster, whose next reconcile (unless it is
// being deleted) finds the Deployment missing and installs the agent again.
func agentDeploymentSource(cluster string) func(cache.Cache) source.Source {
	return func(c cache.Cache) source.Source {
		enqueue := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: cluster}}}
		})
		return source.Kind(c, client.Object(&appsv1.Deployment{}), enqueue, predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			DeleteFunc:  func(e event.DeleteEvent) bool { return e.Object.GetName() == AgentName },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})
	}
}

// reconcileFacts reads version and node facts from the connection's cache.
func (r *ManagedClusterReconciler) reconcileFacts(ctx context.Context, s *clusterScope, cl *remote.Cluster) error {
	rctx, cancel := r.remoteCtx(ctx)
	defer cancel()
	cc := cl.Client()
	if cc == nil {
		s.factsErr = "the cluster cache is not built yet"
		return nil
	}
	var nodes corev1.NodeList
	if err := cc.List(rctx, &nodes); err != nil {
		s.factsErr = fmt.Sprintf("cannot list nodes in the cluster: %s", shortErr(err))
		return nil
	}
	sum := clusterfacts.SummarizeNodes(nodes.Items)
	s.nodes = &sum
	gitVersion := ""
	if s.health.Version != nil {
		gitVersion = s.health.Version.GitVersion
	}
	s.distribution = clusterfacts.DetectDistribution(gitVersion, nodes.Items)
	return nil
}

// reconcileAgent installs the agent with server-side apply, once per connection and
// desired state: an unchanged agent costs no API calls.
func (r *ManagedClusterReconciler) reconcileAgent(ctx context.Context, s *clusterScope, cl *remote.Cluster) error {
	hash := agentHash(cl.Name, r.AgentImage)
	if cl.Marked("agent", hash) && r.agentDeploymentCached(ctx, cl) {
		s.agentInstalled = true
		return nil
	}
	rctx, cancel := r.remoteCtx(ctx)
	defer cancel()
	objs := agentObjects(cl.Name, r.AgentImage)
	// A drover-system namespace that exists and is not Drover's (the hub itself
	// registered as a target, say) is used but never labelled as Drover's, so that
	// cleanup never deletes it.
	var ns corev1.Namespace
	if err := cl.Reader.Get(rctx, types.NamespacedName{Name: AgentNamespace}, &ns); err == nil && ns.Labels[remote.ManagedByLabel] != remote.ManagedByValue {
		objs = objs[1:]
	}
	for _, obj := range objs {
		if err := cl.Reader.Apply(rctx, obj, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			s.agentErr = fmt.Sprintf("installing the agent failed: %s", shortErr(err))
			return fmt.Errorf("install agent in cluster %s: %w", cl.Name, err)
		}
	}
	cl.Mark("agent", hash)
	s.agentInstalled = true
	ctrl.LoggerFrom(ctx).Info("Installed agent", "image", r.AgentImage)
	return nil
}

// agentDeploymentCached tells whether the agent's Deployment is in the cluster's cache
// (of Drover-owned objects). On a read error it trusts the install mark.
func (r *ManagedClusterReconciler) agentDeploymentCached(ctx context.Context, cl *remote.Cluster) bool {
	cc := cl.Client()
	if cc == nil {
		return true
	}
	rctx, cancel := r.remoteCtx(ctx)
	defer cancel()
	var d appsv1.Deployment
	err := cc.Get(rctx, types.NamespacedName{Namespace: AgentNamespace, Name: AgentName}, &d)
	return !apierrors.IsNotFound(err) && (err != nil || d.DeletionTimestamp.IsZero())
}

// reconcileAgentLease turns the agent's Lease into AgentReady, and says when to look
// again: just after the Lease would expire. That re-check reads the cache only.
func (r *ManagedClusterReconciler) reconcileAgentLease(ctx context.Context, s *clusterScope, cl *remote.Cluster) time.Duration {
	rctx, cancel := r.remoteCtx(ctx)
	defer cancel()
	cc := cl.Client()
	if cc == nil {
		s.lease = &leaseState{}
		return r.AgentHeartbeatTimeout / 2
	}
	var lease coordinationv1.Lease
	err := cc.Get(rctx, types.NamespacedName{Namespace: AgentNamespace, Name: AgentName}, &lease)
	if err != nil {
		s.lease = &leaseState{}
		if !apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).V(1).Info("Cannot read agent lease", "error", shortErr(err))
		}
		return r.AgentHeartbeatTimeout / 2
	}
	st := &leaseState{found: true, version: lease.Annotations[agent.LeaseAnnotationVersion]}
	if lease.Spec.RenewTime != nil {
		st.renewTime = lease.Spec.RenewTime.Time
	}
	age := s.now.Sub(st.renewTime)
	s.lease = st
	if age > r.AgentHeartbeatTimeout {
		st.expired, st.expiredFor = true, age
		return r.AgentHeartbeatTimeout / 2
	}
	return r.AgentHeartbeatTimeout - age + 100*time.Millisecond
}

// reconcileDelete removes what Drover put into the target (deletionPolicy Delete), or
// leaves it (Orphan, or a paused cluster), and releases the finalizer. An unreachable
// target is given DeletionTimeout to come back; then deletion completes anyway with a
// Warning event that says what was left behind.
func (r *ManagedClusterReconciler) reconcileDelete(ctx context.Context, s *clusterScope) (ctrl.Result, error) {
	mc := s.cluster
	s.deleting = true
	log := ctrl.LoggerFrom(ctx)
	if !controllerutil.ContainsFinalizer(mc, ManagedClusterFinalizer) {
		r.forget(mc.Name)
		return ctrl.Result{}, nil
	}
	switch {
	case mc.Spec.Paused:
		r.event(mc, corev1.EventTypeNormal, "CleanupSkipped", "the cluster is paused: nothing in the target was touched")
		return r.release(ctx, s)
	case mc.DeletionPolicyOrDefault() == v1alpha1.DeletionPolicyOrphan:
		r.event(mc, corev1.EventTypeNormal, "CleanupSkipped", "deletionPolicy is Orphan: everything Drover installed stays in the target")
		return r.release(ctx, s)
	}
	// A sync of this cluster that started before the deletion could still apply
	// objects after cleanup. The syncer records ClusterDeleting once it has seen
	// the deletion, after any sync in flight; clean up only then (that record
	// enqueues this cluster). Bounded, so that deletion never hangs on it.
	if res, ok := r.Results.get(mc.Name); ok && res.Reason != ReasonClusterDeleting && s.now.Sub(mc.DeletionTimestamp.Time) < 10*time.Second {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	cl := r.cleanupConnection(ctx, s)
	if cl != nil && s.health.Connected {
		remaining, err := r.cleanup(ctx, cl)
		if err == nil && len(remaining) == 0 {
			log.Info("Removed everything Drover installed in the cluster")
			r.event(mc, corev1.EventTypeNormal, "CleanedUp", "removed the agent and every Drover-owned object from the target")
			return r.release(ctx, s)
		}
		if err != nil {
			log.Info("Cleanup of the target is incomplete; retrying", "error", shortErr(err))
		}
	}
	waited := s.now.Sub(mc.DeletionTimestamp.Time)
	if waited >= r.DeletionTimeout {
		why := "the cluster is unreachable"
		if s.problem != nil {
			why = s.problem.message
		} else if s.health.Probed && !s.health.Connected {
			why = s.health.Message
		}
		r.event(mc, corev1.EventTypeWarning, "CleanupAbandoned", fmt.Sprintf(
			"gave up cleaning the target after %s (%s); left behind: the agent (namespace %s, ClusterRole and ClusterRoleBinding %s) and every object labelled %s=%s",
			r.DeletionTimeout, why, AgentNamespace, AgentRoleName, remote.ManagedByLabel, remote.ManagedByValue))
		return r.release(ctx, s)
	}
	if s.problem != nil && s.problem.stalled && cl == nil {
		// No way to reach the target until someone fixes the Secret; wait out the
		// timeout without spinning.
		return ctrl.Result{RequeueAfter: r.DeletionTimeout - waited}, nil
	}
	return ctrl.Result{RequeueAfter: min(5*time.Second, r.DeletionTimeout-waited)}, nil
}

// cleanupConnection finds a way into the target for cleanup: the live connection if
// there is one, else the Secret, else the last kubeconfig the cluster connected with
// (its Secret is often deleted together with it, by kubectl delete -f or a GitOps
// prune).
func (r *ManagedClusterReconciler) cleanupConnection(ctx context.Context, s *clusterScope) *remote.Cluster {
	if cl := r.Remote.Get(s.cluster.Name); cl != nil && cl.Health().Connected {
		s.health, s.endpoint = cl.Health(), cl.Endpoint
		return cl
	}
	cl := r.reconcileConnection(ctx, s)
	if cl != nil || s.problem == nil || (s.problem.reason != v1alpha1.ReasonSecretNotFound && s.problem.reason != v1alpha1.ReasonSecretKeyNotFound) {
		return cl
	}
	data, source, ok := r.Remote.Remembered(s.cluster.Name)
	if !ok {
		return nil
	}
	cl, err := r.Remote.Connect(ctx, s.cluster.Name, data, source+", as last read (the Secret is gone)")
	if err != nil {
		return nil
	}
	s.problem = nil
	s.health, s.endpoint = cl.Health(), cl.Endpoint
	return cl
}

func (r *ManagedClusterReconciler) release(ctx context.Context, s *clusterScope) (ctrl.Result, error) {
	mc := s.cluster
	base := mc.DeepCopy()
	controllerutil.RemoveFinalizer(mc, ManagedClusterFinalizer)
	if err := r.Client.Patch(ctx, mc, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	s.released = true
	r.forget(mc.Name)
	return ctrl.Result{}, nil
}

// ownedKinds are the kinds Drover may create in a target, namespaced ones first, so
// that cleanup removes bindings before the roles they grant and namespaces last.
func ownedKinds() []client.ObjectList {
	return []client.ObjectList{
		&appsv1.DeploymentList{},
		&rbacv1.RoleBindingList{},
		&rbacv1.RoleList{},
		&corev1.ServiceAccountList{},
		&networkingv1.NetworkPolicyList{},
		&corev1.ResourceQuotaList{},
		&corev1.LimitRangeList{},
		&coordinationv1.LeaseList{},
		&rbacv1.ClusterRoleBindingList{},
		&rbacv1.ClusterRoleList{},
	}
}

// cleanup deletes every Drover-owned object in the target, and the agent's namespace.
// It returns what still exists.
func (r *ManagedClusterReconciler) cleanup(ctx context.Context, cl *remote.Cluster) ([]string, error) {
	rctx, cancel := context.WithTimeout(ctx, 3*r.RemoteTimeout)
	defer cancel()
	var remaining []string
	var errs []error
	for _, list := range ownedKinds() {
		if err := cl.Reader.List(rctx, list, client.MatchingLabelsSelector{Selector: remote.OwnedSelector()}); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			errs = append(errs, err)
			continue
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			obj := item.(client.Object)
			if err := cl.Reader.Delete(rctx, obj, client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
				remaining = append(remaining, describe(obj))
			}
		}
	}
	// Project namespaces go as their project said: released (Retain, the default:
	// they keep their workloads and data) or deleted.
	var nsList corev1.NamespaceList
	if err := cl.Reader.List(rctx, &nsList, client.MatchingLabelsSelector{Selector: remote.OwnedSelector()}); err != nil {
		errs = append(errs, err)
	}
	for i := range nsList.Items {
		n := &nsList.Items[i]
		if n.Name == AgentNamespace || !n.DeletionTimestamp.IsZero() {
			continue
		}
		if err := targetsync.Prune(rctx, cl.Reader, n); err != nil {
			errs = append(errs, err)
			remaining = append(remaining, "Namespace "+n.Name)
		}
	}
	var ns corev1.Namespace
	err := cl.Reader.Get(rctx, types.NamespacedName{Name: AgentNamespace}, &ns)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		errs = append(errs, err)
	case ns.Labels[remote.ManagedByLabel] == remote.ManagedByValue && ns.DeletionTimestamp.IsZero():
		if err := cl.Reader.Delete(rctx, &ns); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			remaining = append(remaining, "Namespace "+AgentNamespace)
		}
	}
	return remaining, errors.Join(errs...)
}

func describe(o client.Object) string {
	kind := fmt.Sprintf("%T", o)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	if o.GetNamespace() != "" {
		return kind + " " + o.GetNamespace() + "/" + o.GetName()
	}
	return kind + " " + o.GetName()
}

func (r *ManagedClusterReconciler) event(mc *v1alpha1.ManagedCluster, typ, reason, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(mc, nil, typ, reason, "Delete", "%s", msg)
	}
}

// shortErr keeps an error message to one readable line.
func shortErr(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
