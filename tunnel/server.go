// Package tunnel carries the hub's traffic to clusters behind NAT. The agent in such a
// cluster dials the hub server and keeps one websocket open (rancher/remotedialer, the
// library Rancher runs at scale); the hub then dials "through" it, and the agent
// forwards those connections to its own API server and nowhere else.
//
// Credentials: the agent exchanges its cluster's bootstrap token (from the
// registration manifest) for a client certificate signed by the hub's agent CA
// (Secret drover-agent-ca), naming the ManagedCluster, its UID and the target's
// kube-system UID. The certificate opens that cluster's tunnel only, is renewed by
// the agent before it expires, and stops working when the ManagedCluster is deleted
// (its UID no longer matches).
//
// With several manager replicas, each replica serves the tunnels its agents hold and
// reaches the others' through remotedialer's peer connections.
package tunnel

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/remote"
)

// Paths on the hub server, and names both ends agree on.
const (
	// Path is the websocket endpoint agents (and peer replicas) connect to.
	Path = "/v1/tunnel"
	// CredentialPath exchanges a bootstrap token, or a credential about to expire,
	// for a new credential.
	CredentialPath = "/v1/agent/credential"
	// ClusterHeader names the cluster an agent connects for; it must match its
	// credential.
	ClusterHeader = "X-Drover-Cluster"
	// APIServerHost is the host the hub dials through a tunnel. The agent forwards
	// connections to it to its cluster's API server, and refuses every other address.
	APIServerHost = "kubernetes.drover-tunnel"
	// APIServerAddress is APIServerHost with its port.
	APIServerAddress = APIServerHost + ":80"
	// DefaultCredentialTTL is how long an agent credential is valid.
	DefaultCredentialTTL = 24 * time.Hour
)

// Reasons for rejecting an agent, used in events on its ManagedCluster.
const (
	ReasonTokenRejected      = "BootstrapTokenRejected"
	ReasonCredentialRejected = "AgentCredentialRejected"
	ReasonClusterMismatch    = "AgentClusterMismatch"
)

// ClusterInfo is what the hub knows of the cluster an agent claims to be.
type ClusterInfo struct {
	// Registered: a ManagedCluster of that name exists with spec.registration.
	Registered bool
	// UID of the ManagedCluster.
	UID string
	// Deleting: the ManagedCluster is being deleted. Its tunnel stays usable for the
	// cleanup, but no new credential is issued.
	Deleting bool
	// Token is the current bootstrap token, or "".
	Token string
	// ClusterID is the target's identity the hub recorded (status.clusterID), or "".
	ClusterID string
}

// ServerOptions configure the hub side.
type ServerOptions struct {
	// Namespace holds Secret drover-agent-ca.
	Namespace string
	Reader    client.Reader
	Writer    client.Client
	// Lookup returns what the hub knows of a cluster; an error means the hub cannot
	// tell right now.
	Lookup func(ctx context.Context, cluster string) (ClusterInfo, error)
	// CredentialTTL is the lifetime of agent credentials; DefaultCredentialTTL if 0.
	CredentialTTL time.Duration
	// OnChange is called when a tunnel opens or closes on this replica.
	OnChange func(cluster string, open bool)
	// Reject is called when an agent is turned away, for an event on its
	// ManagedCluster. The message never holds a token.
	Reject func(cluster, reason, message string)
}

// Server is the hub side: the tunnel endpoint, the credential exchange and the dialer
// the connection cache uses.
type Server struct {
	opts   ServerOptions
	rd     *remotedialer.Server
	signer atomic.Pointer[signer]
	ready  chan struct{}

	mu       sync.Mutex
	sessions map[string][]*session
	peers    map[string]string
	// watched holds, for every cluster the hub dials, whether a tunnel to it
	// (here or at a peer) was open at the last look.
	watched map[string]bool
}

type session struct {
	conn  net.Conn
	timer *time.Timer
}

type clusterKey struct{}

func init() {
	// remotedialer logs every connection at info level through logrus; Drover logs
	// what matters itself.
	logrus.SetLevel(logrus.ErrorLevel)
}

// NewServer creates the hub side. It serves once Start has loaded the CA.
func NewServer(opts ServerOptions) *Server {
	if opts.CredentialTTL <= 0 {
		opts.CredentialTTL = DefaultCredentialTTL
	}
	s := &Server{opts: opts, ready: make(chan struct{}), sessions: map[string][]*session{}, peers: map[string]string{}, watched: map[string]bool{}}
	s.rd = remotedialer.New(func(req *http.Request) (string, bool, error) {
		c, ok := req.Context().Value(clusterKey{}).(string)
		return c, ok && c != "", nil
	}, func(rw http.ResponseWriter, _ *http.Request, code int, err error) {
		http.Error(rw, err.Error(), code)
	})
	return s
}

