// Package manager runs the Drover manager on the hub: the controllers for
// ManagedClusters, RoleTemplates, AccessBindings and ClusterProjects, the hub server
// and the admission webhook.
package manager

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/drover-io/drover/admission"
	managementv1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/authproxy"
	"github.com/drover-io/drover/builtins"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/hubserver"
	"github.com/drover-io/drover/kubeconfig"
	"github.com/drover-io/drover/nodes"
	"github.com/drover-io/drover/registration"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/sharding"
	"github.com/drover-io/drover/tunnel"
	"github.com/drover-io/drover/version"
)

// DefaultNamespace is the operator namespace: kubeconfig Secrets live here.
const DefaultNamespace = "drover-system"

// Options configure the manager. They bind their own flags.
type Options struct {
	Kubeconfig             kubeconfig.Flags
	Log                    zap.Options
	LeaderElect            bool
	MetricsBindAddress     string
	HealthProbeBindAddress string
	Namespace              string
	// KubeAPIQPS and KubeAPIBurst limit the manager's client of the hub.
	KubeAPIQPS   float64
	KubeAPIBurst int
	Controllers  controllers.Options
	// Hub configures the hub server (agent tunnel, registration, proxy).
	Hub hubserver.Options
	// AgentCredentialTTL is the lifetime of the credentials agents get for their
	// tunnel; they renew them at two-thirds of it.
	AgentCredentialTTL time.Duration
	// PeerURL is where other replicas reach this one's tunnel endpoint.
	PeerURL string
	// Webhook configures the admission webhook.
	Webhook admission.Options
	// ArtifactsDir is the artifact source of provisioned nodes (--artifacts-dir).
	ArtifactsDir string
	// NodeAgentBinary is the drover binary hosts download (--node-agent-binary).
	NodeAgentBinary string
	// Shard is this replica's --shard=K/N; zero when the hub is not sharded.
	Shard sharding.Spec
	// ShardLeaseDuration is how long a shard's Lease lasts without renewal.
	ShardLeaseDuration time.Duration
	// BuiltinRoleTemplates creates the built-in RoleTemplates that this hub has never
	// held (package builtins): the installation manifests set it.
	BuiltinRoleTemplates bool

	// several: more than one manager runs in this process (tests of replicas).
	several bool
	// started, when set, receives this replica's connection cache and shards once
	// they exist (tests of sharding).
	started func(*remote.Cache, *sharding.Shards)
	// shutdownTimeout, when set, replaces controller-runtime's 30 s for runnables to
	// stop (tests, on a machine shared with other suites).
	shutdownTimeout time.Duration
}

