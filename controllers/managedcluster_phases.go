package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/clusterfacts"
	"github.com/drover-io/drover/registration"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/tunnel"
)

// clusterScope carries what one reconcile learnt; setManagedClusterStatus turns it
// into status.
type clusterScope struct {
	cluster *v1alpha1.ManagedCluster
	now     time.Time

	paused   bool
	deleting bool
	// settling: the connection has nothing to report yet; status is left as it is.
	settling bool
	// registration is what status.registration says (spec.registration only).
	registration *v1alpha1.RegistrationStatus
	// clusterID is the target's identity, once read.
	clusterID string
	// warnings are what is accepted but unsafe about the connection.
	warnings []remote.Warning

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
	// agentConflict: the agent's objects belong to another hub or cluster.
	agentConflict bool
	lease         *leaseState
}

type problem struct {
	reason, message string
	// stalled problems need a person to change something.
	stalled bool
}

type leaseState struct {
	found     bool
	renewTime time.Time
	version   string
	expired   bool
}

// reconcileConnection reads the kubeconfig Secret and gets the connection for it.
func (r *ManagedClusterReconciler) reconcileConnection(ctx context.Context, s *clusterScope) *remote.Cluster {
	mc := s.cluster
	var cl *remote.Cluster
	switch {
	case mc.Spec.Registration != nil:
		cl = r.tunnelConnection(ctx, s)
	case mc.Spec.Provisioning != nil:
		cl = r.provisionedConnection(ctx, s)
	case mc.Spec.Kubeconfig == nil:
		s.problem = &problem{v1alpha1.ReasonNoConnectionMode,
			"set spec.kubeconfig.secretRef to a Secret in " + r.Namespace + " holding the cluster's kubeconfig", true}
	default:
		cl = r.kubeconfigConnection(ctx, s, mc.Spec.Kubeconfig.SecretRef)
	}
	if cl == nil {
		return nil
	}
	if s.health.Connected && cl.Cache() != nil {
		if err := r.Remote.Watch(mc.Name, "nodes", r.controller, nodeSource(mc.Name)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to watch Nodes")
		}
		if err := r.Remote.Watch(mc.Name, "agent-lease", r.controller, agentLeaseSource(mc.Name, r.AgentHeartbeatTimeout)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to watch the agent's Lease")
		}
	}
	return cl
}

// tunnelConnection serves a cluster registered with spec.registration: the bootstrap
// token and manifest, then the connection through the agent's tunnel.
func (r *ManagedClusterReconciler) tunnelConnection(ctx context.Context, s *clusterScope) *remote.Cluster {
	mc := s.cluster
	if !r.reconcileRegistration(ctx, s) {
		return nil
	}
	if r.Tunnels == nil {
		s.problem = &problem{v1alpha1.ReasonHubServerDisabled,
			"spec.registration needs the hub server's tunnel endpoint, which this manager runs without", true}
		return nil
	}
	cl, err := r.Remote.ConnectTunnel(ctx, mc.Name, tunnel.APIServerHost, r.Tunnels.Dialer(mc.Name), "the agent tunnel of "+mc.Name)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Cannot set up a client through the tunnel")
		s.problem = &problem{v1alpha1.ReasonProbeFailed, "cannot set up a client through the agent's tunnel", false}
		return nil
	}
	s.health = cl.Health()
	s.endpoint = "the agent's tunnel"
	if !s.health.Connected {
		rej := r.Rejections.last(mc.Name)
		if s.health.Reason == v1alpha1.ReasonTunnelDisconnected && mc.Status.ClusterID == "" {
			s.health.Reason = v1alpha1.ReasonAwaitingAgent
			s.health.Message = "waiting for the agent to connect to the hub: run status.registration.command with a kubeconfig for the cluster"
		}
		if rej != "" {
			s.health.Message += "; the last agent that tried was turned away: " + rej
		}
	}
	return cl
}