// NeedLeaderElection is false: every replica holds tunnels.
func (s *Server) NeedLeaderElection() bool { return false }

// Start loads (or creates) the agent CA, then waits for ctx.
func (s *Server) Start(ctx context.Context) error {
	log := ctrl.Log.WithName("tunnel")
	delay := time.Second
	for {
		sg, err := loadSigner(ctx, s.opts.Reader, s.opts.Writer, s.opts.Namespace)
		if err == nil {
			s.signer.Store(sg)
			s.rd.PeerToken = sg.peerToken
			break
		}
		log.Error(err, "Cannot load the agent credential CA; retrying", "secret", s.opts.Namespace+"/"+CASecretName)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
	close(s.ready)
	s.watchTunnels(ctx)
	s.mu.Lock()
	for _, list := range s.sessions {
		for _, ss := range list {
			_ = ss.conn.Close()
		}
	}
	s.mu.Unlock()
	return nil
}

// Ready reports whether the CA is loaded.
func (s *Server) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// watchInterval is how often tunnels held by peers are looked for: a replica learns
// of them from its peers, without a callback.
const watchInterval = 500 * time.Millisecond

// watchTunnels reports tunnels opening and closing at peers (and here) through
// OnChange, for every cluster the hub dials, until ctx is done.
func (s *Server) watchTunnels(ctx context.Context) {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var changed []string
		s.mu.Lock()
		for c, was := range s.watched {
			if has := s.rd.HasSession(c); has != was {
				s.watched[c] = has
				changed = append(changed, c)
			}
		}
		s.mu.Unlock()
		for _, c := range changed {
			if s.opts.OnChange != nil {
				s.opts.OnChange(c, s.rd.HasSession(c))
			}
		}
	}
}

// Dialer dials through cluster's tunnel, held by this replica or a peer.
func (s *Server) Dialer(cluster string) func(ctx context.Context, network, address string) (net.Conn, error) {
	s.mu.Lock()
	if _, ok := s.watched[cluster]; !ok {
		s.watched[cluster] = s.rd.HasSession(cluster)
	}
	s.mu.Unlock()
	d := s.rd.Dialer(cluster)
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		conn, err := d(ctx, network, address)
		if err != nil && strings.Contains(err.Error(), "failed to find Session") {
			return nil, fmt.Errorf("%w: %s", ErrNoTunnel, cluster)
		}
		return conn, err
	}
}

// ErrNoTunnel: no replica holds a tunnel to the cluster.
var ErrNoTunnel = remote.ErrNoTunnel

// HasTunnel reports whether this replica or a peer holds a tunnel to cluster.
func (s *Server) HasTunnel(cluster string) bool { return s.rd.HasSession(cluster) }

// Close closes the tunnels this replica holds to cluster: its ManagedCluster is gone.
func (s *Server) Close(cluster string) {
	s.mu.Lock()
	list := s.sessions[cluster]
	delete(s.watched, cluster)
	forgetMetrics(cluster)
	s.mu.Unlock()
	for _, ss := range list {
		_ = ss.conn.Close()
	}
}

// ServeHTTP serves Path: peers (remotedialer's own token check) and agents (their
// credential).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.Ready() {
		http.Error(w, "the hub is starting", http.StatusServiceUnavailable)
		return
	}
	if r.Header.Get(remotedialer.ID) != "" {
		s.rd.ServeHTTP(w, r)
		return
	}
	id, status, msg := s.authenticateAgent(r)
	if status != 0 {
		http.Error(w, msg, status)
		return
	}
	log := ctrl.Log.WithName("tunnel").WithValues("cluster", id.Cluster)
	hw := &hijackWriter{ResponseWriter: w}
	ctx := context.WithValue(r.Context(), clusterKey{}, id.Cluster)
	// The session is registered right after the upgrade; announce it once it is
	// visible, and close the older ones: one tunnel per cluster, the newest wins.
	go s.announce(id, hw)
	s.rd.ServeHTTP(hw, r.WithContext(ctx))
	if c := hw.conn.Load(); c != nil {
		s.remove(id.Cluster, *c)
		log.Info("Agent tunnel closed")
		if s.opts.OnChange != nil {
			// A newer tunnel (here or at a peer) may have replaced this one.
			s.opts.OnChange(id.Cluster, s.rd.HasSession(id.Cluster))
		}
	}
}

