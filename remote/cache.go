// Package remote keeps one connection per target cluster (the idea behind Cluster API's
// ClusterCache). Per ManagedCluster it holds one HTTP client, shared by a cached client
// that caches only Drover-owned objects (selected by label) plus the Nodes that cluster
// facts come from, an uncached client, and a health probe. Connect and disconnect
// events are sent to the controllers that subscribe through Source.
//
// A dead or slow cluster never delays the others: every network call has its own
// timeout, and no lock is held across a network call.
package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// Labels Drover puts on every object it creates in a target cluster.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "drover"
)

// OwnedSelector selects the objects Drover owns in a target.
func OwnedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue})
}

// Options tune the connections.
type Options struct {
	// ProbeInterval is the time between health probes of a connected cluster.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe, and the dial of every connection.
	ProbeTimeout time.Duration
	// FailureThreshold is how many probes in a row must fail before a connected
	// cluster counts as disconnected.
	FailureThreshold int
	// MaxProbeInterval caps the backoff between probes of a disconnected cluster.
	MaxProbeInterval time.Duration
	// QPS and Burst limit each cluster's client.
	QPS   float32
	Burst int
	// Scheme for the remote clients; the client-go scheme if nil.
	Scheme *runtime.Scheme
	// Policy says which kubeconfigs and addresses are accepted.
	Policy Policy
}

// DefaultOptions detect an unreachable cluster within about 6 s (probe every 2 s, 2 s
// timeout, two failures in a row), well inside the 10 s target.
func DefaultOptions() Options {
	return Options{
		ProbeInterval:    2 * time.Second,
		ProbeTimeout:     2 * time.Second,
		FailureThreshold: 2,
		MaxProbeInterval: 10 * time.Second,
		QPS:              200,
		Burst:            400,
	}
}

// Health is what the probe knows of a cluster.
type Health struct {
	// Probed is false until the first probe has finished.
	Probed    bool
	Connected bool
	// Reason and Message explain Connected, for conditions.
	Reason  string
	Message string
	// Since is when Connected last changed.
	Since time.Time
	// Version is the server's version, from the last successful probe.
	Version *version.Info
	// ConsecutiveFailures counts failed probes since the last success.
	ConsecutiveFailures int
}

// Cluster is the connection to one target cluster.
type Cluster struct {
	// Name is the ManagedCluster's name.
	Name string
	// Endpoint is the API server URL.
	Endpoint string
	// Config is the client configuration (shares the HTTP client below).
	Config *rest.Config
	// HTTPClient is the one HTTP client every client of this cluster uses.
	HTTPClient *http.Client
	// Reader reads and writes straight through to the API server.
	Reader client.Client
	// Warnings say what is accepted but unsafe about the kubeconfig.
	Warnings []Warning

	source string
	hash   string
	// tunnel: reached through its agent's tunnel rather than dialled.
	tunnel bool
	// kick wakes the probe loop (a tunnel opened or closed).
	kick      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	discovery discovery.DiscoveryInterface
	onChange  func(name string)
	threshold int

	scheme *runtime.Scheme
	mapper meta.RESTMapper

	// onIdentified tells the Cache that this connection has read its identity,
	// for its index by identity (NamesWithID).
	onIdentified func(*Cluster)

	mu    sync.Mutex
	id    string
	idErr string
	// idDenied: the target refused the credentials reading the identity (401, 403).
	idDenied bool
	health   Health
	watches  sets.Set[string]
	// marks are what callers noted once per connection (Mark).
	marks sets.Set[string]
	// cache and client exist once the cluster has been reached: building the cache
	// needs discovery, which an unreachable cluster cannot answer.
	cache  cache.Cache
	client client.Client
}

// Done is closed when this connection is closed: the cluster was forgotten or
// disconnected, or its connection replaced (new credentials). Whatever runs over
// it (the authentication proxy's streams) ends then.
func (c *Cluster) Done() <-chan struct{} { return c.ctx.Done() }

// Tunnelled tells whether the cluster is reached through its agent's tunnel.
func (c *Cluster) Tunnelled() bool { return c.tunnel }

// Cache returns the cache of Drover-owned objects (by label) and Nodes, or nil while
// the cluster has never been reached.
func (c *Cluster) Cache() cache.Cache {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cache
}

// Client returns a client that reads Drover-owned objects and Nodes from the cache and
// writes directly, or nil while the cluster has never been reached.
func (c *Cluster) Client() client.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