// BindFlags registers the manager's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	o.Kubeconfig.BindFlags(fs)
	o.Log.BindFlags(fs)
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to; 0 disables them.")
	fs.StringVar(&o.Namespace, "namespace", DefaultNamespace, "The operator namespace, which holds the kubeconfig Secrets of the managed clusters.")
	// client-go's default (5 QPS; controller-runtime raises it to 20) throttles a
	// manager that writes status for many clusters and intents at once: at 10
	// clusters requests waited over a second.
	fs.Float64Var(&o.KubeAPIQPS, "kube-api-qps", 100, "Queries per second the manager may send to the hub's API server.")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", 200, "Burst of queries the manager may send to the hub's API server.")
	o.Controllers.BindFlags(fs)
	o.Hub.BindFlags(fs)
	fs.DurationVar(&o.AgentCredentialTTL, "agent-credential-ttl", tunnel.DefaultCredentialTTL, "Lifetime of the credential an agent gets for its tunnel to the hub; agents renew it at two-thirds of its life.")
	o.Webhook.BindFlags(fs)
	fs.StringVar(&o.ArtifactsDir, "artifacts-dir", "", "Artifact source of the clusters Drover provisions, served at <hub-url>/v1/artifacts/: <kubernetesVersion>/<binary> (etcd, etcdctl, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet) and images/<name>.tar (the pause image), each checked by sha256 on the nodes. hack/artifacts.sh fills one from the Go module proxy.")
	fs.StringVar(&o.NodeAgentBinary, "node-agent-binary", "", "The drover binary that hosts download at <hub-url>/v1/artifacts/drover to run the node agent. Default: the manager's own executable (one image serves all).")
	fs.BoolVar(&o.BuiltinRoleTemplates, "install-builtin-roletemplates", false, "Create the built-in RoleTemplates (cluster-owner, cluster-member, project-owner, project-member, read-only) that this hub has never held. Create-only: an edited built-in is left as it is, a deleted one stays deleted (ConfigMap drover-builtin-roletemplates records them).")
	fs.Var(&o.Shard, "shard", "Run shard K of N (K/N, e.g. 0/2): this replica connects to, syncs and writes the status of the ManagedClusters of shard K only (label "+sharding.Label+", else FNV-1a of the name modulo N), holds Lease drover-shard-K, and takes over the shards whose replicas stop renewing theirs. Run one replica per K, without --leader-elect. See docs/sharding.md.")
	fs.DurationVar(&o.ShardLeaseDuration, "shard-lease-duration", sharding.DefaultLeaseDuration, "How long a shard's Lease lasts without renewal (with --shard): a replica that dies is taken over after this. Renewals happen every fifth of it.")
	fs.StringVar(&o.PeerURL, "hub-peer-url", "", "URL at which the other manager replicas reach this one's tunnel endpoint (with --leader-elect or --shard), e.g. wss://10.0.0.5:9443/v1/tunnel. Default: the address in $POD_IP, else 127.0.0.1, with the port of --hub-bind-address.")
}

// Scheme holds every kind the manager reads or writes on the hub.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := managementv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Main parses args and runs the manager until ctx is done.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("drover", flag.ContinueOnError)
	var o Options
	o.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown command %q; run 'drover' for the manager or 'drover agent' for the agent", fs.Arg(0))
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.Log)))
	return Run(ctx, o)
}