// announce waits for the new session to be usable, then records it.
func (s *Server) announce(id Identity, hw *hijackWriter) {
	deadline := time.Now().Add(10 * time.Second)
	var conn net.Conn
	for time.Now().Before(deadline) {
		// The upgrade's answer has gone out (its first write on the taken-over
		// connection); remotedialer registers the session right after, with no
		// I/O in between. The short wait covers that, so that an older session of
		// the same cluster is not taken for this one.
		if c := hw.conn.Load(); c != nil && hw.upgraded.Load() {
			time.Sleep(10 * time.Millisecond)
			if s.rd.HasSession(id.Cluster) {
				conn = *c
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if conn == nil {
		return
	}
	ss := &session{conn: conn}
	if wait := time.Until(id.NotAfter); wait > 0 {
		// An expired credential keeps no tunnel open.
		ss.timer = time.AfterFunc(wait, func() { _ = conn.Close() })
	}
	s.mu.Lock()
	old := s.sessions[id.Cluster]
	s.sessions[id.Cluster] = []*session{ss}
	tunnelConnected.WithLabelValues(id.Cluster).Set(1)
	tunnelOpened.WithLabelValues(id.Cluster).Inc()
	s.mu.Unlock()
	for _, o := range old {
		_ = o.conn.Close()
	}
	ctrl.Log.WithName("tunnel").Info("Agent tunnel opened", "cluster", id.Cluster, "replaced", len(old))
	if s.opts.OnChange != nil {
		s.opts.OnChange(id.Cluster, true)
	}
}

func (s *Server) remove(cluster string, conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.sessions[cluster]
	for i, ss := range list {
		if ss.conn == conn {
			if ss.timer != nil {
				ss.timer.Stop()
			}
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.sessions, cluster)
		if _, dialled := s.watched[cluster]; dialled {
			tunnelConnected.WithLabelValues(cluster).Set(0)
		} else {
			// Not a cluster this replica dials (a follower's, or one deleted):
			// no series rather than a stale one.
			tunnelConnected.DeleteLabelValues(cluster)
		}
	} else {
		s.sessions[cluster] = list
	}
}

// authenticateAgent checks the client certificate of a tunnel request. It returns a
// status code and message when the agent is turned away.
func (s *Server) authenticateAgent(r *http.Request) (Identity, int, string) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Identity{}, http.StatusUnauthorized, "an agent credential (client certificate) is required; exchange the bootstrap token at " + CredentialPath + " first"
	}
	id, err := s.signer.Load().verify(r.TLS.PeerCertificates[0], time.Now())
	if err != nil {
		return Identity{}, http.StatusUnauthorized, err.Error()
	}
	if claimed := r.Header.Get(ClusterHeader); claimed != "" && claimed != id.Cluster {
		msg := fmt.Sprintf("an agent holding the credential of cluster %s tried to open the tunnel of %s; check which cluster the registration manifest was applied to", id.Cluster, claimed)
		s.reject(claimed, ReasonClusterMismatch, msg)
		return Identity{}, http.StatusForbidden, msg
	}
	info, err := s.opts.Lookup(r.Context(), id.Cluster)
	if err != nil {
		return Identity{}, http.StatusServiceUnavailable, "the hub cannot check the credential right now"
	}
	if !info.Registered || info.UID != id.UID {
		// The ManagedCluster was deleted (and perhaps created again): the
		// credential is revoked. Say nothing more about the cluster.
		return Identity{}, http.StatusForbidden, "the agent credential has been revoked; apply the cluster's current registration manifest"
	}
	if info.ClusterID != "" && id.ClusterID != info.ClusterID {
		msg := fmt.Sprintf("the agent credential was issued to the cluster with kube-system UID %s, but ManagedCluster %s is the cluster with UID %s", id.ClusterID, id.Cluster, info.ClusterID)
		s.reject(id.Cluster, ReasonClusterMismatch, msg)
		return Identity{}, http.StatusForbidden, msg
	}
	return id, 0, ""
}

func (s *Server) reject(cluster, reason, msg string) {
	tunnelRejected.WithLabelValues(reason).Inc()
	if s.opts.Reject != nil && validation.IsDNS1123Subdomain(cluster) == nil {
		s.opts.Reject(cluster, reason, msg)
	}
}

// CredentialRequest is what an agent sends to CredentialPath, with either its
// bootstrap token (Authorization: Bearer) or its current credential (client
// certificate).
type CredentialRequest struct {
	// Cluster is the ManagedCluster the agent runs for.
	Cluster string `json:"cluster"`
	// ClusterID is the UID of the target's kube-system namespace.
	ClusterID string `json:"clusterID"`
	// CSR is a PEM certificate request for the agent's key.
	CSR string `json:"csr"`
}

// CredentialResponse holds the issued credential.
type CredentialResponse struct {
	Certificate string    `json:"certificate"`
	NotAfter    time.Time `json:"notAfter"`
}

// CredentialHandler serves CredentialPath.
func (s *Server) CredentialHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.Ready() {
			http.Error(w, "the hub is starting", http.StatusServiceUnavailable)
			return
		}
		var req CredentialRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "the request must be a JSON credential request", http.StatusBadRequest)
			return
		}
		if errs := validation.IsDNS1123Subdomain(req.Cluster); len(errs) > 0 || !validClusterID(req.ClusterID) || req.CSR == "" {
			http.Error(w, "cluster (a ManagedCluster name), clusterID (the kube-system namespace's UID) and csr are required", http.StatusBadRequest)
			return
		}
		id, status, msg := s.authorizeExchange(r, req)
		if status != 0 {
			http.Error(w, msg, status)
			return
		}
		now := time.Now()
		certPEM, notAfter, err := s.signer.Load().sign([]byte(req.CSR), id, s.opts.CredentialTTL, now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctrl.Log.WithName("tunnel").Info("Issued an agent credential", "cluster", id.Cluster, "clusterID", id.ClusterID)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(CredentialResponse{Certificate: string(certPEM), NotAfter: notAfter})
	})
}