// startCache builds and starts the cache once the cluster is reachable. It reports
// whether a cache was started by this call.
func (c *Cluster) startCache() (bool, error) {
	c.mu.Lock()
	started := c.cache != nil
	c.mu.Unlock()
	if started {
		return false, nil
	}
	ca, err := c.newObjectCache()
	if err != nil {
		return false, err
	}
	cached, err := client.New(c.Config, client.Options{HTTPClient: c.HTTPClient, Scheme: c.scheme, Mapper: c.mapper,
		Cache: &client.CacheOptions{Reader: ca}})
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if c.cache != nil {
		c.mu.Unlock()
		return false, nil
	}
	c.cache, c.client = ca, cached
	c.mu.Unlock()
	return true, nil
}

// ID returns the target's identity, the UID of its kube-system namespace, or "" until
// it has been read.
func (c *Cluster) ID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// identify reads the target's identity once per connection. It reports whether it
// learnt it now.
func (c *Cluster) identify(timeout time.Duration) bool {
	if c.ID() != "" {
		return false
	}
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, m); err != nil {
		reason, msg := Describe(err)
		ctrl.Log.WithName("remote").V(1).Info("Cannot read the cluster's identity yet", "cluster", c.Name, "reason", reason)
		c.mu.Lock()
		changed := c.idErr == ""
		c.idErr = fmt.Sprintf("cannot read namespace kube-system of %s to identify the cluster: %s; the credentials in %s need get on namespaces", c.Endpoint, msg, c.source)
		c.idDenied = reason == DescribeForbidden || reason == DescribeUnauthorized
		c.mu.Unlock()
		return changed
	}
	c.mu.Lock()
	c.id, c.idErr, c.idDenied = string(m.UID), "", false
	c.mu.Unlock()
	if c.onIdentified != nil {
		c.onIdentified(c)
	}
	return true
}

// State is what a connection can tell its users: whether it has something to
// report at all, and whether it is usable for syncing.
type State int

const (
	// StateSettling: not probed yet, or reached but its cache or identity not
	// ready yet. Nothing to report; the connection sends an event when that changes.
	StateSettling State = iota
	// StateDisconnected: probed and not reached (Health says why).
	StateDisconnected
	// StateUnidentified: reached, but its identity cannot be read (IdentityError
	// says why); nothing may be written until it can.
	StateUnidentified
	// StateReady: reached, cached and identified.
	StateReady
)

// State classifies the connection for its users.
func (c *Cluster) State() State {
	h := c.Health()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !h.Probed:
		return StateSettling
	case !h.Connected:
		return StateDisconnected
	case c.id == "" && c.idErr != "":
		return StateUnidentified
	case c.id == "" || c.client == nil:
		return StateSettling
	}
	return StateReady
}

// IdentityError says why the target's identity could not be read, or "".
func (c *Cluster) IdentityError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idErr
}

// IdentityDenied tells whether the target refused the credentials reading its
// identity (401 or 403): a person must grant them, waiting will not help.
func (c *Cluster) IdentityDenied() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idDenied
}

// IDs returns the identity of every connection that has one, by cluster name.
func (c *Cache) IDs() map[string]string {
	c.mu.Lock()
	cls := make([]*Cluster, 0, len(c.clusters))
	for _, cl := range c.clusters {
		cls = append(cls, cl)
	}
	c.mu.Unlock()
	out := map[string]string{}
	for _, cl := range cls {
		if id := cl.ID(); id != "" {
			out[cl.Name] = id
		}
	}
	return out
}

// NamesWithID lists the clusters whose connection has read the identity id. It reads
// an index, not every connection: every sync of every cluster asks.
func (c *Cache) NamesWithID(id string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.byID[id]))
	for name := range c.byID[id] {
		out = append(out, name)
	}
	return out
}

// identified indexes a connection by the identity it has read, unless it has been
// replaced or closed meanwhile.
func (c *Cache) identified(cl *Cluster) {
	id := cl.ID()
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == "" || c.clusters[cl.Name] != cl {
		return
	}
	if c.byID[id] == nil {
		c.byID[id] = map[string]*Cluster{}
	}
	c.byID[id][cl.Name] = cl
}

// unindex drops a connection that is being replaced or closed from the index by
// identity. c.mu must be held.
func (c *Cache) unindex(cl *Cluster) {
	if cl == nil {
		return
	}
	id := cl.ID()
	if byName := c.byID[id]; byName[cl.Name] == cl {
		delete(byName, cl.Name)
		if len(byName) == 0 {
			delete(c.byID, id)
		}
	}
}

// IDOf is the identity a cluster's connection has read, or "".
func (c *Cache) IDOf(name string) string {
	if cl := c.Get(name); cl != nil {
		return cl.ID()
	}
	return ""
}

// Health returns a copy of the cluster's health.
func (c *Cluster) Health() Health {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.health
}

