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
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

const testNS = "drover-system"

func TestMain(m *testing.M) {
	// The package logs through controller-runtime and remotedialer through logrus;
	// neither says anything a failing test would need.
	ctrl.SetLogger(logr.Discard())
	logrus.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newCSR returns a new key and a PEM certificate request for it.
func newCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "test-agent"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseCertPEM(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", p)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// keyPair turns a key and a PEM certificate into a TLS client certificate.
func keyPair(t *testing.T, key *ecdsa.PrivateKey, certPEM []byte) tls.Certificate {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// newTestSigner loads a signer from a fresh fake API server.
func newTestSigner(t *testing.T) *signer {
	t.Helper()
	c := fake.NewClientBuilder().Build()
	s, err := loadSigner(context.Background(), c, c, testNS)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// credentialFrom signs a credential directly with s, bypassing the hub's checks.
func credentialFrom(t *testing.T, s *signer, id Identity, ttl time.Duration, now time.Time) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, csr := newCSR(t)
	certPEM, _, err := s.sign(csr, id, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, key, certPEM), parseCertPEM(t, certPEM)
}

type rejection struct{ cluster, reason, message string }

type change struct {
	cluster string
	open    bool
}

// testHub is a Server behind a TLS test server configured as the hub server is:
// client certificates are requested, not required.
type testHub struct {
	srv   *Server
	ts    *httptest.Server
	roots *x509.CertPool
	caPEM []byte
	// tunnelsServed counts ServeHTTP calls that returned.
	tunnelsServed atomic.Int32
	// lookupsFailed counts the lookups that returned lookupErr.
	lookupsFailed atomic.Int32

	mu        sync.Mutex
	clusters  map[string]ClusterInfo
	lookupErr error
	rejects   []rejection
	changes   []change
	exchanges []*http.Request
}

type hubOptions struct {
	noStart bool
	ttl     time.Duration
}

func newTestHub(t *testing.T, o hubOptions) *testHub {
	t.Helper()
	c := fake.NewClientBuilder().Build()
	h := &testHub{clusters: map[string]ClusterInfo{}}
	h.srv = NewServer(ServerOptions{Namespace: testNS, Reader: c, Writer: c, CredentialTTL: o.ttl,
		Lookup: func(_ context.Context, cluster string) (ClusterInfo, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.lookupErr != nil {
				h.lookupsFailed.Add(1)
				return ClusterInfo{}, h.lookupErr
			}
			return h.clusters[cluster], nil
		},
		OnChange: func(cluster string, open bool) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.changes = append(h.changes, change{cluster, open})
		},
		Reject: func(cluster, reason, message string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.rejects = append(h.rejects, rejection{cluster, reason, message})
		},
	})
	mux := http.NewServeMux()
	credentials := h.srv.CredentialHandler()
	mux.Handle("POST "+CredentialPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.exchanges = append(h.exchanges, r)
		h.mu.Unlock()
		credentials.ServeHTTP(w, r)
	}))
	mux.Handle("GET "+Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.srv.ServeHTTP(w, r)
		h.tunnelsServed.Add(1)
	}))
	h.ts = httptest.NewUnstartedServer(mux)
	h.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	h.ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	h.ts.StartTLS()
	t.Cleanup(h.ts.Close)
	h.roots = x509.NewCertPool()
	h.roots.AddCert(h.ts.Certificate())
	h.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.ts.Certificate().Raw})
	if !o.noStart {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.srv.Start(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Start: %v", err)
			}
		})
		eventually(t, 10*time.Second, h.srv.Ready, "the server never became ready")
	}
	return h
}

func (h *testHub) set(cluster string, info ClusterInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clusters[cluster] = info
}

func (h *testHub) setAll(m map[string]ClusterInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clusters = map[string]ClusterInfo{}
	for k, v := range m {
		h.clusters[k] = v
	}
}

func (h *testHub) setLookupErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lookupErr = err
}

func (h *testHub) takeRejects() []rejection {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rejects
	h.rejects = nil
	return r
}

func (h *testHub) changesSeen() []change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]change(nil), h.changes...)
}

func (h *testHub) exchangesSeen() []*http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*http.Request(nil), h.exchanges...)
}

// lastChange is the last state OnChange reported for cluster, and whether it reported
// any.
func (h *testHub) lastChange(cluster string) (open, reported bool) {
	for _, c := range h.changesSeen() {
		if c.cluster == cluster {
			open, reported = c.open, true
		}
	}
	return open, reported
}

