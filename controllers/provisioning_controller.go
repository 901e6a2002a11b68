package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/nodeplan"
	"github.com/drover-io/drover/nodes"
	"github.com/drover-io/drover/planner"
	"github.com/drover-io/drover/registration"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/sharding"
)

// The provisioning controller writes plan, certificate, kubeconfig and token Secrets
// in the operator namespace, and releases ClusterNodes.
//
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=management.drover.io,resources=clusternodes,verbs=get;list;watch;update;patch;delete

// Names of the Secrets a provisioned cluster has in the operator namespace.
const (
	// ProvisioningFinalizer holds a provisioned ManagedCluster until its nodes are
	// torn down.
	ProvisioningFinalizer = "management.drover.io/deprovision"
	// ComponentProvisioning labels the Secrets this controller makes.
	ComponentProvisioning = "provisioning"
	// teardownTimeout bounds how long deletion waits for nodes that do not answer.
	teardownTimeout = 2 * time.Minute
)

// NodeTokenSecretName holds a provisioned cluster's node token (key token) unless
// spec.provisioning.nodeTokenSecretRef names another.
func NodeTokenSecretName(cluster string) string { return cluster + "-node-token" }

// PKISecretName holds a provisioned cluster's CAs and certificates.
func PKISecretName(cluster string) string { return cluster + "-pki" }

// ProvisionedKubeconfigSecretName holds the hub's kubeconfig for a provisioned
// cluster (key value, the Cluster API convention).
func ProvisionedKubeconfigSecretName(cluster string) string { return cluster + "-kubeconfig" }

// ProvisioningReconciler builds clusters with spec.provisioning: it keeps their node
// token, runs the planner over their ClusterNodes, publishes each node's plan, keeps
// the certificates the planner issues, and writes the kubeconfig the hub reaches the
// cluster with once its API servers are planned. The ManagedCluster controller then
// connects as for any kubeconfig cluster.
type ProvisioningReconciler struct {
	Client    client.Client
	Namespace string
	HubURL    string
	// HubCA returns the hub server's CA (PEM), for the registration command.
	HubCA    func() []byte
	Recorder events.EventRecorder
	// NodeTokens maps install ids to clusters, for the hub server.
	NodeTokens *registration.Registry
	// Artifacts lists the artifact source (nodes.Server.Artifacts).
	Artifacts func() (map[string]string, error)
	Now       func() time.Time
	// Shards are the shards this replica holds; nil when the hub is not sharded.
	Shards *sharding.Shards

	ssh     *sshInstaller
	mirrors *mirrors
}

// SetupWithManager registers the controller.
func (r *ProvisioningReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.ssh == nil {
		r.ssh = newSSHInstaller()
	}
	if r.mirrors == nil {
		r.mirrors = newMirrors()
	}
	byCluster := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if c := o.GetLabels()[render.ClusterLabel]; c != "" {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: c}}}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("provisioning").
		For(&v1alpha1.ManagedCluster{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			mc, ok := o.(*v1alpha1.ManagedCluster)
			return ok && mc.Spec.Provisioning != nil
		}))).
		Watches(&v1alpha1.ClusterNode{}, byCluster).
		WatchesRawSource(source.Channel(r.ssh.events, &handler.EnqueueRequestForObject{})).
		Watches(&corev1.Secret{}, byCluster, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Namespace && o.GetLabels()["app.kubernetes.io/component"] == ComponentProvisioning
		}))).
		WatchesRawSource(shardChanges(r.Shards, r.Client, func() client.ObjectList { return &v1alpha1.ManagedClusterList{} })).
		Complete(r)
}