// authorizeExchange decides whether the agent may get a credential for req.Cluster.
func (s *Server) authorizeExchange(r *http.Request, req CredentialRequest) (Identity, int, string) {
	info, err := s.opts.Lookup(r.Context(), req.Cluster)
	if err != nil {
		return Identity{}, http.StatusServiceUnavailable, "the hub cannot check the request right now"
	}
	id := Identity{Cluster: req.Cluster, UID: info.UID, ClusterID: req.ClusterID}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// Renewal with the current credential.
		cur, err := s.signer.Load().verify(r.TLS.PeerCertificates[0], time.Now())
		switch {
		case err != nil:
			return Identity{}, http.StatusUnauthorized, err.Error()
		case cur.Cluster != req.Cluster:
			msg := fmt.Sprintf("an agent holding the credential of cluster %s asked for a credential of %s", cur.Cluster, req.Cluster)
			s.reject(req.Cluster, ReasonClusterMismatch, msg)
			return Identity{}, http.StatusForbidden, msg
		case !info.Registered || info.UID != cur.UID:
			// A cluster being deleted keeps its tunnel, and so its credential,
			// until the hub has cleaned it up.
			return Identity{}, http.StatusForbidden, "the agent credential has been revoked; apply the cluster's current registration manifest"
		case cur.ClusterID != req.ClusterID:
			msg := fmt.Sprintf("the agent credential of cluster %s was issued to the cluster with kube-system UID %s, not %s", req.Cluster, cur.ClusterID, req.ClusterID)
			s.reject(req.Cluster, ReasonClusterMismatch, msg)
			return Identity{}, http.StatusForbidden, msg
		}
		return id, 0, ""
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !info.Registered || info.Deleting || info.Token == "" || !tokensEqual(token, info.Token) {
		if info.Registered && !info.Deleting {
			s.reject(req.Cluster, ReasonTokenRejected, "an agent presented a bootstrap token that is not the cluster's current one (wrong or revoked); apply the manifest from status.registration.command again")
		}
		// The same answer whether or not the cluster exists.
		return Identity{}, http.StatusUnauthorized, "unknown or revoked bootstrap token"
	}
	if info.ClusterID != "" && info.ClusterID != req.ClusterID {
		msg := fmt.Sprintf("ManagedCluster %s is the cluster with kube-system UID %s, but this agent runs in the cluster with UID %s: the registration manifest was applied to the wrong cluster, or its token was reused", req.Cluster, info.ClusterID, req.ClusterID)
		s.reject(req.Cluster, ReasonClusterMismatch, msg)
		return Identity{}, http.StatusConflict, msg
	}
	return id, 0, ""
}

// validClusterID accepts what a UID looks like (it goes into the credential, where
// ':' separates fields).
func validClusterID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-'
	}) < 0
}

// hijackWriter remembers the connection the websocket upgrade takes over, so that the
// hub can close a tunnel.
type hijackWriter struct {
	http.ResponseWriter
	conn atomic.Pointer[net.Conn]
	// upgraded: the upgrade's answer was written.
	upgraded atomic.Bool
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be taken over")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return c, rw, err
	}
	wc := net.Conn(&watchedConn{Conn: c, wrote: &h.upgraded})
	h.conn.Store(&wc)
	return wc, rw, nil
}

// watchedConn notes its first successful write.
type watchedConn struct {
	net.Conn
	wrote *atomic.Bool
}

func (c *watchedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil && n > 0 {
		c.wrote.Store(true)
	}
	return n, err
}