// reportsOpen reports whether the last OnChange for cluster said open.
func (h *testHub) reportsOpen(cluster string) bool {
	open, reported := h.lastChange(cluster)
	return open && reported
}

// reportsClosed reports whether the last OnChange for cluster said closed.
func (h *testHub) reportsClosed(cluster string) bool {
	open, reported := h.lastChange(cluster)
	return !open && reported
}

func (h *testHub) countChanges(cluster string, open bool) int {
	n := 0
	for _, c := range h.changesSeen() {
		if c.cluster == cluster && c.open == open {
			n++
		}
	}
	return n
}

func (h *testHub) tlsConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: h.roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// post sends body to the credential endpoint, with authorization (the whole header
// value) unless empty and cert as the client certificate unless nil.
func (h *testHub) post(t *testing.T, body []byte, authorization string, cert *tls.Certificate) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.ts.URL+CredentialPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.tlsConfig(cert), DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(data)
}

func credentialBody(t *testing.T, cluster, clusterID string, csr []byte) []byte {
	t.Helper()
	b, err := json.Marshal(CredentialRequest{Cluster: cluster, ClusterID: clusterID, CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// issue exchanges token for a credential of cluster, as an agent in clusterID.
func (h *testHub) issue(t *testing.T, cluster, clusterID, token string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, csr := newCSR(t)
	resp, body := h.post(t, credentialBody(t, cluster, clusterID, csr), "Bearer "+token, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("credential exchange for %s: %d %s", cluster, resp.StatusCode, body)
	}
	var out CredentialResponse
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	return keyPair(t, key, []byte(out.Certificate)), parseCertPEM(t, []byte(out.Certificate))
}

func (h *testHub) wsURL() string { return "wss" + strings.TrimPrefix(h.ts.URL, "https") + Path }

// openTunnel attempts the websocket handshake and closes the connection at once if it
// succeeds. It returns the handshake's HTTP status and body.
func (h *testHub) openTunnel(t *testing.T, cert *tls.Certificate, header http.Header) (int, string) {
	t.Helper()
	d := &websocket.Dialer{TLSClientConfig: h.tlsConfig(cert), HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(h.wsURL(), header)
	if err == nil {
		_ = ws.Close()
	} else if !errors.Is(err, websocket.ErrBadHandshake) {
		t.Fatalf("websocket dial: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// fakeAgent is a remotedialer client holding a tunnel with a credential; the hub's
// connections to APIServerAddress are served by handler, nothing else is allowed.
type fakeAgent struct {
	cancel context.CancelFunc
	// done is closed when the agent's connection ended.
	done chan struct{}
}

func (h *testHub) connect(t *testing.T, cert tls.Certificate, cluster string, handler http.Handler) *fakeAgent {
	t.Helper()
	pl := newPipeListener()
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(pl) }()
	allow := func(proto, address string) bool { return proto == "tcp" && address == APIServerAddress }
	local := func(ctx context.Context, network, address string) (net.Conn, error) {
		if !allow(network, address) {
			return nil, errors.New("refused")
		}
		return pl.dial(ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &fakeAgent{cancel: cancel, done: make(chan struct{})}
	d := &websocket.Dialer{TLSClientConfig: h.tlsConfig(&cert), HandshakeTimeout: 10 * time.Second}
	go func() {
		defer close(a.done)
		_ = remotedialer.ConnectToProxyWithDialer(ctx, h.wsURL(), http.Header{ClusterHeader: {cluster}}, allow, d, local, nil)
	}()
	t.Cleanup(func() {
		// End the tunnel from the hub's side: remotedialer v0.4.1 races with itself
		// when a client session is cancelled (rancher/remotedialer#254, #269).
		h.srv.Close(cluster)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			cancel()
			<-a.done
		}
		cancel()
		_ = hs.Close()
		_ = pl.Close()
	})
	return a
}

// trackingDialer remembers the connections it made, to close them itself.
type trackingDialer struct {
	dial  func(ctx context.Context, network, address string) (net.Conn, error)
	mu    sync.Mutex
	conns []net.Conn
}

func (d *trackingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.dial(ctx, network, address)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *trackingDialer) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}

// get fetches path from the cluster's API server address through its tunnel. The
// connection is kept alive by both ends and closed by the hub when the answer is read,
// so that it is gone from both ends of the tunnel before a test closes the tunnel
// (remotedialer v0.4.1 races when a session closes with connections closing in it).
func (h *testHub) get(cluster, path string, header http.Header) (int, string, error) {
	d := &trackingDialer{dial: h.srv.Dialer(cluster)}
	defer d.closeAll()
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+APIServerAddress+path, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
