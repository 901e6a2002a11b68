// Package controllers holds the hub's reconcilers, one file set per kind.
package controllers

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/drover-io/drover/registration"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/sharding"
	"github.com/drover-io/drover/targetsync"
	"github.com/drover-io/drover/version"
)

// The manager's RBAC on the hub. Secrets and Leases are read only in the operator
// namespace, so they get a namespaced Role (config/rbac/role.yaml).
//
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters;roletemplates;accessbindings;clusterprojects,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters/status;roletemplates/status;accessbindings/status;clusterprojects/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters/finalizers;roletemplates/finalizers;accessbindings/finalizers;clusterprojects/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=secrets,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=drover-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=configmaps,verbs=get;create

// Options configure the controllers.
type Options struct {
	// Namespace is the operator namespace (kubeconfig Secrets); set by the manager.
	Namespace string
	// AgentImage is the agent image installed in each target.
	AgentImage string
	// AgentHeartbeatTimeout is how stale the agent's Lease may get before AgentReady turns False.
	AgentHeartbeatTimeout time.Duration
	// DeletionTimeout bounds how long deleting a ManagedCluster waits for an unreachable target.
	DeletionTimeout time.Duration
	// RemoteTimeout bounds each call to a target cluster.
	RemoteTimeout time.Duration
	// Remote tunes the connections and their health probes.
	Remote remote.Options
	// SyncWorkers bounds the writes in flight to one target.
	SyncWorkers int
	// HubURL is the hub server's URL; empty when the manager runs without it
	// (spec.registration then reports HubServerDisabled).
	HubURL string
	// Registrations receives the manifest ids of clusters registered with
	// spec.registration, for the hub server; one is made if nil.
	Registrations *registration.Registry
	// Tunnels reaches clusters registered with spec.registration (the hub
	// server's tunnel endpoint); nil without the hub server.
	Tunnels Tunnels
	// Rejections receives the agents the tunnel server turned away.
	Rejections *TunnelRejections
	// NodeTokens maps node install ids to provisioned clusters, for the hub server;
	// without it (no hub server) clusters with spec.provisioning are not built.
	NodeTokens *registration.Registry
	// Artifacts lists the artifact source the nodes' binaries come from.
	Artifacts func() (map[string]string, error)
	// HubCA returns the hub server's CA (PEM).
	HubCA func() []byte
	// Shards are the shards this replica holds (--shard=K/N); nil when the hub is
	// not sharded, and every replica that runs the controllers handles every cluster.
	Shards *sharding.Shards
	// HubID overrides the hub's ID (tests that run two hubs on one API server);
	// by default it is read from, or created in, ConfigMap HubIdentityConfigMap.
	HubID string
}

// DefaultOptions are the defaults the flags start from.
func DefaultOptions() Options {
	return Options{
		AgentImage:            version.Image(),
		AgentHeartbeatTimeout: 20 * time.Second,
		DeletionTimeout:       5 * time.Minute,
		RemoteTimeout:         10 * time.Second,
		Remote:                remote.DefaultOptions(),
		SyncWorkers:           targetsync.DefaultWorkers,
	}
}

