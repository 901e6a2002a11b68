// Package agent is `drover agent`, which runs in every target cluster.
//
// The agent heartbeats through a coordination.k8s.io/v1 Lease in the target cluster:
// every renew interval it sets the Lease's renewTime, and it records its version and
// cluster name in the Lease's annotations. The hub reads the Lease to tell whether the
// agent is alive (the AgentReady condition) and which version it runs.
package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/drover-io/drover/kubeconfig"
	"github.com/drover-io/drover/tunnel"
	"github.com/drover-io/drover/version"
)

// Names the agent writes on its Lease; the hub reads them.
const (
	// LeaseAnnotationVersion records the agent's version on its Lease.
	LeaseAnnotationVersion = "management.drover.io/agent-version"
	// LeaseAnnotationClusterName records the name of the cluster the agent runs in.
	LeaseAnnotationClusterName = "management.drover.io/cluster-name"

	// LabelManagedBy is the well-known label naming the tool that manages an object.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelManagedByValue is LabelManagedBy's value on the agent's Lease.
	LabelManagedByValue = "drover"
	// LabelComponent is the well-known label naming an object's component.
	LabelComponent = "app.kubernetes.io/component"
	// LabelComponentValue is LabelComponent's value on the agent's Lease.
	LabelComponentValue = "agent"

	// HolderIdentityPrefix prefixes the cluster name in the Lease's spec.holderIdentity.
	HolderIdentityPrefix = "drover-agent/"
)

// Defaults of the agent's flags.
const (
	// DefaultNamespace is the namespace holding the agent's Lease; the hub installs it.
	DefaultNamespace = "drover-system"
	// DefaultLeaseName is the name of the agent's Lease.
	DefaultLeaseName = "drover-agent"
	// DefaultRenewInterval is how often the agent renews its Lease.
	DefaultRenewInterval = 2 * time.Second
	// DefaultLeaseDuration is how long the Lease counts as held after a renewal.
	DefaultLeaseDuration = 10 * time.Second
)

// Options configure the agent.
type Options struct {
	// ClusterName is the name of the ManagedCluster on the hub this agent runs for.
	ClusterName string
	// Namespace holds the Lease. It must exist: the agent waits for the hub to create
	// it and never creates it itself.
	Namespace string
	// LeaseName names the Lease.
	LeaseName string
	// RenewInterval is the time between renewals, and the timeout of each one.
	RenewInterval time.Duration
	// LeaseDuration is written to the Lease's spec.leaseDurationSeconds, rounded up
	// to whole seconds. It must exceed RenewInterval.
	LeaseDuration time.Duration
	// Version is the agent version recorded on the Lease; empty means version.Version.
	Version string
	// MetricsBindAddress serves Prometheus metrics (/metrics); "" or "0" turns it off.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz (ready while the Lease is
	// held); "" or "0" turns it off.
	HealthProbeBindAddress string
}

// HolderIdentity is the spec.holderIdentity the agent writes on its Lease.
func (o *Options) HolderIdentity() string { return HolderIdentityPrefix + o.ClusterName }

func (o *Options) validate() error {
	switch {
	case o.ClusterName == "":
		return errors.New("--cluster-name is required")
	case o.Namespace == "":
		return errors.New("--namespace must not be empty")
	case o.LeaseName == "":
		return errors.New("--lease-name must not be empty")
	case o.RenewInterval <= 0:
		return fmt.Errorf("--renew-interval must be positive, got %s", o.RenewInterval)
	case o.LeaseDuration <= o.RenewInterval:
		return fmt.Errorf("--lease-duration (%s) must be longer than --renew-interval (%s), or the lease expires between renewals",
			o.LeaseDuration, o.RenewInterval)
	}
	return nil
}

