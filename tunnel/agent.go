package tunnel

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/streaming/pkg/httpstream"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/drover-io/drover/render"
)

// AgentOptions configure the agent side of the tunnel.
type AgentOptions struct {
	// HubURL is where the hub server is (Secret drover-agent-hub, key url).
	HubURL string
	// HubCA verifies the hub server (key ca.crt); the system roots if empty.
	HubCA []byte
	// Cluster is the ManagedCluster this agent runs for (key cluster).
	Cluster string
	// Token is the bootstrap token (key token).
	Token string
	// Namespace holds the agent's credential Secret.
	Namespace string
	// Target is the agent's own cluster: its API server is the one address the hub
	// may reach through the tunnel.
	Target *rest.Config
	// MinBackoff and MaxBackoff bound the wait between connection attempts.
	MinBackoff, MaxBackoff time.Duration
	// ReconnectSpread bounds the random wait before reconnecting a tunnel that was
	// up: when a hub restarts, its agents come back spread over this time rather
	// than all at once (a thousand agents over 2 s: 500 a second).
	ReconnectSpread time.Duration
}

// Agent keeps the tunnel to the hub open.
type Agent struct {
	opts   AgentOptions
	cs     kubernetes.Interface
	proxy  *pipeListener
	hubTLS *tls.Config

	mu   sync.Mutex
	cred *tls.Certificate
	// notAfter is when the current credential expires; renewAt when the agent
	// next tries to renew it.
	notAfter, renewAt time.Time
	clusterID         string
	// refused: the hub refused the current credential; the stored copy is not
	// used again, the bootstrap token is.
	refused bool
}

// NewAgent checks the options and builds the forwarding proxy.
func NewAgent(o AgentOptions) (*Agent, error) {
	switch {
	case o.HubURL == "":
		return nil, errors.New("the hub URL is empty")
	case o.Cluster == "":
		return nil, errors.New("the cluster name is empty")
	case o.Target == nil:
		return nil, errors.New("no client configuration for the agent's cluster")
	}
	u, err := url.Parse(o.HubURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("the hub URL %q is not an http(s) URL", o.HubURL)
	}
	if o.Namespace == "" {
		o.Namespace = render.AgentNamespace
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.ReconnectSpread <= 0 {
		o.ReconnectSpread = 2 * time.Second
	}
	cs, err := kubernetes.NewForConfig(o.Target)
	if err != nil {
		return nil, err
	}
	a := &Agent{opts: o, cs: cs}
	roots, err := x509.SystemCertPool()
	if err != nil || len(o.HubCA) > 0 {
		roots = x509.NewCertPool()
	}
	if len(o.HubCA) > 0 && !roots.AppendCertsFromPEM(o.HubCA) {
		return nil, errors.New("the hub CA (key ca.crt) holds no PEM certificate")
	}
	a.hubTLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.cred == nil {
				return &tls.Certificate{}, nil
			}
			return a.cred, nil
		}}
	proxy, err := newAPIProxy(o.Target)
	if err != nil {
		return nil, err
	}
	a.proxy = newPipeListener()
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(a.proxy) }()
	return a, nil
}