// BindFlags registers the controllers' flags, with the defaults of DefaultOptions.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	d := DefaultOptions()
	fs.StringVar(&o.AgentImage, "agent-image", d.AgentImage, "Image of the agent Deployment installed in each target cluster; defaults to this build's own image.")
	fs.DurationVar(&o.AgentHeartbeatTimeout, "agent-heartbeat-timeout", d.AgentHeartbeatTimeout, "How old the agent's Lease may get before AgentReady turns False.")
	fs.DurationVar(&o.DeletionTimeout, "cluster-deletion-timeout", d.DeletionTimeout, "How long deleting a ManagedCluster waits for an unreachable target before it completes anyway, leaving objects behind.")
	fs.DurationVar(&o.RemoteTimeout, "cluster-request-timeout", d.RemoteTimeout, "Timeout of each request to a target cluster.")
	fs.DurationVar(&o.Remote.ProbeInterval, "cluster-probe-interval", d.Remote.ProbeInterval, "Time between health probes of a connected target cluster.")
	fs.DurationVar(&o.Remote.ProbeTimeout, "cluster-probe-timeout", d.Remote.ProbeTimeout, "Timeout of one health probe, and of dialling a target cluster.")
	fs.IntVar(&o.Remote.FailureThreshold, "cluster-probe-failure-threshold", d.Remote.FailureThreshold, "Failed probes in a row before a connected cluster counts as disconnected.")
	fs.DurationVar(&o.Remote.MaxProbeInterval, "cluster-probe-max-interval", d.Remote.MaxProbeInterval, "Longest time between probes of a disconnected cluster (probes back off while it is down).")
	fs.Func("cluster-qps", fmt.Sprintf("Requests per second the manager may send to one target cluster (default %.0f).", d.Remote.QPS), func(v string) error {
		f, err := strconv.ParseFloat(v, 32)
		if err != nil || f <= 0 {
			return fmt.Errorf("want a positive number, got %q", v)
		}
		o.Remote.QPS = float32(f)
		return nil
	})
	fs.IntVar(&o.Remote.Burst, "cluster-burst", d.Remote.Burst, "Burst of requests the manager may send to one target cluster.")
	fs.IntVar(&o.SyncWorkers, "cluster-sync-workers", d.SyncWorkers, "Writes in flight at once to one target cluster during a sync.")
	fs.BoolVar(&o.Remote.Policy.AllowHTTP, "allow-insecure-http-clusters", false, "Accept kubeconfigs whose server is plain http:// (nothing authenticates the server; the ManagedCluster shows a Warning condition).")
	fs.BoolVar(&o.Remote.Policy.AllowLinkLocal, "allow-link-local-clusters", false, "Accept target servers on link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, 169.254.169.254, ...), which are refused by default.")
}

// HubIdentityConfigMap, in the operator namespace, holds the hub's ID under key "id":
// a random value created once, which every object Drover writes into a target carries
// (render.HubLabel), so that two hubs never touch each other's objects.
const HubIdentityConfigMap = "drover-hub-identity"

// EnsureHubID reads the hub's ID, creating it on first start.
func EnsureHubID(ctx context.Context, reader client.Reader, writer client.Client, namespace string) (string, error) {
	key := client.ObjectKey{Namespace: namespace, Name: HubIdentityConfigMap}
	for range 3 {
		var cm corev1.ConfigMap
		err := reader.Get(ctx, key, &cm)
		switch {
		case err == nil:
			id := cm.Data["id"]
			if errs := validation.IsValidLabelValue(id); id == "" || len(errs) > 0 {
				return "", fmt.Errorf("configmap %s/%s: key 'id' must be a non-empty label value (it goes on every object Drover writes into a target)", namespace, HubIdentityConfigMap)
			}
			return id, nil
		case !apierrors.IsNotFound(err):
			return "", fmt.Errorf("read configmap %s/%s: %w", namespace, HubIdentityConfigMap, err)
		}
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: HubIdentityConfigMap, Namespace: namespace,
				Labels: map[string]string{render.ManagedByLabel: render.ManagedByValue}},
			Data: map[string]string{"id": string(uuid.NewUUID())},
		}
		if err := writer.Create(ctx, &cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("create configmap %s/%s: %w", namespace, HubIdentityConfigMap, err)
		}
	}
	return "", fmt.Errorf("configmap %s/%s: could not read or create the hub's ID", namespace, HubIdentityConfigMap)
}

// CacheOptions restricts the hub cache: Secrets are only read from the operator
// namespace, so the manager never caches (or needs RBAC for) Secrets elsewhere.
func CacheOptions(namespace string) cache.Options {
	return cache.Options{
		// Nothing reads managedFields from the hub's cache; a large object (a big
		// RoleTemplate) would otherwise be held twice over.
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{namespace: {}}},
		},
	}
}