// Reconcile plans one provisioned cluster.
func (r *ProvisioningReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var mc v1alpha1.ManagedCluster
	if err := r.Client.Get(ctx, req.NamespacedName, &mc); err != nil {
		if apierrors.IsNotFound(err) {
			r.NodeTokens.Remove(req.Name)
			r.ssh.forget(req.Name)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if mc.Spec.Provisioning == nil {
		return reconcile.Result{}, nil
	}
	if !owns(r.Shards, &mc) {
		// Another replica's shard plans this cluster (sharding). This replica only
		// answers its nodes, as any replica may be asked.
		if token, ok := ProvisioningNodeToken(ctx, r.Client, r.Namespace, mc.Name); ok && mc.DeletionTimestamp.IsZero() {
			r.NodeTokens.Set(mc.Name, nodes.ID(token))
		} else {
			r.NodeTokens.Remove(mc.Name)
		}
		return reconcile.Result{}, nil
	}
	if !mc.DeletionTimestamp.IsZero() {
		return r.teardown(ctx, &mc)
	}
	if controllerutil.AddFinalizer(&mc, ProvisioningFinalizer) {
		if err := r.Client.Update(ctx, &mc); err != nil {
			return reconcile.Result{}, err
		}
	}
	base := mc.DeepCopy()
	status := mc.Status.Provisioning.DeepCopy()
	if status == nil {
		status = &v1alpha1.ProvisioningStatus{}
	}
	token, problem, err := r.nodeToken(ctx, &mc)
	if err != nil {
		return reconcile.Result{}, err
	}
	if problem != "" {
		r.NodeTokens.Remove(mc.Name)
		status.RegistrationCommand, status.Waiting = "", problem
		return reconcile.Result{}, r.patchStatus(ctx, &mc, status, nil)
	}
	r.NodeTokens.Set(mc.Name, nodes.ID(token))
	var ca []byte
	if r.HubCA != nil {
		ca = r.HubCA()
	}
	status.RegistrationCommand = nodes.Command(r.HubURL, token, ca)

	// Hosts reached over SSH get the same command, unless registered already.
	var nodeList v1alpha1.ClusterNodeList
	if err := r.Client.List(ctx, &nodeList, client.MatchingLabels{render.ClusterLabel: mc.Name}); err != nil {
		return reconcile.Result{}, err
	}
	registered := map[string]bool{}
	for _, n := range nodeList.Items {
		registered[n.Spec.Address] = true
	}
	sshProblems := r.reconcileSSH(ctx, &mc, status, registered)
	if err := r.ensureNodeFinalizers(ctx, nodeList.Items); err != nil {
		return reconcile.Result{}, err
	}

	// Day-2 operations: one at a time, each phase kept in status before the plans
	// that carry it are published, so that a manager that restarts goes on.
	d := &day2{mc: &mc, base: base, status: status, nodes: nodeList.Items, now: r.Now(), results: map[string]metav1.Condition{}, drained: map[string]bool{}}
	if d.s3, d.s3Problem, err = r.snapshotS3(ctx, &mc); err != nil {
		return reconcile.Result{}, err
	}
	d.initActions()
	var out *planner.Output
	for pass := 0; pass < 4; pass++ {
		out, err = r.plan(ctx, &mc, status, nodeList.Items, func(in *planner.Input) {
			if pass == 0 {
				d.start(in.Artifacts)
			}
			d.input(in)
		})
		if err != nil {
			return reconcile.Result{}, err
		}
		if len(out.Problems) > 0 || len(out.Checksums) == 0 {
			break
		}
		if ro := out.Rollout; ro != nil && len(ro.Drain) > 0 {
			// Workers are drained before they move; those drained move now.
			drained, err := r.drainFor(ctx, d, ro.Drain)
			if err != nil {
				d.drainNote = err.Error()
			} else if len(drained) > 0 {
				for name := range drained {
					d.drained[name] = true
				}
				continue
			}
		}
		changed, err := d.advance(ctx, r, out)
		if err != nil {
			return reconcile.Result{}, err
		}
		if !changed {
			break
		}
	}
	if spec := mc.Spec.Provisioning.UpgradeStrategy; spec != nil && spec.Drain && len(out.Checksums) > 0 && planner.Tier(status.ReachedTier) == planner.TierReady {
		if err := r.uncordonFor(ctx, d, out.Rollout); err != nil {
			r.Recorder.Eventf(&mc, nil, corev1.EventTypeWarning, "UncordonFailed", "Drain", "%v", err)
		}
	}
	// The cluster is not Ready while a host it names in sshHosts has not joined.
	for i, h := range mc.Spec.Provisioning.SSHHosts {
		if !registered[h.Address] && out.Tier == planner.TierReady {
			out.Tier, out.Waiting = planner.TierWorkers, fmt.Sprintf("host %s (spec.provisioning.sshHosts[%d]) to register", h.Address, i)
		}
	}
	if len(sshProblems) > 0 {
		out.Problems = append(out.Problems, sshProblems...)
		if len(out.Checksums) > 0 {
			// The others go on: only what SSH could not do is reported.
			out.Problems = nil
			if out.Waiting != "" {
				out.Waiting += "; "
			}
			out.Waiting += strings.Join(sshProblems, "; ")
		}
	}
	if len(out.Problems) > 0 {
		msg := strings.Join(out.Problems, "; ")
		if status.Waiting != msg {
			r.Recorder.Eventf(&mc, nil, corev1.EventTypeWarning, "ProvisioningBlocked", "Plan", "%s", msg)
		}
		status.Waiting = msg
		d.conditions()
		return reconcile.Result{}, r.patchStatus(ctx, &mc, status, d)
	}
	// Certificates first: a plan that uses one must never be published before the
	// certificate is kept, or a restart would issue another. Then the decision
	// (node versions, members, the operation's phase), then the plans.
	if out.CertsChanged {
		if err := r.writeSecret(ctx, &mc, PKISecretName(mc.Name), pkiData(out.Certs)); err != nil {
			return reconcile.Result{}, err
		}
	}
	if string(out.Tier) != status.Tier && len(out.Checksums) > 0 {
		r.Recorder.Eventf(&mc, nil, corev1.EventTypeNormal, "Provisioning", "Plan", "Tier %s", out.Tier)
	}
	d.keep(out)
	status.Tier, status.Waiting = string(out.Tier), out.Waiting
	if out.Members != nil {
		status.EtcdMembers = out.Members
	}
	d.conditions()
	if err := r.patchStatus(ctx, &mc, status, d); err != nil {
		return reconcile.Result{}, err
	}
	for node, sum := range out.Checksums {
		if err := r.writePlan(ctx, &mc, node, out.Encoded[node], sum); err != nil {
			return reconcile.Result{}, err
		}
	}
	if out.AdminKubeconfig != nil {
		if err := r.writeSecret(ctx, &mc, ProvisionedKubeconfigSecretName(mc.Name), map[string][]byte{v1alpha1.DefaultKubeconfigKey: out.AdminKubeconfig}); err != nil {
			return reconcile.Result{}, err
		}
	}
	if op := status.Operation; op != nil && op.Type == v1alpha1.OperationNodeRemoval && (op.Phase == phaseTeardown || op.Phase == phaseDrain) {
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil // the give-up time passes without an event
	}
	if out.Rollout != nil && len(out.Rollout.Drain) > 0 {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil // pods leave without an event on the hub
	}
	if !d.nextSnapshot.IsZero() {
		return reconcile.Result{RequeueAfter: max(d.nextSnapshot.Sub(r.Now()), time.Second)}, nil
	}
	return reconcile.Result{}, nil
}

// ensureNodeFinalizers holds every live ClusterNode until it has left its cluster.
func (r *ProvisioningReconciler) ensureNodeFinalizers(ctx context.Context, nodes []v1alpha1.ClusterNode) error {
	for i := range nodes {
		n := &nodes[i]
		if !n.DeletionTimestamp.IsZero() || controllerutil.ContainsFinalizer(n, NodeRemovalFinalizer) {
			continue
		}
		before := n.DeepCopy()
		controllerutil.AddFinalizer(n, NodeRemovalFinalizer)
		if err := r.Client.Patch(ctx, n, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// plan runs the planner over the cluster's ClusterNodes.
func (r *ProvisioningReconciler) plan(ctx context.Context, mc *v1alpha1.ManagedCluster, status *v1alpha1.ProvisioningStatus, clusterNodes []v1alpha1.ClusterNode, prepare func(*planner.Input)) (*planner.Output, error) {
	in := planner.Input{
		Cluster: planner.Cluster{Name: mc.Name, KubernetesVersion: mc.Spec.Provisioning.KubernetesVersion,
			ControlPlaneEndpoint: mc.Spec.Provisioning.ControlPlaneEndpoint},
		Members: status.EtcdMembers,
		Now:     r.Now(),
	}
	for i := range clusterNodes {
		n := &clusterNodes[i]
		if n.Spec.Cluster != mc.Name || (!n.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(n, NodeRemovalFinalizer)) {
			continue
		}
		pn := planner.Node{Name: n.Name, Hostname: n.Spec.Hostname, Address: n.Spec.Address, AppliedChecksum: n.Status.AppliedChecksum,
			KubeletCgroupRoot: n.Spec.KubeletCgroupRoot, Healthy: map[string]bool{}}
		for _, role := range n.Spec.Roles {
			pn.Roles = append(pn.Roles, planner.Role(role))
		}
		for _, p := range n.Status.Probes {
			pn.Healthy[p.Name] = p.Healthy
		}
		in.Nodes = append(in.Nodes, pn)
	}
	if len(in.Nodes) == 0 {
		return &planner.Output{Tier: planner.TierEtcdInit, Waiting: "hosts to register: run status.provisioning.registrationCommand on each, with its roles"}, nil
	}
	var sec corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: PKISecretName(mc.Name)}, &sec)
	switch {
	case err == nil:
		in.Certs = certsFrom(sec.Data)
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	if url := mc.Spec.Provisioning.ArtifactsURL; url != "" {
		arts, err := r.mirrors.checksums(ctx, url)
		if err != nil {
			return &planner.Output{Problems: []string{err.Error()}}, nil
		}
		in.Artifacts, in.ArtifactsURL = arts, url
	} else if r.Artifacts != nil {
		arts, err := r.Artifacts()
		if err != nil {
			return &planner.Output{Problems: []string{err.Error()}}, nil
		}
		if arts == nil {
			return &planner.Output{Problems: []string{"the manager runs without an artifact source for the nodes' binaries: start it with --artifacts-dir"}}, nil
		}
		in.Artifacts = arts
	}
	prepare(&in)
	return planner.Plan(in)
}

// nodeToken returns the cluster's node token, creating Secret <cluster>-node-token
// when no other is named; or a problem a person must fix.
func (r *ProvisioningReconciler) nodeToken(ctx context.Context, mc *v1alpha1.ManagedCluster) (string, string, error) {
	ref, own := nodeTokenRef(mc)
	var sec corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: ref.Name}, &sec)
	switch {
	case err == nil:
		tok := string(sec.Data[ref.Key])
		if len(tok) < registration.MinTokenLength {
			return "", fmt.Sprintf("secret %s/%s has no key '%s' with a token of at least %d characters", r.Namespace, ref.Name, ref.Key, registration.MinTokenLength), nil
		}
		return tok, "", nil
	case !apierrors.IsNotFound(err):
		return "", "", err
	case !own:
		return "", fmt.Sprintf("secret %s/%s (spec.provisioning.nodeTokenSecretRef) does not exist", r.Namespace, ref.Name), nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: ref.Name, Labels: r.labels(mc)},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{ref.Key: []byte(tok)}}
	if err := r.Client.Create(ctx, &sec); err != nil {
		return "", "", err
	}
	return tok, "", nil
}

// nodeTokenRef is where a provisioned cluster's node token is, and whether Drover
// owns (creates) that Secret.
func nodeTokenRef(mc *v1alpha1.ManagedCluster) (v1alpha1.SecretKeyReference, bool) {
	if r := mc.Spec.Provisioning.NodeTokenSecretRef; r != nil {
		ref := *r
		if ref.Key == "" {
			ref.Key = v1alpha1.DefaultTokenKey
		}
		return ref, false
	}
	return v1alpha1.SecretKeyReference{Name: NodeTokenSecretName(mc.Name), Key: v1alpha1.DefaultTokenKey}, true
}

// ProvisioningNodeToken reads the current node token of a provisioned cluster, for
// the hub server (which checks it again on every request, so that a rotated token is
// refused at once).
func ProvisioningNodeToken(ctx context.Context, c client.Reader, namespace, cluster string) (string, bool) {
	mc := &v1alpha1.ManagedCluster{}
	if err := c.Get(ctx, client.ObjectKey{Name: cluster}, mc); err != nil || mc.Spec.Provisioning == nil || !mc.DeletionTimestamp.IsZero() {
		return "", false
	}
	ref, _ := nodeTokenRef(mc)
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &sec); err != nil {
		return "", false
	}
	tok := string(sec.Data[ref.Key])
	return tok, len(tok) >= registration.MinTokenLength
}