// Run keeps the tunnel open until ctx is done, reconnecting with backoff and jitter.
func (a *Agent) Run(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("tunnel").WithValues("cluster", a.opts.Cluster, "hub", a.opts.HubURL)
	defer func() { _ = a.proxy.Close() }()
	backoff := newBackoff(a.opts.MinBackoff, a.opts.MaxBackoff)
	lastErr := ""
	for ctx.Err() == nil {
		connected, err := a.session(ctx, log)
		if ctx.Err() != nil {
			break
		}
		wait := backoff.next()
		if connected {
			// It was up: the hub (or the network) went away for everyone at once.
			backoff.reset()
			wait = jitter(a.opts.ReconnectSpread)
		}
		if err != nil && err.Error() != lastErr {
			// Logged when it changes, so a hub that is down for hours costs one line.
			log.Info("Tunnel to the hub is down; retrying with backoff", "error", err.Error())
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	log.Info("Tunnel stopped")
	return nil
}

// session obtains a credential and holds the tunnel until it fails. When the
// credential is renewed, it opens the next tunnel with the new one before the old one
// goes (the hub keeps the newest and closes the older), so renewal is no outage. It
// reports whether a tunnel was up.
func (a *Agent) session(ctx context.Context, log logr.Logger) (bool, error) {
	if err := a.ensureCredential(ctx); err != nil {
		return false, err
	}
	up := false
	var prevCancel context.CancelFunc
	defer func() {
		if prevCancel != nil {
			prevCancel()
		}
	}()
	for {
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		opened := make(chan struct{})
		go func() { done <- a.connect(sctx, func() { close(opened) }) }()
		a.mu.Lock()
		cred, renewAt := a.cred, a.renewAt
		a.mu.Unlock()
		timer := time.NewTimer(max(time.Until(renewAt), 0))
		renewed := false
		for !renewed {
			select {
			case <-opened:
				up, opened = true, nil
				log.Info("Tunnel to the hub is open")
				if prevCancel != nil {
					// The hub closes the previous tunnel once this one is up;
					// make sure it goes.
					time.AfterFunc(5*time.Second, prevCancel)
					prevCancel = nil
				}
			case err := <-done:
				timer.Stop()
				cancel()
				return up, a.describe(err)
			case <-timer.C:
				if err := a.ensureCredential(ctx); err != nil {
					cancel()
					return up, err
				}
				a.mu.Lock()
				renewed = a.cred != cred
				renewAt = a.renewAt
				a.mu.Unlock()
				if !renewed {
					timer.Reset(max(time.Until(renewAt), 0))
				}
			}
		}
		if prevCancel != nil {
			prevCancel()
		}
		prevCancel = cancel
	}
}

// connect holds one tunnel until it ends or ctx is done; opened is called once it is up.
func (a *Agent) connect(ctx context.Context, opened func()) error {
	u, _ := url.Parse(a.opts.HubURL)
	u.Scheme = map[string]string{"https": "wss", "http": "ws"}[u.Scheme]
	u.Path = strings.TrimSuffix(u.Path, "/") + Path
	dialer := &websocket.Dialer{TLSClientConfig: a.hubTLS, HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	headers := http.Header{ClusterHeader: {a.opts.Cluster}}
	local := func(ctx context.Context, network, address string) (net.Conn, error) {
		if !allowDial(network, address) {
			return nil, fmt.Errorf("the agent forwards only to its own API server, not %s", address)
		}
		return a.proxy.dial(ctx)
	}
	ws, resp, err := dialer.DialContext(ctx, u.String(), headers)
	if err != nil {
		if resp != nil {
			defer func() { _ = resp.Body.Close() }()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return &refusedError{status: resp.StatusCode, message: strings.TrimSpace(string(body))}
		}
		return err
	}
	defer func() { _ = ws.Close() }()
	session := remotedialer.NewClientSessionWithDialer(allowDial, ws, local)
	opened()
	done := make(chan error, 1)
	go func() {
		_, err := session.Serve(ctx)
		done <- err
	}()
	var result error
	select {
	case <-ctx.Done():
		// Closing the websocket ends Serve; the session is closed only after that.
		_ = ws.Close()
		if err := <-done; err != nil {
			ctrl.LoggerFrom(ctx).V(1).Info("Tunnel closed on stop", "error", err.Error())
		}
	case err := <-done:
		if err == nil {
			err = errors.New("the hub closed the tunnel")
		}
		result = err
	}
	// Only once Serve has returned: in remotedialer v0.4.1, Close racing with
	// Serve's start (startPings) is a data race (upstream #254).
	session.Close()
	return result
}

// refusedError: the hub answered the tunnel request with an error status.
type refusedError struct {
	status  int
	message string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("the hub refused the tunnel (%d): %s", e.status, e.message)
}

// allowDial is the one address the hub may reach through the tunnel.
func allowDial(proto, address string) bool { return proto == "tcp" && address == APIServerAddress }

// describe explains why a tunnel ended, and drops a credential the hub refused.
func (a *Agent) describe(err error) error {
	if err == nil {
		return errors.New("the hub closed the tunnel")
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		err = fmt.Errorf("the hub closed the tunnel: %s", ce.Text)
	}
	var refused *refusedError
	if errors.As(err, &refused) && (refused.status == http.StatusUnauthorized || refused.status == http.StatusForbidden) {
		// The hub refused the credential itself (not a hub that is starting or
		// cannot check it right now): drop it, so that the next attempt
		// exchanges the bootstrap token again (which may be the new one).
		a.mu.Lock()
		a.cred, a.refused = nil, true
		a.mu.Unlock()
	}
	return err
}

// ensureCredential loads the stored credential or gets a new one: by renewal when the
// current one is two-thirds through its life, by the bootstrap token when there is
// none.
func (a *Agent) ensureCredential(ctx context.Context) error {
	if a.clusterID == "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ns, err := a.cs.CoreV1().Namespaces().Get(rctx, metav1.NamespaceSystem, metav1.GetOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("cannot read namespace kube-system, which identifies this cluster to the hub: %w", err)
		}
		a.clusterID = string(ns.UID)
	}
	a.mu.Lock()
	have, refused := a.cred != nil, a.refused
	a.mu.Unlock()
	if !have && !refused {
		if err := a.loadStored(ctx); err == nil {
			have = true
		}
	}
	a.mu.Lock()
	renewAt, notAfter := a.renewAt, a.notAfter
	a.mu.Unlock()
	if have && time.Now().Before(renewAt) {
		return nil
	}
	err := a.exchange(ctx, have)
	if err != nil && have {
		// Renewal failed: try the bootstrap token, then keep the old credential
		// while it lasts and try again a little later.
		if err2 := a.exchange(ctx, false); err2 == nil {
			return nil
		}
		if left := time.Until(notAfter); left > 0 {
			ctrl.LoggerFrom(ctx).WithName("tunnel").Info("Cannot renew the agent credential yet; using it while it lasts", "cluster", a.opts.Cluster, "error", err.Error(), "notAfter", notAfter)
			a.mu.Lock()
			a.renewAt = time.Now().Add(min(left/4, time.Minute))
			a.mu.Unlock()
			return nil
		}
	}
	return err
}

// renewalTime is two-thirds into a credential's life.
func renewalTime(issued, notAfter time.Time) time.Time {
	return issued.Add(notAfter.Sub(issued) * 2 / 3)
}

// loadStored reads Secret drover-agent-credential.
func (a *Agent) loadStored(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := a.cs.CoreV1().Secrets(a.opts.Namespace).Get(rctx, render.AgentCredentialSecretName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	id, err := identityOf(leaf)
	if err != nil || id.Cluster != a.opts.Cluster || id.ClusterID != a.clusterID || time.Now().After(leaf.NotAfter) {
		return errors.New("the stored credential is not for this cluster, or has expired")
	}
	a.mu.Lock()
	// The hub back-dates NotBefore by five minutes for clock skew.
	a.cred, a.notAfter, a.renewAt = &cert, leaf.NotAfter, renewalTime(leaf.NotBefore.Add(5*time.Minute), leaf.NotAfter)
	a.mu.Unlock()
	return nil
}

// exchange asks the hub for a new credential, with the current one (renew) or the
// bootstrap token, and stores it.
func (a *Agent) exchange(ctx context.Context, renew bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "drover-agent:" + a.opts.Cluster}}, key)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(CredentialRequest{Cluster: a.opts.Cluster, ClusterID: a.clusterID,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))})
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, strings.TrimSuffix(a.opts.HubURL, "/")+CredentialPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	tlsCfg := a.hubTLS.Clone()
	tlsCfg.NextProtos = nil
	if !renew {
		if a.opts.Token == "" {
			return errors.New("no bootstrap token (Secret drover-agent-hub, key token) and no stored credential")
		}
		req.Header.Set("Authorization", "Bearer "+a.opts.Token)
		tlsCfg.GetClientCertificate = nil
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the hub at %s: %w", a.opts.HubURL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		what := "the bootstrap token"
		if renew {
			what = "the credential renewal"
		}
		return fmt.Errorf("the hub refused %s (%d): %s", what, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var out CredentialResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return fmt.Errorf("the hub's credential answer cannot be read: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		return fmt.Errorf("the hub's credential does not match the key: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.cred, a.notAfter, a.renewAt, a.refused = &cert, leaf.NotAfter, renewalTime(time.Now(), leaf.NotAfter), false
	a.mu.Unlock()
	ctrl.LoggerFrom(ctx).WithName("tunnel").Info("Got a new agent credential from the hub", "cluster", a.opts.Cluster, "renewal", renew, "notAfter", leaf.NotAfter)
	if err := a.store(ctx, []byte(out.Certificate), keyPEM); err != nil {
		// Kept in memory; the next start exchanges again if the token still works.
		ctrl.LoggerFrom(ctx).WithName("tunnel").Info("Cannot store the agent credential in the cluster", "secret", a.opts.Namespace+"/"+render.AgentCredentialSecretName, "error", err.Error())
	}
	return nil
}

// store writes the credential to Secret drover-agent-credential.
func (a *Agent) store(ctx context.Context, certPEM, keyPEM []byte) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	secrets := a.cs.CoreV1().Secrets(a.opts.Namespace)
	s, err := secrets.Get(rctx, render.AgentCredentialSecretName, metav1.GetOptions{})
	data := map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(rctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: render.AgentCredentialSecretName, Namespace: a.opts.Namespace,
				Labels: map[string]string{render.ComponentLabel: render.AgentComponent}},
			Type: corev1.SecretTypeTLS, Data: data}, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	}
	s.Data = data
	_, err = secrets.Update(rctx, s, metav1.UpdateOptions{})
	return err
}

