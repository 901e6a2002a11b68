package authproxy

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/client-go/rest"

	"github.com/drover-io/drover/remote"
)

// Backend is how the proxy reaches one cluster's API server.
type Backend struct {
	// URL is the API server's address as the cluster's connection uses it (for a
	// tunnel, the host the agent forwards).
	URL *url.URL
	// Transport carries ordinary requests, with the connection's credentials.
	Transport http.RoundTripper
	// Upgrade carries connection upgrades (exec, attach, port-forward) over HTTP/1.1,
	// with the connection's dialer and credentials.
	Upgrade proxy.UpgradeRequestRoundTripper
	// Done is closed when the connection is closed (the cluster was deleted, or
	// its connection rebuilt).
	Done <-chan struct{}
	// Via says how the cluster is reached: "direct" or "tunnel".
	Via string
}

// Backends finds the connection to a cluster.
type Backends interface {
	// Backend returns the connection to a cluster, or an error that says, for the
	// caller, why there is none usable now.
	Backend(name string) (*Backend, error)
}

// Connections serves Backends from the manager's connection cache: the same
// connection (and, through a tunnel, the same agent) the controllers use. A replica
// that is not the leader runs no controllers and so holds no connections: it dials
// the clusters it is asked for itself (followers.go).
type Connections struct {
	// Cache returns the connection cache, or nil before the controllers started.
	Cache func() *remote.Cache
	// Controls tells whether this replica's controllers hold a cluster's connection:
	// it leads, or holds the cluster's shard. nil means they hold every cluster.
	Controls func(cluster string) bool
	// Follower configures the connections of a replica that does not lead.
	Follower FollowerOptions

	mu       sync.Mutex
	backends map[*remote.Cluster]*Backend
	own      *remote.Cache
	ownNames map[string]bool
}

// Backend implements Backends. A cluster that is not connected is refused at once,
// never waited for.
func (c *Connections) Backend(name string) (*Backend, error) {
	var cl *remote.Cluster
	if c.Controls == nil || c.Controls(name) {
		var rc *remote.Cache
		if c.Cache != nil {
			rc = c.Cache()
		}
		if rc == nil {
			return nil, fmt.Errorf("cluster %s is not connected yet: the manager is starting", name)
		}
		if cl = rc.Get(name); cl == nil {
			return nil, fmt.Errorf("cluster %s is not connected: the hub has no connection to it", name)
		}
	} else {
		var err error
		if cl, err = c.follow(name); err != nil {
			return nil, err
		}
	}
	if h := cl.Health(); !h.Connected {
		msg := h.Message
		if !h.Probed {
			msg = "its connection is being probed"
		}
		return nil, fmt.Errorf("cluster %s is not connected: %s", name, msg)
	}
	return c.backendFor(cl)
}

// backendFor builds (once per connection) what forwarding needs.
func (c *Connections) backendFor(cl *remote.Cluster) (*Backend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.backends[cl]; ok {
		return b, nil
	}
	b, err := NewBackend(cl.Config, cl.HTTPClient.Transport, cl.Done())
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	if cl.Tunnelled() {
		b.Via = "tunnel"
	}
	if c.backends == nil {
		c.backends = map[*remote.Cluster]*Backend{}
	}
	c.backends[cl] = b
	go func() {
		<-cl.Done()
		c.mu.Lock()
		delete(c.backends, cl)
		c.mu.Unlock()
	}()
	return b, nil
}

// NewBackend builds a Backend for a client configuration: ordinary requests go
// through transport (the connection's shared one), upgrades through an HTTP/1.1
// connection dialled with cfg's dialer and TLS settings, with cfg's credentials.
func NewBackend(cfg *rest.Config, transport http.RoundTripper, done <-chan struct{}) (*Backend, error) {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("the API server address %q cannot be used", cfg.Host)
	}
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("its TLS settings cannot be used: %w", err)
	}
	conn := &http.Transport{TLSClientConfig: tlsConfig, DialContext: cfg.Dial, Proxy: cfg.Proxy}
	creds, err := rest.HTTPWrappersForConfig(cfg, proxy.MirrorRequest)
	if err != nil {
		return nil, fmt.Errorf("its credentials cannot be used: %w", err)
	}
	return &Backend{URL: u, Transport: transport, Upgrade: proxy.NewUpgradeRequestRoundTripper(conn, creds),
		Done: done, Via: "direct"}, nil
}