func (r *ProvisioningReconciler) labels(mc *v1alpha1.ManagedCluster) map[string]string {
	return map[string]string{render.ManagedByLabel: render.ManagedByValue, "app.kubernetes.io/component": ComponentProvisioning, render.ClusterLabel: mc.Name}
}

// writeSecret creates or updates a Secret of the cluster, writing nothing when it
// already holds data.
func (r *ProvisioningReconciler) writeSecret(ctx context.Context, mc *v1alpha1.ManagedCluster, name string, data map[string][]byte) error {
	return r.writeSecretLabelled(ctx, name, r.labels(mc), data)
}

func (r *ProvisioningReconciler) writeSecretLabelled(ctx context.Context, name string, labels map[string]string, data map[string][]byte) error {
	var sec corev1.Secret
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: name}, &sec)
	if apierrors.IsNotFound(err) {
		sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: name, Labels: labels}, Type: corev1.SecretTypeOpaque, Data: data}
		return r.Client.Create(ctx, &sec)
	}
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(sec.Data, data) {
		return nil
	}
	sec.Data = data
	return r.Client.Update(ctx, &sec)
}

// writePlan publishes a node's plan.
func (r *ProvisioningReconciler) writePlan(ctx context.Context, mc *v1alpha1.ManagedCluster, node string, plan []byte, sum string) error {
	labels := r.labels(mc)
	labels["app.kubernetes.io/component"] = nodes.ComponentPlan
	labels[nodes.NodeLabel] = node
	return r.writeSecretLabelled(ctx, nodes.PlanSecretName(node), labels, map[string][]byte{nodes.PlanKey: plan, nodes.ChecksumKey: []byte(sum)})
}