// Run runs the manager with the given options until ctx is done.
func Run(ctx context.Context, o Options) error {
	log := ctrl.Log.WithName("manager")
	if o.Namespace == "" {
		return errors.New("--namespace must not be empty")
	}
	if o.Shard.Enabled() && o.LeaderElect {
		return errors.New("--shard and --leader-elect exclude each other: every shard runs its own replica, which holds its shard's Lease (docs/sharding.md)")
	}
	if o.Shard.Enabled() && o.ShardLeaseDuration > 0 && o.ShardLeaseDuration < time.Second {
		return fmt.Errorf("--shard-lease-duration must be at least 1s, got %s", o.ShardLeaseDuration)
	}
	cfg, err := o.Kubeconfig.RESTConfig()
	if err != nil {
		return err
	}
	if o.KubeAPIQPS > 0 {
		cfg.QPS = float32(o.KubeAPIQPS)
	}
	if o.KubeAPIBurst > 0 {
		cfg.Burst = o.KubeAPIBurst
	}
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	if o.Webhook.URL != "" && !o.Webhook.Enabled() {
		return errors.New("--webhook-url needs the webhook: set --webhook-bind-address to an address, not 0")
	}
	cacheOptions := controllers.CacheOptions(o.Namespace)
	if o.Webhook.Enabled() {
		if o.Webhook.ConfigurationName == "" {
			o.Webhook.ConfigurationName = admission.DefaultConfigurationName
		}
		// The webhook watches its own configuration, and only that one.
		cacheOptions.ByObject[&admissionregistrationv1.ValidatingWebhookConfiguration{}] = cache.ByObject{
			Field: fields.OneTermEqualSelector("metadata.name", o.Webhook.ConfigurationName)}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "drover-manager.management.drover.io",
		LeaderElectionNamespace: o.Namespace,
		// A replica that stops hands the lease over at once, not after it expires.
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{RecoverPanic: ptr.To(true), SkipNameValidation: ptr.To(o.several)},
		Cache:                         cacheOptions,
		GracefulShutdownTimeout:       gracefulShutdown(o.shutdownTimeout),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	o.Controllers.Namespace = o.Namespace
	var shards *sharding.Shards
	if o.Shard.Enabled() {
		shards = sharding.New(sharding.Options{Spec: o.Shard, Namespace: o.Namespace, Identity: peerID(),
			Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), LeaseDuration: o.ShardLeaseDuration,
			Recorder: mgr.GetEventRecorder("drover-sharding")})
		if err := mgr.Add(shards); err != nil {
			return err
		}
		o.Controllers.Shards = shards
	}
	var connections atomic.Pointer[remote.Cache]
	if o.Hub.BindAddress != "" && o.Hub.BindAddress != "0" {
		o.Hub.Namespace = o.Namespace
		hub, err := hubserver.New(o.Hub, mgr.GetAPIReader(), mgr.GetClient())
		if err != nil {
			return err
		}
		if err := mgr.Add(hub); err != nil {
			return err
		}
		// Registration behind NAT: the manifests that install the agent.
		reg := registration.NewRegistry(func(ctx context.Context, cluster string) (string, bool) {
			return controllers.RegistrationToken(ctx, mgr.GetClient(), o.Namespace, cluster)
		})
		image := o.Controllers.AgentImage
		hub.Handle("GET "+registration.PathPrefix+"{file}", reg.Handler(func() registration.Hub {
			return registration.Hub{URL: hub.URL(), CA: hub.CA(), Image: image}
		}))
		o.Controllers.HubURL = hub.URL()
		o.Controllers.Registrations = reg

		// The agents' tunnels, and the exchange of bootstrap tokens for credentials.
		rejections := controllers.NewTunnelRejections(mgr.GetClient(), mgr.GetEventRecorder("drover-tunnel"), func(cluster string) {
			if rc := connections.Load(); rc != nil {
				rc.Notify(cluster)
			}
		})
		o.Controllers.Rejections = rejections
		tun := tunnel.NewServer(tunnel.ServerOptions{
			Namespace: o.Namespace, Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(),
			Lookup:        controllers.TunnelLookup(mgr.GetClient(), o.Namespace),
			CredentialTTL: o.AgentCredentialTTL,
			OnChange: func(cluster string, open bool) {
				if rc := connections.Load(); rc != nil {
					rc.Kick(cluster, open)
				}
			},
			Reject: rejections.Reject,
		})
		if err := mgr.Add(tun); err != nil {
			return err
		}
		hub.Handle("GET "+tunnel.Path, tun)
		hub.Handle("POST "+tunnel.CredentialPath, tun.CredentialHandler())
		o.Controllers.Tunnels = tun

		// Provisioned hosts: install script, registration, plans, status, artifacts.
		nodeTokens := registration.NewRegistry(func(ctx context.Context, cluster string) (string, bool) {
			return controllers.ProvisioningNodeToken(ctx, mgr.GetClient(), o.Namespace, cluster)
		})
		nodeServer := nodes.New(nodes.Options{Namespace: o.Namespace, Cache: mgr.GetCache(), Informers: mgr.GetCache(),
			Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(),
			TokenOf: func(ctx context.Context, cluster string) (string, bool) {
				return controllers.ProvisioningNodeToken(ctx, mgr.GetClient(), o.Namespace, cluster)
			},
			ClusterOf: nodeTokens.Lookup, HubURL: hub.URL, HubCA: hub.CA, ArtifactsDir: o.ArtifactsDir, DroverBinary: o.NodeAgentBinary})
		if err := mgr.Add(nodeServer); err != nil {
			return err
		}
		nodeServer.Register(hub.Handle)
		o.Controllers.NodeTokens = nodeTokens
		o.Controllers.Artifacts = nodeServer.Artifacts
		o.Controllers.HubCA = hub.CA

		// The authentication proxy: people reach every cluster through the hub.
		// A replica that does not lead dials the clusters it is asked for itself.
		backends := &authproxy.Connections{Cache: connections.Load,
			Follower: authproxy.FollowerOptions{Reader: mgr.GetCache(), Namespace: o.Namespace, Remote: o.Controllers.Remote, Tunnels: tun.Dialer}}
		switch {
		case o.LeaderElect:
			backends.Controls = func(string) bool {
				select {
				case <-mgr.Elected():
					return true
				default:
					return false
				}
			}
		case shards != nil:
			backends.Controls = func(cluster string) bool {
				var mc managementv1alpha1.ManagedCluster
				if err := mgr.GetCache().Get(context.Background(), client.ObjectKey{Name: cluster}, &mc); err != nil {
					return false
				}
				return shards.Owns(mc.Name, mc.Labels)
			}
		}
		px, err := authproxy.New(authproxy.Options{Hub: cfg, Reader: mgr.GetCache(), Backends: backends})
		if err != nil {
			return err
		}
		if err := mgr.Add(px); err != nil {
			return err
		}
		if err := mgr.Add(backends); err != nil {
			return err
		}
		hub.Handle(authproxy.PathPrefix, px)
		hub.Handle("GET "+authproxy.ListPath, px.ListHandler())
		if o.LeaderElect || shards != nil {
			// Several replicas may run: each reaches the tunnels the others hold.
			if err := mgr.Add(everyReplica(func(ctx context.Context) error {
				tun.RunPeers(ctx, tunnel.PeerOptions{ID: peerID(), URL: peerURL(o.PeerURL, hub),
					Reader: mgr.GetAPIReader(), Writer: mgr.GetClient()})
				return nil
			})); err != nil {
				return err
			}
		}
	}
	if o.Webhook.Enabled() {
		// The admission webhook, on its own listener, on every replica.
		o.Webhook.Namespace = o.Namespace
		wh, err := admission.New(o.Webhook, admission.Deps{Scheme: scheme, Cache: mgr.GetCache(), Informers: mgr.GetCache(),
			Reader: mgr.GetAPIReader(), Client: mgr.GetClient()})
		if err != nil {
			return err
		}
		if err := mgr.Add(wh); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook", wh.ReadyCheck()); err != nil {
			return err
		}
	}
	if o.BuiltinRoleTemplates {
		if err := mgr.Add(&builtins.Installer{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: o.Namespace}); err != nil {
			return err
		}
	}
	rc, err := controllers.SetupWithManager(ctx, mgr, o.Controllers)
	if err != nil {
		return err
	}
	connections.Store(rc)
	if o.started != nil {
		o.started(rc, shards)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("Starting manager", "version", version.Version, "commit", version.Info().Commit, "namespace", o.Namespace, "shard", o.Shard.String())
	return mgr.Start(ctx)
}

func gracefulShutdown(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}

// everyReplica is a runnable that runs on every replica, leader or not.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (f everyReplica) NeedLeaderElection() bool        { return false }

// peerID names this replica among its peers: the host (pod) name and a random suffix,
// so that a restarted replica is a new peer.
func peerID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return strings.ToLower(host) + "-" + hex.EncodeToString(b)
}

// peerURL is where the other replicas reach this one: --hub-peer-url, else $POD_IP or
// 127.0.0.1 with the hub server's port.
func peerURL(flagValue string, hub *hubserver.Server) string {
	if flagValue != "" {
		return flagValue
	}
	host := os.Getenv("POD_IP")
	if host == "" {
		host = "127.0.0.1"
	}
	_, port, _ := net.SplitHostPort(hub.Addr().String())
	return "wss://" + net.JoinHostPort(host, port) + tunnel.Path
}