// newAPIProxy forwards the hub's requests to the agent's API server with the agent's
// own credentials. The hub sends none of its own.
//
// Connection upgrades (exec, attach, port-forward through the authentication proxy)
// go over HTTP/1.1: Go's HTTP/2 transport refuses an Upgrade header other than
// websocket's, and an API server offers HTTP/2, so SPDY upgrades would fail.
func newAPIProxy(cfg *rest.Config) (http.Handler, error) {
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	h1 := rest.CopyConfig(cfg)
	h1.NextProtos = []string{"http/1.1"}
	upgrades, err := rest.TransportFor(h1)
	if err != nil {
		return nil, err
	}
	target, err := url.Parse(cfg.Host)
	if err != nil || target.Host == "" {
		return nil, fmt.Errorf("the agent's API server URL %q cannot be used", cfg.Host)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			pr.Out.Header.Del("Authorization")
		},
		Transport:     upgradeRouter{plain: transport, upgrades: upgrades},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "the agent cannot reach its API server: "+err.Error(), http.StatusBadGateway)
		},
	}, nil
}

// upgradeRouter sends upgrade requests through an HTTP/1.1-only transport.
type upgradeRouter struct{ plain, upgrades http.RoundTripper }

func (u upgradeRouter) RoundTrip(r *http.Request) (*http.Response, error) {
	if httpstream.IsUpgradeRequest(r) {
		return u.upgrades.RoundTrip(r)
	}
	return u.plain.RoundTrip(r)
}

// pipeListener is an in-memory listener: the tunnel's connections to the API server
// address are handed to the forwarding proxy without touching the network.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, errors.New("the agent is stopping")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return APIServerAddress }

// backoff is exponential backoff with full jitter: a thousand agents that lost the
// hub at the same moment come back spread over the whole interval, not together.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(minD, maxD time.Duration) *backoff { return &backoff{min: minD, max: maxD, cur: minD} }

func (b *backoff) reset() { b.cur = b.min }

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(max(d, 1))))
	if err != nil {
		return d / 2
	}
	return time.Duration(n.Int64())
}

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d)))
	if err != nil {
		return d
	}
	// Between half and all of d: never a tight loop, never all at once.
	return d/2 + time.Duration(n.Int64())/2
}