// provisionedConnection serves a cluster Drover builds: once the planner has planned
// its API servers, the provisioning controller keeps the hub's kubeconfig for it in
// Secret <name>-kubeconfig, and the cluster is reached like any kubeconfig cluster.
func (r *ManagedClusterReconciler) provisionedConnection(ctx context.Context, s *clusterScope) *remote.Cluster {
	mc := s.cluster
	if r.HubURL == "" {
		s.problem = &problem{v1alpha1.ReasonHubServerDisabled,
			"spec.provisioning needs the hub server (nodes register there), which this manager runs without", true}
		return nil
	}
	name := ProvisionedKubeconfigSecretName(mc.Name)
	var secret corev1.Secret
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: name}, &secret); apierrors.IsNotFound(err) {
		// Static: this controller is not woken by status.provisioning, so a copy of
		// its "waiting" here would go stale.
		s.problem = &problem{v1alpha1.ReasonProvisioning,
			"Drover is building the cluster and its API server is not planned yet; status.provisioning.tier and .waiting say how far it is, kubectl get clusternodes shows each node", false}
		r.Remote.Disconnect(mc.Name)
		return nil
	}
	return r.kubeconfigConnection(ctx, s, v1alpha1.SecretKeyReference{Name: name})
}

// kubeconfigConnection reads the kubeconfig Secret and gets the connection for it.
func (r *ManagedClusterReconciler) kubeconfigConnection(ctx context.Context, s *clusterScope, ref v1alpha1.SecretKeyReference) *remote.Cluster {
	mc := s.cluster
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
	s.warnings = cl.Warnings
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
// or changes version enqueues the cluster, and so does the first renewal after the
// Lease went stale (the agent is back); other renewals do not (the expiry is checked
// by a timed requeue), so a healthy fleet costs nothing.
func agentLeaseSource(cluster string, timeout time.Duration) func(cache.Cache) source.Source {
	return func(c cache.Cache) source.Source {
		enqueue := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: cluster}}}
		})
		return source.Kind(c, client.Object(&coordinationv1.Lease{}), enqueue, predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return e.Object.GetName() == AgentName },
			DeleteFunc: func(e event.DeleteEvent) bool { return e.Object.GetName() == AgentName },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectNew.GetName() == AgentName && leaseRevived(e.ObjectOld, e.ObjectNew, timeout, time.Now())
			},
			GenericFunc: func(event.GenericEvent) bool { return false },
		})
	}
}

// leaseRevived tells whether a Lease update matters to AgentReady: the version
// changed, or the previous renewal was already older than the heartbeat timeout.
func leaseRevived(old, cur client.Object, timeout time.Duration, now time.Time) bool {
	if old.GetAnnotations()[agent.LeaseAnnotationVersion] != cur.GetAnnotations()[agent.LeaseAnnotationVersion] {
		return true
	}
	ol, ok1 := old.(*coordinationv1.Lease)
	_, ok2 := cur.(*coordinationv1.Lease)
	if !ok1 || !ok2 {
		return false
	}
	return ol.Spec.RenewTime == nil || now.Sub(ol.Spec.RenewTime.Time) > timeout
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
		_, why := remote.Describe(err)
		s.factsErr = "cannot list nodes in the cluster: " + why
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

// reconcileAgentLease turns the agent's Lease into AgentReady, and says when to look
// again: just after the Lease would expire. That re-check reads the cache only. Once
// it has expired nothing is re-checked: the Lease watch brings the cluster back when
// the agent renews it, so a dead agent costs no writes at all.
func (r *ManagedClusterReconciler) reconcileAgentLease(ctx context.Context, s *clusterScope, cl *remote.Cluster) time.Duration {
	rctx, cancel := r.remoteCtx(ctx)
	defer cancel()
	cc := cl.Client()
	if cc == nil {
		s.lease = &leaseState{}
		return 0
	}
	var lease coordinationv1.Lease
	err := cc.Get(rctx, types.NamespacedName{Namespace: AgentNamespace, Name: AgentName}, &lease)
	if err != nil {
		s.lease = &leaseState{}
		if !apierrors.IsNotFound(err) {
			reason, _ := remote.Describe(err)
			ctrl.LoggerFrom(ctx).V(1).Info("Cannot read agent lease", "reason", reason)
			return r.AgentHeartbeatTimeout / 2
		}
		return 0
	}
	st := &leaseState{found: true, version: lease.Annotations[agent.LeaseAnnotationVersion]}
	if lease.Spec.RenewTime != nil {
		st.renewTime = lease.Spec.RenewTime.Time
	}
	age := s.now.Sub(st.renewTime)
	s.lease = st
	if age > r.AgentHeartbeatTimeout {
		st.expired = true
		return 0
	}
	return r.AgentHeartbeatTimeout - age + 100*time.Millisecond
}

// tokenRef is where a registered cluster's bootstrap token lives.
func tokenRef(mc *v1alpha1.ManagedCluster) (ref v1alpha1.SecretKeyReference, hubCreated bool) {
	if mc.Spec.Registration != nil && mc.Spec.Registration.TokenSecretRef != nil {
		ref = *mc.Spec.Registration.TokenSecretRef
	} else {
		ref = v1alpha1.SecretKeyReference{Name: mc.Name + "-registration"}
		hubCreated = true
	}
	if ref.Key == "" {
		ref.Key = v1alpha1.DefaultTokenKey
	}
	return ref, hubCreated
}

// RegistrationToken reads the current bootstrap token of a cluster registered with
// spec.registration, from the hub's cache.
func RegistrationToken(ctx context.Context, c client.Reader, namespace, cluster string) (string, bool) {
	mc := &v1alpha1.ManagedCluster{}
	if err := c.Get(ctx, client.ObjectKey{Name: cluster}, mc); err != nil || mc.Spec.Registration == nil || !mc.DeletionTimestamp.IsZero() {
		return "", false
	}
	token, err := bootstrapToken(ctx, c, namespace, mc)
	return token, err == nil && token != ""
}

// bootstrapToken reads the bootstrap token of a cluster registered with
// spec.registration: "" when its Secret or key is missing or holds too short a token.
func bootstrapToken(ctx context.Context, c client.Reader, namespace string, mc *v1alpha1.ManagedCluster) (string, error) {
	ref, _ := tokenRef(mc)
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &secret); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	token := string(secret.Data[ref.Key])
	if len(token) < registration.MinTokenLength {
		return "", nil
	}
	return token, nil
}