// patchStatus keeps status.provisioning and the operation conditions, with an
// optimistic lock: a decision made from a stale copy is never kept (it is made
// again from the current one).
func (r *ProvisioningReconciler) patchStatus(ctx context.Context, mc *v1alpha1.ManagedCluster, status *v1alpha1.ProvisioningStatus, d *day2) error {
	before := mc.DeepCopy()
	if d != nil {
		before = d.base
	}
	mc.Status.Provisioning = status
	if equality.Semantic.DeepEqual(before.Status, mc.Status) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, mc, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	for _, e := range eventsOf(d) {
		r.Recorder.Eventf(mc, nil, e.typ, e.reason, "Operate", "%s", e.message)
	}
	return nil
}

// pkiData stores the certificates as one JSON document per certificate.
func pkiData(certs map[string]planner.KeyPair) map[string][]byte {
	out := make(map[string][]byte, len(certs))
	for name, kp := range certs {
		b, _ := json.Marshal(kp)
		out[name] = b
	}
	return out
}

func certsFrom(data map[string][]byte) map[string]planner.KeyPair {
	out := make(map[string]planner.KeyPair, len(data))
	for name, b := range data {
		var kp planner.KeyPair
		if json.Unmarshal(b, &kp) == nil {
			out[name] = kp
		}
	}
	return out
}