// Cache holds the connections to all target clusters.
type Cache struct {
	opts   Options
	scheme *runtime.Scheme

	mu       sync.Mutex
	clusters map[string]*Cluster
	// byID indexes the current connections by the identity they have read:
	// identity -> cluster name -> connection.
	byID   map[string]map[string]*Cluster
	queues []workqueue.TypedRateLimitingInterface[reconcile.Request]
	// last holds how each cluster last connected (its kubeconfig, or its tunnel), so that a cluster
	// whose Secret was deleted together with it (kubectl delete -f, a GitOps prune)
	// can still be cleaned up. Forget drops it.
	last map[string]remembered
}

type remembered struct {
	kubeconfig []byte
	source     string
	// tunnel, for clusters reached through their agent's tunnel.
	tunnel *tunnelDial
}

// DialFunc dials a connection (through a tunnel).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

type tunnelDial struct {
	host string
	dial DialFunc
}

// New creates an empty connection cache.
func New(opts Options) *Cache {
	d := DefaultOptions()
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = d.ProbeInterval
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = d.ProbeTimeout
	}
	if opts.FailureThreshold <= 0 {
		opts.FailureThreshold = d.FailureThreshold
	}
	if opts.MaxProbeInterval < opts.ProbeInterval {
		opts.MaxProbeInterval = max(d.MaxProbeInterval, opts.ProbeInterval)
	}
	if opts.QPS <= 0 {
		opts.QPS = d.QPS
	}
	if opts.Burst <= 0 {
		opts.Burst = d.Burst
	}
	s := opts.Scheme
	if s == nil {
		s = clientgoscheme.Scheme
	}
	return &Cache{opts: opts, scheme: s, clusters: map[string]*Cluster{}, byID: map[string]map[string]*Cluster{}, last: map[string]remembered{}}
}

// Source lets a controller receive an event for a ManagedCluster whenever its
// connection comes up, goes down, or changes what it reports.
func (c *Cache) Source() source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.queues = append(c.queues, q)
		return nil
	})
}

// Notify sends an event for cluster name to every subscriber.
func (c *Cache) Notify(name string) { c.notify(name) }

func (c *Cache) notify(name string) {
	c.mu.Lock()
	queues := append([]workqueue.TypedRateLimitingInterface[reconcile.Request](nil), c.queues...)
	c.mu.Unlock()
	for _, q := range queues {
		q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
	}
}

// Get returns the connection to a cluster, or nil.
func (c *Cache) Get(name string) *Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clusters[name]
}

// Connect returns the connection to cluster name for the given kubeconfig, creating it
// (and its probe) if there is none, or replacing it if the kubeconfig changed, as when
// credentials are rotated. source describes where the kubeconfig came from, for
// messages. The first probe runs before Connect returns, bounded by ProbeTimeout.
func (c *Cache) Connect(ctx context.Context, name string, kubeconfig []byte, source string) (*Cluster, error) {
	sum := sha256.Sum256(kubeconfig)
	hash := hex.EncodeToString(sum[:])
	c.mu.Lock()
	existing := c.clusters[name]
	c.mu.Unlock()
	if existing != nil && existing.hash == hash {
		return existing, nil
	}
	cfg, warnings, err := ParseKubeconfigWithPolicy(kubeconfig, c.opts.Policy)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: c.opts.ProbeTimeout, KeepAlive: 30 * time.Second}
	cl, err := c.build(name, cfg, hash, source, GuardDial(c.opts.Policy, dialer))
	if err != nil {
		return nil, err
	}
	cl.Warnings = warnings
	return c.install(ctx, name, existing, cl, remembered{kubeconfig: append([]byte(nil), kubeconfig...), source: source}), nil
}

// ConnectTunnel returns the connection to cluster name through its agent's tunnel:
// requests go to host, dialled with dial. The connection exists whether or not a
// tunnel is open; its probe says which (reason TunnelDisconnected), and Kick wakes it
// when a tunnel opens or closes.
func (c *Cache) ConnectTunnel(ctx context.Context, name, host string, dial DialFunc, source string) (*Cluster, error) {
	hash := "tunnel:" + host
	c.mu.Lock()
	existing := c.clusters[name]
	c.mu.Unlock()
	if existing != nil && existing.hash == hash {
		return existing, nil
	}
	cfg := &rest.Config{Host: "http://" + host}
	cl, err := c.build(name, cfg, hash, source, dial)
	if err != nil {
		return nil, err
	}
	cl.tunnel = true
	cl.health.Message = "waiting for the agent's tunnel"
	return c.install(ctx, name, existing, cl, remembered{source: source, tunnel: &tunnelDial{host: host, dial: dial}}), nil
}