// Main parses the agent's arguments and runs it until ctx is done.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("drover agent", flag.ContinueOnError)
	o := Options{Version: version.Version}
	fs.StringVar(&o.ClusterName, "cluster-name", "", "Name of the ManagedCluster on the hub that this agent runs for (required).")
	fs.StringVar(&o.Namespace, "namespace", DefaultNamespace, "Namespace of the agent's Lease; the hub creates it.")
	fs.StringVar(&o.LeaseName, "lease-name", DefaultLeaseName, "Name of the agent's heartbeat Lease.")
	fs.DurationVar(&o.RenewInterval, "renew-interval", DefaultRenewInterval, "How often to renew the Lease; also the timeout of each renewal.")
	fs.DurationVar(&o.LeaseDuration, "lease-duration", DefaultLeaseDuration, "Lease duration written to the Lease; must exceed --renew-interval.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", "0", "Address the Prometheus metrics endpoint (/metrics) binds to, e.g. :8080; 0 disables it.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", "0", "Address /healthz and /readyz (ready while the heartbeat Lease is held) bind to, e.g. :8081; 0 disables them.")
	var kf kubeconfig.Flags
	kf.BindFlags(fs)
	var zo zap.Options
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("drover agent takes no arguments, got %q", fs.Args())
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	cfg, err := kf.RESTConfig()
	var hub *HubSecret
	if o.ClusterName == "" {
		// No hub flags: the registration manifest's Secret says who we are and
		// where the hub is, read through the kubeconfig, so that the agent behaves
		// the same inside the cluster and outside it.
		if err != nil {
			return fmt.Errorf("--cluster-name is required unless Secret %s/%s can be read through the kubeconfig: %w", o.Namespace, HubSecretName, err)
		}
		if hub, err = ReadHubSecret(ctx, cfg, o.Namespace); err != nil {
			return err
		}
		o.ClusterName = hub.Cluster
	}
	if err := o.validate(); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	if hub == nil || hub.URL == "" {
		return Run(ctx, cfg, o)
	}
	return RunWithTunnel(ctx, cfg, o, *hub)
}

// RunWithTunnel runs the heartbeat and keeps the tunnel to the hub open, until ctx is
// done.
func RunWithTunnel(ctx context.Context, cfg *rest.Config, o Options, hub HubSecret) error {
	t, err := tunnel.NewAgent(tunnel.AgentOptions{HubURL: hub.URL, HubCA: hub.CA, Cluster: o.ClusterName,
		Token: hub.Token, Namespace: o.Namespace, Target: cfg})
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", o.Namespace, HubSecretName, err)
	}
	done := make(chan error, 1)
	go func() { done <- t.Run(ctx) }()
	err = Run(ctx, cfg, o)
	if terr := <-done; err == nil {
		err = terr
	}
	return err
}

// HubSecretName is the Secret, in the agent's namespace, that the registration
// manifest installs: it tells the agent its cluster's name and how to reach the hub.
const HubSecretName = "drover-agent-hub"

// HubSecret is what Secret drover-agent-hub tells the agent.
type HubSecret struct {
	URL, Cluster, Token string
	CA                  []byte
}

// ReadHubSecret reads Secret drover-agent-hub.
func ReadHubSecret(ctx context.Context, cfg *rest.Config, namespace string) (*HubSecret, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := cs.CoreV1().Secrets(namespace).Get(rctx, HubSecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("--cluster-name is required: Secret %s/%s does not exist (apply the registration manifest from status.registration.command on the hub, or pass --cluster-name)", namespace, HubSecretName)
	case err != nil:
		return nil, fmt.Errorf("--cluster-name is required unless Secret %s/%s can be read: %w", namespace, HubSecretName, err)
	}
	h := &HubSecret{URL: string(s.Data["url"]), Cluster: string(s.Data["cluster"]), Token: string(s.Data["token"]), CA: s.Data["ca.crt"]}
	if h.Cluster == "" {
		return nil, fmt.Errorf("secret %s/%s has no key 'cluster'; apply the registration manifest again, or pass --cluster-name", namespace, HubSecretName)
	}
	return h, nil
}

// Run renews the agent's Lease in the cluster cfg points at every o.RenewInterval
// until ctx is done, then returns nil. Failed renewals are logged and retried at the
// next interval; Run only returns an error for invalid options or configuration.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if cfg == nil {
		return errors.New("agent: no client configuration")
	}
	if err := o.validate(); err != nil {
		return err
	}
	if o.Version == "" {
		o.Version = version.Version
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "drover-agent/" + o.Version
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("agent: create client for cluster %q: %w", o.ClusterName, err)
	}
	h := &heartbeat{
		opts:   o,
		leases: cs.CoordinationV1().Leases(o.Namespace),
		now:    time.Now,
		health: &health{leaseDuration: o.LeaseDuration},
	}
	log := ctrl.LoggerFrom(ctx).WithName("agent").WithValues("cluster", o.ClusterName)
	ctx = ctrl.LoggerInto(ctx, log)
	agentInfo.WithLabelValues(o.Version, o.ClusterName).Set(1)
	defer agentInfo.DeleteLabelValues(o.Version, o.ClusterName)
	if err := serve(ctx, "metrics", o.MetricsBindAddress, metricsHandler()); err != nil {
		return err
	}
	if err := serve(ctx, "health probes", o.HealthProbeBindAddress, h.health.probeHandler()); err != nil {
		return err
	}
	log.Info("Starting agent", "version", o.Version, "namespace", o.Namespace, "lease", o.LeaseName,
		"renewInterval", o.RenewInterval, "leaseDuration", o.LeaseDuration)
	wait.UntilWithContext(ctx, h.tick, o.RenewInterval)
	log.Info("Stopping agent")
	return nil
}