// teardown deprovisions a cluster being deleted, once the ManagedCluster controller
// is done with it (its own finalizer gone): every node gets an empty plan (the node
// agent stops what it runs and removes the files it wrote), then its ClusterNode is
// deleted, which revokes its credential and ends its node agent. A node that does
// not apply the empty plan within teardownTimeout is given up on.
func (r *ProvisioningReconciler) teardown(ctx context.Context, mc *v1alpha1.ManagedCluster) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(mc, ProvisioningFinalizer) {
		return reconcile.Result{}, nil
	}
	if slices.ContainsFunc(mc.Finalizers, func(f string) bool { return f != ProvisioningFinalizer }) {
		return reconcile.Result{}, nil // the cluster is still being cleaned up through its API
	}
	r.NodeTokens.Remove(mc.Name)
	r.ssh.forget(mc.Name)
	var list v1alpha1.ClusterNodeList
	if err := r.Client.List(ctx, &list, client.MatchingLabels{render.ClusterLabel: mc.Name}); err != nil {
		return reconcile.Result{}, err
	}
	empty, sum, err := nodeplan.Encode(&nodeplan.Plan{})
	if err != nil {
		return reconcile.Result{}, err
	}
	waited := r.Now().Sub(mc.DeletionTimestamp.Time)
	pending := 0
	for i := range list.Items {
		n := &list.Items[i]
		if err := r.writePlan(ctx, mc, n.Name, empty, sum); err != nil {
			return reconcile.Result{}, err
		}
		if n.Status.AppliedChecksum != sum && waited < teardownTimeout {
			pending++
		}
	}
	if pending > 0 {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	for i := range list.Items {
		n := &list.Items[i]
		if n.Status.AppliedChecksum != sum {
			r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "NodeGivenUp", "Deprovision",
				"node %s did not stop its components within %s; it is released as it is", n.Name, teardownTimeout)
		}
		if controllerutil.ContainsFinalizer(n, NodeRemovalFinalizer) {
			before := n.DeepCopy()
			controllerutil.RemoveFinalizer(n, NodeRemovalFinalizer)
			if err := r.Client.Patch(ctx, n, client.MergeFrom(before)); client.IgnoreNotFound(err) != nil {
				return reconcile.Result{}, err
			}
		}
		if err := r.Client.Delete(ctx, n); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, err
		}
	}
	var secrets corev1.SecretList
	if err := r.Client.List(ctx, &secrets, client.InNamespace(r.Namespace), client.MatchingLabels{render.ClusterLabel: mc.Name}); err != nil {
		return reconcile.Result{}, err
	}
	for i := range secrets.Items {
		s := &secrets.Items[i]
		if c := s.Labels["app.kubernetes.io/component"]; c == ComponentProvisioning || c == nodes.ComponentPlan {
			if err := r.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
				return reconcile.Result{}, err
			}
		}
	}
	before := mc.DeepCopy()
	controllerutil.RemoveFinalizer(mc, ProvisioningFinalizer)
	return reconcile.Result{}, client.IgnoreNotFound(r.Client.Patch(ctx, mc, client.MergeFrom(before)))
}