// SetupWithManager registers every controller with the manager. It returns the
// connection cache the controllers share.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, o Options) (*remote.Cache, error) {
	d := DefaultOptions()
	if o.AgentImage == "" {
		o.AgentImage = d.AgentImage
	}
	if o.AgentHeartbeatTimeout <= 0 {
		o.AgentHeartbeatTimeout = d.AgentHeartbeatTimeout
	}
	if o.DeletionTimeout <= 0 {
		o.DeletionTimeout = d.DeletionTimeout
	}
	if o.RemoteTimeout <= 0 {
		o.RemoteTimeout = d.RemoteTimeout
	}
	hubID := o.HubID
	if hubID == "" {
		id, err := EnsureHubID(ctx, mgr.GetAPIReader(), mgr.GetClient(), o.Namespace)
		if err != nil {
			return nil, err
		}
		hubID = id
	}
	ctrl.Log.WithName("setup").Info("Hub identity", "hub", hubID)
	rc := remote.New(o.Remote)
	results := newSyncResults()
	if o.Registrations == nil {
		o.Registrations = registration.NewRegistry(func(ctx context.Context, cluster string) (string, bool) {
			return RegistrationToken(ctx, mgr.GetClient(), o.Namespace, cluster)
		})
	}
	mcr := &ManagedClusterReconciler{
		Client:                mgr.GetClient(),
		Remote:                rc,
		Recorder:              mgr.GetEventRecorder("drover-managedcluster"),
		Namespace:             o.Namespace,
		AgentHeartbeatTimeout: o.AgentHeartbeatTimeout,
		RemoteTimeout:         o.RemoteTimeout,
		Results:               results,
		HubURL:                o.HubURL,
		Registrations:         o.Registrations,
		Tunnels:               o.Tunnels,
		Rejections:            o.Rejections,
		Shards:                o.Shards,
	}
	if err := mcr.SetupWithManager(ctx, mgr); err != nil {
		return nil, fmt.Errorf("set up the ManagedCluster controller: %w", err)
	}
	syncer := &ClusterSyncReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Remote: rc, Results: results, RemoteTimeout: o.RemoteTimeout,
		Recorder: mgr.GetEventRecorder("drover-clustersync"), Hub: hubID, AgentImage: o.AgentImage, Workers: o.SyncWorkers,
		DeletionTimeout: o.DeletionTimeout, Shards: o.Shards}
	if err := syncer.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the cluster syncer: %w", err)
	}
	abr := &AccessBindingReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Results: results, Recorder: mgr.GetEventRecorder("drover-accessbinding"), Shards: o.Shards}
	if err := abr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the AccessBinding controller: %w", err)
	}
	cpr := &ClusterProjectReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Results: results, Recorder: mgr.GetEventRecorder("drover-clusterproject"), Shards: o.Shards}
	if err := cpr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the ClusterProject controller: %w", err)
	}
	if o.NodeTokens != nil {
		pr := &ProvisioningReconciler{Client: mgr.GetClient(), Namespace: o.Namespace, HubURL: o.HubURL, HubCA: o.HubCA,
			Recorder: mgr.GetEventRecorder("drover-provisioning"), NodeTokens: o.NodeTokens, Artifacts: o.Artifacts, Shards: o.Shards}
		if err := pr.SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("set up the provisioning controller: %w", err)
		}
	}
	rtr := &RoleTemplateReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Results: results, Recorder: mgr.GetEventRecorder("drover-roletemplate"), Shards: o.Shards}
	if err := rtr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the RoleTemplate controller: %w", err)
	}
	return rc, nil
}

// requestsForAll lists every object of a cluster-scoped kind from the cache and returns
// a request for each: the map function of watches that affect all of them.
func requestsForAll(ctx context.Context, c client.Client, list client.ObjectList) []reconcile.Request {
	// Only names are read: no copies.
	if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list objects to enqueue", "list", fmt.Sprintf("%T", list))
		return nil
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(items))
	for _, item := range items {
		if o, ok := item.(client.Object); ok {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: o.GetName()}})
		}
	}
	return out
}