// heartbeat renews one Lease.
type heartbeat struct {
	opts   Options
	leases coordinationv1client.LeaseInterface
	now    func() time.Time

	// healthy is whether the last renewal succeeded, so that only changes are
	// logged at the default level rather than every interval.
	healthy bool
	// waitingForNamespace is whether the last renewal found no namespace.
	waitingForNamespace bool
	// health feeds the probes and metrics; nil in tests that need neither.
	health *health
}

// errNamespaceMissing reports that the Lease's namespace does not exist (yet).
var errNamespaceMissing = errors.New("namespace does not exist")

// tick renews the Lease once, bounded by the renew interval, and logs the outcome.
func (h *heartbeat) tick(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx)
	renewCtx, cancel := context.WithTimeout(ctx, h.opts.RenewInterval)
	defer cancel()
	err := h.renew(renewCtx)
	if h.health != nil && (err == nil || ctx.Err() == nil) {
		h.health.renewed(err == nil, h.now())
	}
	switch {
	case err != nil && ctx.Err() != nil:
		// Shutting down; the interrupted renewal is no failure.
	case err == nil:
		if !h.healthy {
			log.Info("Renewed lease", "namespace", h.opts.Namespace, "lease", h.opts.LeaseName)
		} else {
			log.V(1).Info("Renewed lease", "namespace", h.opts.Namespace, "lease", h.opts.LeaseName)
		}
		h.healthy, h.waitingForNamespace = true, false
	case errors.Is(err, errNamespaceMissing):
		if !h.waitingForNamespace {
			log.Info("Waiting for the hub to create the lease namespace", "namespace", h.opts.Namespace)
		}
		h.healthy, h.waitingForNamespace = false, true
	default:
		log.Error(err, "Failed to renew lease", "namespace", h.opts.Namespace, "lease", h.opts.LeaseName)
		h.healthy, h.waitingForNamespace = false, false
	}
}

// renew creates the Lease if it is missing and otherwise updates it, retrying on
// write conflicts.
func (h *heartbeat) renew(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease, err := h.leases.Get(ctx, h.opts.LeaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: h.opts.LeaseName, Namespace: h.opts.Namespace}}
			h.stamp(lease)
			_, err = h.leases.Create(ctx, lease, metav1.CreateOptions{})
			switch {
			case apierrors.IsNotFound(err):
				// The Lease was missing, so a NotFound on create is about its namespace.
				return fmt.Errorf("create lease %s/%s: %w: %w", h.opts.Namespace, h.opts.LeaseName, errNamespaceMissing, err)
			case apierrors.IsAlreadyExists(err):
				// Created concurrently: try again through the update path.
				return apierrors.NewConflict(coordinationv1.Resource("leases"), h.opts.LeaseName, err)
			case err != nil:
				return fmt.Errorf("create lease %s/%s: %w", h.opts.Namespace, h.opts.LeaseName, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("get lease %s/%s: %w", h.opts.Namespace, h.opts.LeaseName, err)
		}
		h.stamp(lease)
		if _, err := h.leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update lease %s/%s: %w", h.opts.Namespace, h.opts.LeaseName, err)
		}
		return nil
	})
}

// stamp writes the agent's labels, annotations and renewal into lease, keeping
// whatever else is there.
func (h *heartbeat) stamp(lease *coordinationv1.Lease) {
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[LabelManagedBy] = LabelManagedByValue
	lease.Labels[LabelComponent] = LabelComponentValue
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[LeaseAnnotationVersion] = h.opts.Version
	lease.Annotations[LeaseAnnotationClusterName] = h.opts.ClusterName

	now := metav1.NewMicroTime(h.now())
	holder := h.opts.HolderIdentity()
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != holder {
		if lease.Spec.HolderIdentity != nil {
			transitions := int32(0)
			if lease.Spec.LeaseTransitions != nil {
				transitions = *lease.Spec.LeaseTransitions
			}
			transitions++
			lease.Spec.LeaseTransitions = &transitions
		}
		lease.Spec.HolderIdentity = &holder
		lease.Spec.AcquireTime = &now
	}
	lease.Spec.RenewTime = &now
	seconds := leaseDurationSeconds(h.opts.LeaseDuration)
	lease.Spec.LeaseDurationSeconds = &seconds
}

// leaseDurationSeconds rounds d up to whole seconds, at least one.
func leaseDurationSeconds(d time.Duration) int32 {
	s := math.Ceil(d.Seconds())
	switch {
	case s < 1:
		return 1
	case s > math.MaxInt32:
		return math.MaxInt32
	}
	return int32(s)
}
