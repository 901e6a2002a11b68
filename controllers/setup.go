// Package controllers holds the hub's reconcilers, one file set per kind.
package controllers

import (
	"context"
	"flag"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/drover-io/drover/remote"
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
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=drover-system,resources=leases,verbs=get;list;watch;create;update;patch;delete

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
}

// DefaultOptions are the defaults the flags start from.
func DefaultOptions() Options {
	return Options{
		AgentImage:            version.Image(),
		AgentHeartbeatTimeout: 20 * time.Second,
		DeletionTimeout:       5 * time.Minute,
		RemoteTimeout:         10 * time.Second,
		Remote:                remote.DefaultOptions(),
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
}

// CacheOptions restricts the hub cache: Secrets are only read from the operator
// namespace, so the manager never caches (or needs RBAC for) Secrets elsewhere.
func CacheOptions(namespace string) cache.Options {
	return cache.Options{
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
	rc := remote.New(o.Remote)
	results := newSyncResults()
	mcr := &ManagedClusterReconciler{
		Client:                mgr.GetClient(),
		Remote:                rc,
		Recorder:              mgr.GetEventRecorder("drover-managedcluster"),
		Namespace:             o.Namespace,
		AgentImage:            o.AgentImage,
		AgentHeartbeatTimeout: o.AgentHeartbeatTimeout,
		DeletionTimeout:       o.DeletionTimeout,
		RemoteTimeout:         o.RemoteTimeout,
		Results:               results,
	}
	if err := mcr.SetupWithManager(ctx, mgr); err != nil {
		return nil, fmt.Errorf("set up the ManagedCluster controller: %w", err)
	}
	syncer := &ClusterSyncReconciler{Client: mgr.GetClient(), Remote: rc, Results: results, RemoteTimeout: o.RemoteTimeout}
	if err := syncer.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the cluster syncer: %w", err)
	}
	abr := &AccessBindingReconciler{Client: mgr.GetClient(), Results: results, Recorder: mgr.GetEventRecorder("drover-accessbinding")}
	if err := abr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the AccessBinding controller: %w", err)
	}
	cpr := &ClusterProjectReconciler{Client: mgr.GetClient(), Results: results, Recorder: mgr.GetEventRecorder("drover-clusterproject")}
	if err := cpr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the ClusterProject controller: %w", err)
	}
	rtr := &RoleTemplateReconciler{Client: mgr.GetClient(), Results: results, Recorder: mgr.GetEventRecorder("drover-roletemplate")}
	if err := rtr.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up the RoleTemplate controller: %w", err)
	}
	return rc, nil
}

// requestsForAll lists every object of a cluster-scoped kind from the cache and returns
// a request for each: the map function of watches that affect all of them.
func requestsForAll(ctx context.Context, c client.Client, list client.ObjectList) []reconcile.Request {
	if err := c.List(ctx, list); err != nil {
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