// reconcileRegistration makes sure a cluster registered with spec.registration has a
// bootstrap token (creating Secret <cluster>-registration unless tokenSecretRef names
// one), and publishes the command that installs its agent.
func (r *ManagedClusterReconciler) reconcileRegistration(ctx context.Context, s *clusterScope) bool {
	mc := s.cluster
	if r.HubURL == "" {
		s.problem = &problem{v1alpha1.ReasonHubServerDisabled,
			"spec.registration needs the hub server, which this manager runs without; start it with --hub-bind-address and --hub-url, or use spec.kubeconfig", true}
		return false
	}
	ref, hubCreated := tokenRef(mc)
	where := fmt.Sprintf("secret %s/%s key '%s'", r.Namespace, ref.Name, ref.Key)
	var secret corev1.Secret
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: ref.Name}, &secret)
	switch {
	case apierrors.IsNotFound(err) && hubCreated:
		token, terr := newToken()
		if terr != nil {
			s.problem = &problem{v1alpha1.ReasonProbeFailed, "cannot generate a bootstrap token", false}
			return false
		}
		secret = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: r.Namespace,
				Labels: map[string]string{render.ManagedByLabel: render.ManagedByValue, render.ClusterLabel: mc.Name},
				// It goes with its ManagedCluster.
				OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ManagedCluster",
					Name: mc.Name, UID: mc.UID}}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{ref.Key: []byte(token)},
		}
		if err := r.Client.Create(ctx, &secret); err != nil && !apierrors.IsAlreadyExists(err) {
			s.problem = &problem{v1alpha1.ReasonSecretNotFound, fmt.Sprintf("cannot create %s: %s", where, describeHubError(err)), false}
			return false
		}
	case apierrors.IsNotFound(err):
		s.problem = &problem{v1alpha1.ReasonSecretNotFound, fmt.Sprintf("%s does not exist; create it with a bootstrap token of at least %d characters, or drop spec.registration.tokenSecretRef to let the hub create one",
			where, registration.MinTokenLength), true}
		r.Registrations.Remove(mc.Name)
		return false
	case err != nil:
		s.problem = &problem{v1alpha1.ReasonSecretNotFound, fmt.Sprintf("cannot read %s: %s", where, describeHubError(err)), false}
		return false
	}
	token := string(secret.Data[ref.Key])
	if len(token) < registration.MinTokenLength {
		s.problem = &problem{v1alpha1.ReasonSecretKeyNotFound, fmt.Sprintf("%s must hold a bootstrap token of at least %d characters", where, registration.MinTokenLength), true}
		r.Registrations.Remove(mc.Name)
		return false
	}
	r.Registrations.Set(mc.Name, registration.ID(token))
	s.registration = &v1alpha1.RegistrationStatus{ManifestURL: registration.ManifestURL(r.HubURL, token), Command: registration.Command(r.HubURL, token)}
	return true
}

// newToken returns a random bootstrap token.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// describeHubError keeps an error from the hub's API server to its status reason.
func describeHubError(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return string(st.Status().Reason)
	}
	return "request failed"
}