// Kick tells the connection to cluster name that its tunnel opened or closed: a
// closed tunnel counts as disconnected at once, and either way it probes now.
func (c *Cache) Kick(name string, open bool) {
	cl := c.Get(name)
	if cl == nil || !cl.tunnel {
		return
	}
	if !open && cl.tunnelClosed() {
		c.notify(name)
	}
	select {
	case cl.kick <- struct{}{}:
	default:
	}
}

// tunnelClosed marks a tunnel cluster disconnected; it reports whether that changed
// anything.
func (c *Cluster) tunnelClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.health.Connected {
		return false
	}
	c.health.Connected = false
	c.health.Since = time.Now()
	c.health.Reason, c.health.Message = ReasonTunnelDisconnected, "the agent's tunnel to the hub closed"
	return true
}

// install makes cl the connection to name, unless someone replaced existing
// meanwhile, and starts its probe loop.
func (c *Cache) install(ctx context.Context, name string, existing, cl *Cluster, r remembered) *Cluster {
	c.mu.Lock()
	if cur := c.clusters[name]; cur != existing {
		// Someone else connected meanwhile; keep theirs.
		c.mu.Unlock()
		cl.cancel()
		return cur
	}
	c.unindex(existing)
	c.clusters[name] = cl
	c.last[name] = r
	c.mu.Unlock()
	if existing != nil {
		existing.close()
		ctrl.LoggerFrom(ctx).Info("Replaced connection after its configuration changed", "cluster", name)
	}
	// Probing, identifying and starting the cache run on the connection's own
	// goroutine, never on a controller's worker: the caller sees "probing" at once
	// and every subscriber gets an event when something changes.
	go cl.probeLoop(c.opts)
	return cl
}

// Reconnect connects a cluster again the way it last connected: with the last
// kubeconfig it was given (its Secret may be gone: deleted together with the
// ManagedCluster by kubectl delete -f or a GitOps prune), or through its agent's
// tunnel. It returns nil when the cluster never connected.
func (c *Cache) Reconnect(ctx context.Context, name string) *Cluster {
	c.mu.Lock()
	r, ok := c.last[name]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	var cl *Cluster
	var err error
	if r.tunnel != nil {
		cl, err = c.ConnectTunnel(ctx, name, r.tunnel.host, r.tunnel.dial, r.source)
	} else {
		cl, err = c.Connect(ctx, name, r.kubeconfig, r.source+", as last read")
	}
	if err != nil {
		return nil
	}
	return cl
}

// Forget closes the connection to a cluster and drops its remembered kubeconfig.
func (c *Cache) Forget(name string) {
	c.Disconnect(name)
	c.mu.Lock()
	delete(c.last, name)
	c.mu.Unlock()
}

// Disconnect closes the connection to a cluster, if any.
func (c *Cache) Disconnect(name string) {
	c.mu.Lock()
	cl := c.clusters[name]
	delete(c.clusters, name)
	c.unindex(cl)
	c.mu.Unlock()
	if cl != nil {
		cl.close()
		// Subscribers that saw it connected must learn it is gone.
		c.notify(name)
	}
}

// Watch starts src on ctrlr once per connection: when the connection is rebuilt, the
// watch is started again on the new cache. name distinguishes watches.
func (c *Cache) Watch(clusterName, name string, ctrlr controller.Controller, src func(cache.Cache) source.Source) error {
	cl := c.Get(clusterName)
	if cl == nil {
		return fmt.Errorf("cluster %s is not connected", clusterName)
	}
	cl.mu.Lock()
	if cl.watches.Has(name) {
		cl.mu.Unlock()
		return nil
	}
	cl.watches.Insert(name)
	cl.mu.Unlock()
	ca := cl.Cache()
	if ca == nil {
		cl.mu.Lock()
		cl.watches.Delete(name)
		cl.mu.Unlock()
		return fmt.Errorf("cluster %s has no cache yet", clusterName)
	}
	if err := ctrlr.Watch(src(ca)); err != nil {
		cl.mu.Lock()
		cl.watches.Delete(name)
		cl.mu.Unlock()
		return err
	}
	return nil
}

// Watching tells whether the watch called name (see Cache.Watch) runs on this
// connection.
func (c *Cluster) Watching(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watches.Has(name)
}

// Mark notes key on this connection; it reports whether it is new, so that a caller
// does something once per connection (a rebuilt connection starts afresh).
func (c *Cluster) Mark(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.marks.Has(key) {
		return false
	}
	c.marks.Insert(key)
	return true
}

// build creates a connection; dial bounds the dial and TLS handshake so that a
// black-holed cluster fails fast (requests themselves are bounded by their contexts:
// a client timeout would cut watches short).
func (c *Cache) build(name string, cfg *rest.Config, hash, source string, dial DialFunc) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = c.opts.QPS, c.opts.Burst
	cfg.UserAgent = "drover-manager/" + name
	cfg.Dial = dial
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKubeconfig, "its TLS settings cannot be used")
	}
	// Requests are counted by cluster name (drover_cluster_requests_total), not by
	// the host client-go would label them with. Only the shared HTTP client counts:
	// Config stays as it was, for whoever builds other round trippers from it.
	httpClient.Transport = &countingTransport{cluster: name, next: httpClient.Transport}
	mapper := newMapper(cfg, httpClient)
	uncached, err := client.New(cfg, client.Options{HTTPClient: httpClient, Scheme: c.scheme, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	host := hostOf(cfg.Host)
	addTargetHost(host, 1)
	context.AfterFunc(ctx, func() { addTargetHost(host, -1) })
	return &Cluster{
		Name: name, Endpoint: cfg.Host, Config: cfg, HTTPClient: httpClient,
		Reader: uncached, scheme: c.scheme, mapper: mapper,
		source: source, hash: hash, ctx: ctx, cancel: cancel, discovery: dc,
		onChange: c.notify, onIdentified: c.identified, threshold: c.opts.FailureThreshold,
		health:  Health{Reason: ReasonProbing, Message: "probing " + cfg.Host},
		watches: sets.New[string](),
		marks:   sets.New[string](),
		kick:    make(chan struct{}, 1),
	}, nil
}

func (c *Cluster) close() {
	c.cancel()
	c.HTTPClient.CloseIdleConnections()
}

// probe runs one health probe and records the result. It reports whether anything a
// controller shows (connected, reason, version) changed.
func (c *Cluster) probe(ctx context.Context, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var info *version.Info
	body, err := c.discovery.RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err == nil {
		info = &version.Info{}
		if jerr := json.Unmarshal(body, info); jerr != nil {
			err = jerr
		}
	}
	probeDuration.WithLabelValues(c.Name).Observe(time.Since(start).Seconds())
	return c.record(err, info)
}

func (c *Cluster) record(err error, info *version.Info) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health
	before := h
	if err == nil {
		h.ConsecutiveFailures = 0
		if !h.Connected {
			h.Since = time.Now()
		}
		h.Connected = true
		h.Reason, h.Message = Classify(nil, c.Endpoint, c.source)
		if c.tunnel {
			h.Message = "connected through the agent's tunnel"
		}
		h.Version = info
	} else {
		h.ConsecutiveFailures++
		reason, message := Classify(err, c.Endpoint, c.source)
		if c.tunnel {
			reason, message = classifyTunnel(err, reason, message)
		}
		// A connected cluster must fail FailureThreshold probes in a row to count as
		// disconnected; one that never connected is reported at once.
		if !h.Connected || h.ConsecutiveFailures >= c.failureThreshold() {
			if h.Connected || !h.Probed {
				h.Since = time.Now()
			}
			h.Connected = false
			h.Reason, h.Message = reason, message
		}
	}
	h.Probed = true
	c.health = h
	return before.Connected != h.Connected || before.Reason != h.Reason || before.Message != h.Message ||
		before.Probed != h.Probed || gitVersion(before.Version) != gitVersion(h.Version)
}

func (c *Cluster) failureThreshold() int {
	return c.threshold
}

func gitVersion(v *version.Info) string {
	if v == nil {
		return ""
	}
	return v.GitVersion
}

func (c *Cluster) probeLoop(opts Options) {
	interval := opts.ProbeInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-timer.C:
		case <-c.kick:
			interval = opts.ProbeInterval
		}
		changed := c.probe(c.ctx, opts.ProbeTimeout)
		if c.Health().Connected {
			if c.identify(opts.ProbeTimeout) {
				changed = true
			}
			started, err := c.startCache()
			if err != nil {
				reason, _ := Classify(err, c.Endpoint, c.source)
				ctrl.Log.WithName("remote").V(1).Info("Cannot build the cluster cache yet", "cluster", c.Name, "reason", reason)
			}
			changed = changed || started
		}
		if changed && c.ctx.Err() == nil {
			c.onChange(c.Name)
		}
		// Back off while disconnected, so that a dead cluster costs little; probe at
		// the normal pace while connected, so that an outage is noticed quickly.
		if c.Health().Connected {
			interval = opts.ProbeInterval
		} else {
			interval = min(interval*2, opts.MaxProbeInterval)
		}
		timer.Reset(interval)
	}
}
