package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/drover-io/drover/render"
)

func TestBackoff(t *testing.T) {
	const minD, maxD = 100 * time.Millisecond, time.Second
	b := newBackoff(minD, maxD)
	// The interval doubles up to max, and each wait is between half and all of it.
	for i, d := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		d *= time.Millisecond
		if got := b.next(); got < d/2 || got > d {
			t.Fatalf("wait %d: %v, want within [%v, %v]", i, got, d/2, d)
		}
	}
	b.reset()
	if got := b.next(); got < minD/2 || got > minD {
		t.Fatalf("after reset: %v, want within [%v, %v]", got, minD/2, minD)
	}
	if got := b.next(); got < minD || got > 2*minD {
		t.Fatalf("second after reset: %v, want within [%v, %v]", got, minD, 2*minD)
	}
	// Jitter: a thousand agents do not all wait the same.
	seen := map[time.Duration]bool{}
	for range 50 {
		w := newBackoff(time.Second, time.Second).next()
		if w < time.Second/2 || w > time.Second {
			t.Fatalf("wait %v out of [0.5s, 1s]", w)
		}
		seen[w] = true
	}
	if len(seen) < 10 {
		t.Fatalf("%d different waits in 50: no jitter", len(seen))
	}
}

func TestRenewalTime(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, want := renewalTime(issued, issued.Add(24*time.Hour)), issued.Add(16*time.Hour); !got.Equal(want) {
		t.Fatalf("renewal at %v, want %v", got, want)
	}
	if got, want := renewalTime(issued, issued.Add(3*time.Second)), issued.Add(2*time.Second); !got.Equal(want) {
		t.Fatalf("renewal at %v, want %v", got, want)
	}
}

func TestAllowDial(t *testing.T) {
	cases := []struct {
		proto, address string
		want           bool
	}{
		{"tcp", APIServerAddress, true},
		{"tcp", "kubernetes.drover-tunnel:80", true},
		{"udp", APIServerAddress, false},
		{"tcp4", APIServerAddress, false},
		{"unix", APIServerAddress, false},
		{"tcp", APIServerHost, false},
		{"tcp", "kubernetes.drover-tunnel:443", false},
		{"tcp", "kubernetes.default.svc:443", false},
		{"tcp", "10.96.0.1:443", false},
		{"tcp", "127.0.0.1:80", false},
		{"tcp", "169.254.169.254:80", false},
		{"tcp", "KUBERNETES.DROVER-TUNNEL:80", false},
		{"tcp", "", false},
	}
	for _, tc := range cases {
		if got := allowDial(tc.proto, tc.address); got != tc.want {
			t.Errorf("allowDial(%q, %q) = %v, want %v", tc.proto, tc.address, got, tc.want)
		}
	}
}

func TestPipeListener(t *testing.T) {
	l := newPipeListener()
	if l.Addr().Network() != "pipe" || l.Addr().String() != APIServerAddress {
		t.Errorf("address %s/%s", l.Addr().Network(), l.Addr())
	}

	// A dial is answered by Accept, and the two ends talk to each other.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err := l.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	go func() { _, _ = client.Write([]byte("ping")) }()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	go func() { _, _ = server.Write([]byte("pong")) }()
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	_ = client.Close()
	if _, err := server.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("server read after the client closed: %v", err)
	}

	// Nobody accepts: the dial ends with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.dial(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial nobody accepts: %v", err)
	}

	// Closed: Accept and dial fail, whether waiting already or not, and Close is
	// idempotent.
	waiting := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		waiting <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiting Accept after Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := l.dial(context.Background()); err == nil {
		t.Fatal("dial after Close succeeded")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewAgentChecksItsOptions(t *testing.T) {
	target := &rest.Config{Host: "https://10.0.0.1:6443"}
	cases := []struct {
		name string
		o    AgentOptions
		want string
	}{
		{"no hub URL", AgentOptions{Cluster: "alpha", Target: target}, "hub URL is empty"},
		{"no cluster", AgentOptions{HubURL: "https://hub.example.com", Target: target}, "cluster name is empty"},
		{"no target", AgentOptions{HubURL: "https://hub.example.com", Cluster: "alpha"}, "no client configuration"},
		{"hub URL not http(s)", AgentOptions{HubURL: "ftp://hub.example.com", Cluster: "alpha", Target: target}, "not an http(s) URL"},
		{"hub URL websocket", AgentOptions{HubURL: "wss://hub.example.com", Cluster: "alpha", Target: target}, "not an http(s) URL"},
		{"hub URL without scheme", AgentOptions{HubURL: "hub.example.com:443", Cluster: "alpha", Target: target}, "not an http(s) URL"},
		{"hub URL without host", AgentOptions{HubURL: "https://", Cluster: "alpha", Target: target}, "not an http(s) URL"},
		{"hub URL unparseable", AgentOptions{HubURL: "https://hub example.com/%zz", Cluster: "alpha", Target: target}, "not an http(s) URL"},
		{"hub CA not PEM", AgentOptions{HubURL: "https://hub.example.com", Cluster: "alpha", Target: target, HubCA: []byte("not a certificate")}, "holds no PEM certificate"},
		{"target without host", AgentOptions{HubURL: "https://hub.example.com", Cluster: "alpha", Target: &rest.Config{}}, "cannot be used"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAgent(tc.o)
			if err == nil {
				_ = a.proxy.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one with %q", err, tc.want)
			}
		})
	}
}

func TestNewAgentDefaults(t *testing.T) {
	h := newTestHub(t, hubOptions{noStart: true})
	cases := []struct {
		name       string
		in         AgentOptions
		ns         string
		minD, maxD time.Duration
		onlyHubCA  bool
	}{
		{"defaults", AgentOptions{}, render.AgentNamespace, 500 * time.Millisecond, 30 * time.Second, false},
		{"given", AgentOptions{Namespace: "elsewhere", MinBackoff: time.Second, MaxBackoff: time.Minute, HubCA: h.caPEM}, "elsewhere", time.Second, time.Minute, true},
		{"max below min", AgentOptions{MinBackoff: 2 * time.Minute, MaxBackoff: time.Second}, render.AgentNamespace, 2 * time.Minute, 2 * time.Minute, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.in
			o.HubURL, o.Cluster, o.Target = "https://hub.example.com/", "alpha", &rest.Config{Host: "https://10.0.0.1:6443"}
			a, err := NewAgent(o)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = a.proxy.Close() }()
			if a.opts.Namespace != tc.ns || a.opts.MinBackoff != tc.minD || a.opts.MaxBackoff != tc.maxD {
				t.Errorf("namespace %q, backoff %v..%v; want %q, %v..%v", a.opts.Namespace, a.opts.MinBackoff, a.opts.MaxBackoff, tc.ns, tc.minD, tc.maxD)
			}
			if a.hubTLS.MinVersion < tls.VersionTLS12 || len(a.hubTLS.NextProtos) != 1 || a.hubTLS.NextProtos[0] != "http/1.1" {
				t.Errorf("hub TLS: min version %x, protocols %v", a.hubTLS.MinVersion, a.hubTLS.NextProtos)
			}
			// The hub's own CA is trusted, and nothing else; the system roots without one.
			if got := a.hubTLS.RootCAs.Equal(h.roots); got != tc.onlyHubCA {
				t.Errorf("roots are exactly the hub CA: %v, want %v", got, tc.onlyHubCA)
			}
			// No credential yet: the hub is offered none.
			if c, err := a.hubTLS.GetClientCertificate(nil); err != nil || len(c.Certificate) != 0 {
				t.Errorf("client certificate without a credential: %v, %v", c, err)
			}
		})
	}
}

func TestAPIProxy(t *testing.T) {
	var mu sync.Mutex
	var seen *http.Request
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Clone(context.Background())
		mu.Unlock()
		_, _ = fmt.Fprintf(w, "backend %s", r.URL.RequestURI())
	}))
	defer backend.Close()
	proxy, err := newAPIProxy(&rest.Config{Host: backend.URL + "/prefix", BearerToken: "agent-sa-token"})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	req, _ := http.NewRequest(http.MethodGet, front.URL+"/api/v1/pods?limit=1", nil)
	req.Host = APIServerHost
	req.Header.Set("Authorization", "Bearer hub-secret")
	req.Header.Set("Impersonate-User", "someone")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "backend /prefix/api/v1/pods?limit=1" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	u, _ := url.Parse(backend.URL)
	// The agent's own credentials, never the hub's; the API server's own host.
	if got := seen.Header.Get("Authorization"); got != "Bearer agent-sa-token" {
		t.Errorf("Authorization %q", got)
	}
	if seen.Host != u.Host {
		t.Errorf("Host %q, want %q", seen.Host, u.Host)
	}
	if got := seen.Header.Get("Impersonate-User"); got != "someone" {
		t.Errorf("Impersonate-User %q: the hub's other headers are forwarded", got)
	}

	// The API server is down: 502, saying so.
	backend.Close()
	resp, err = http.Get(front.URL + "/version")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "cannot reach its API server") {
		t.Fatalf("API server down: %d %q", resp.StatusCode, body)
	}
}

// fakeCluster is the API server of the agent's own cluster: namespace kube-system, the
// agent's credential Secret, and any other path answered with its name.
type fakeCluster struct {
	ts  *httptest.Server
	uid string

	mu      sync.Mutex
	secret  *corev1.Secret
	writes  int
	proxied []*http.Request
}

func newFakeCluster(t *testing.T, uid string) *fakeCluster {
	f := &fakeCluster{uid: uid}
	f.ts = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.ts.Close)
	return f
}

const agentNS = "drover-agent-test"

func (f *fakeCluster) serve(w http.ResponseWriter, r *http.Request) {
	secretPath := "/api/v1/namespaces/" + agentNS + "/secrets"
	writeJSON := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	notFound := func() {
		writeJSON(404, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
			Reason: metav1.StatusReasonNotFound, Code: 404, Message: "not found"})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/namespaces/kube-system":
		writeJSON(200, corev1.Namespace{TypeMeta: metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "kube-system", UID: types.UID(f.uid)}})
	case r.Method == http.MethodGet && r.URL.Path == secretPath+"/"+render.AgentCredentialSecretName:
		if f.secret == nil {
			notFound()
			return
		}
		writeJSON(200, f.secret)
	case (r.Method == http.MethodPost && r.URL.Path == secretPath) || (r.Method == http.MethodPut && r.URL.Path == secretPath+"/"+render.AgentCredentialSecretName):
		// client-go sends protobuf.
		var s corev1.Secret
		data, _ := io.ReadAll(r.Body)
		if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, &s); err != nil {
			writeJSON(400, metav1.Status{Status: metav1.StatusFailure, Code: 400, Message: err.Error()})
			return
		}
		s.Kind, s.APIVersion, s.ResourceVersion = "Secret", "v1", fmt.Sprint(f.writes+1)
		f.secret = &s
		f.writes++
		writeJSON(map[string]int{http.MethodPost: 201, http.MethodPut: 200}[r.Method], &s)
	default:
		f.proxied = append(f.proxied, r.Clone(context.Background()))
		_, _ = fmt.Fprintf(w, "target-apiserver %s %s", r.Method, r.URL.Path)
	}
}

func (f *fakeCluster) stored() (*corev1.Secret, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.secret, f.writes
}

func (f *fakeCluster) lastProxied() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.proxied) == 0 {
		return nil
	}
	return f.proxied[len(f.proxied)-1]
}

// runAgent starts an agent for cluster against h until the test ends.
func runAgent(t *testing.T, h *testHub, f *fakeCluster, cluster, token string) *runningAgent {
	t.Helper()
	a, err := NewAgent(AgentOptions{HubURL: h.ts.URL, HubCA: h.caPEM, Cluster: cluster, Token: token, Namespace: agentNS,
		Target:     &rest.Config{Host: f.ts.URL, BearerToken: "agent-sa-token"},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), logr.Discard()))
	r := &runningAgent{h: h, cluster: cluster, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

type runningAgent struct {
	h       *testHub
	cluster string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// stop turns the agent away at the hub, closes its tunnel from the hub's side, then
// stops it: remotedialer v0.4.1 races with itself when a client session is cancelled
// (rancher/remotedialer#254, #269).
func (r *runningAgent) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.h.set(r.cluster, ClusterInfo{})
	deadline := time.Now().Add(5 * time.Second)
	for r.h.srv.HasTunnel(r.cluster) && time.Now().Before(deadline) {
		r.h.srv.Close(r.cluster)
		time.Sleep(20 * time.Millisecond)
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Run did not return after its context ended")
	}
}

// readsNothing reports whether conn yields no byte before failing.
func readsNothing(conn net.Conn) bool {
	got := make(chan bool, 1)
	go func() {
		n, _ := conn.Read(make([]byte, 1))
		got <- n == 0
	}()
	select {
	case ok := <-got:
		return ok
	case <-time.After(5 * time.Second):
		_ = conn.Close()
		return false
	}
}

func TestAgentEndToEnd(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	runAgent(t, h, f, "alpha", tokAlpha)
	eventually(t, 10*time.Second, func() bool { return h.reportsOpen("alpha") }, "the tunnel never opened: %+v", h.changesSeen())

	// The agent exchanged its bootstrap token, without a client certificate.
	ex := h.exchangesSeen()
	if len(ex) != 1 || ex[0].Header.Get("Authorization") != "Bearer "+tokAlpha || len(ex[0].TLS.PeerCertificates) != 0 {
		t.Fatalf("credential exchanges: %d", len(ex))
	}
	// ... and stored the credential in its cluster.
	sec, _ := f.stored()
	if sec == nil || sec.Type != corev1.SecretTypeTLS || sec.Labels[render.ComponentLabel] != render.AgentComponent {
		t.Fatalf("stored credential %+v", sec)
	}
	id, err := h.srv.signer.Load().verify(parseCertPEM(t, sec.Data[corev1.TLSCertKey]), time.Now())
	if err != nil || id.Cluster != "alpha" || id.UID != "uid-alpha" || id.ClusterID != "cid-alpha" {
		t.Fatalf("stored credential names %+v, %v", id, err)
	}
	if _, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]); err != nil {
		t.Fatalf("the stored key does not match the credential: %v", err)
	}

	// The hub reaches the agent's API server, with the agent's credentials.
	status, body, err := h.get("alpha", "/api/v1/namespaces/default/pods", http.Header{"Authorization": {"Bearer hub-secret"}})
	if err != nil || status != 200 || body != "target-apiserver GET /api/v1/namespaces/default/pods" {
		t.Fatalf("GET through the tunnel: %d %q %v", status, body, err)
	}
	if got := f.lastProxied().Header.Get("Authorization"); got != "Bearer agent-sa-token" {
		t.Fatalf("the API server saw Authorization %q", got)
	}

	// ... and nothing else: not even the API server's real address.
	u, _ := url.Parse(f.ts.URL)
	for _, target := range [][2]string{{"tcp", u.Host}, {"udp", APIServerAddress}, {"tcp", "kubernetes.default.svc:443"}} {
		conn, err := h.srv.Dialer("alpha")(context.Background(), target[0], target[1])
		if err == nil {
			if !readsNothing(conn) {
				t.Fatalf("%s %s reached through the tunnel", target[0], target[1])
			}
			_ = conn.Close()
		}
		// Whatever the refusal did to the tunnel, the agent's API server is reachable.
		eventually(t, 10*time.Second, func() bool {
			_, body, err := h.get("alpha", "/version", nil)
			return err == nil && body == "target-apiserver GET /version"
		}, "the API server is not reachable after a refused dial of %s", target[1])
	}
	if r := h.takeRejects(); len(r) != 0 {
		t.Errorf("events %+v", r)
	}
}

// startAgentOnce runs an agent for alpha until its tunnel is open, then stops it,
// leaving its credential in f.
func startAgentOnce(t *testing.T, h *testHub, f *fakeCluster) {
	t.Helper()
	r := runAgent(t, h, f, "alpha", tokAlpha)
	eventually(t, 10*time.Second, func() bool { return h.reportsOpen("alpha") }, "the first tunnel never opened: %+v", h.changesSeen())
	r.stop(t)
	if sec, _ := f.stored(); sec == nil {
		t.Fatal("no credential stored")
	}
}

func storedIdentity(t *testing.T, f *fakeCluster) Identity {
	t.Helper()
	sec, _ := f.stored()
	if sec == nil {
		t.Fatal("no credential stored")
	}
	id, err := identityOf(parseCertPEM(t, sec.Data[corev1.TLSCertKey]))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A restarted agent reconnects with the credential it stored, without its token,
// which may have been revoked meanwhile (docs/registration.md: the token only lets an
// agent join).
func TestAgentReconnectsWithItsStoredCredential(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	startAgentOnce(t, h, f)
	revoked := baseClusters()["alpha"]
	revoked.Token = ""
	h.set("alpha", revoked)
	runAgent(t, h, f, "alpha", tokAlpha)
	eventually(t, 10*time.Second, func() bool { return h.srv.HasTunnel("alpha") }, "the restarted agent never reconnected: %+v", h.changesSeen())
	if n := len(h.exchangesSeen()); n != 1 {
		t.Errorf("%d credential exchanges, want only the first agent's", n)
	}
	if r := h.takeRejects(); len(r) != 0 {
		t.Errorf("events %+v", r)
	}
}

// A credential stored for another cluster (the Secret copied, the cluster rebuilt) is
// not used: the agent exchanges its token.
func TestAgentIgnoresAStoredCredentialOfAnotherCluster(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	startAgentOnce(t, h, f)

	f.mu.Lock()
	f.uid = "cid-rebuilt"
	f.mu.Unlock()
	fresh := baseClusters()["alpha"]
	fresh.ClusterID = ""
	h.set("alpha", fresh)
	runAgent(t, h, f, "alpha", tokAlpha)
	eventually(t, 10*time.Second, func() bool { return h.srv.HasTunnel("alpha") }, "the agent never reconnected: %+v", h.changesSeen())
	ex := h.exchangesSeen()
	if len(ex) != 2 || ex[1].Header.Get("Authorization") != "Bearer "+tokAlpha {
		t.Fatalf("%d credential exchanges, want a second one with the token", len(ex))
	}
	if id := storedIdentity(t, f); id.ClusterID != "cid-rebuilt" {
		t.Fatalf("stored credential names %+v", id)
	}
}

// Deleted and registered again: the stored credential is revoked, the agent goes
// back to its (new) bootstrap token.
func TestAgentGoesBackToItsTokenWhenItsCredentialIsRevoked(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	startAgentOnce(t, h, f)

	const newToken = "alpha-second-bootstrap-token-9d8c7b6a"
	h.set("alpha", ClusterInfo{Registered: true, UID: "uid-alpha-2", Token: newToken})
	runAgent(t, h, f, "alpha", newToken)
	eventually(t, 10*time.Second, func() bool { return h.srv.HasTunnel("alpha") },
		"the agent never reconnected after its ManagedCluster was created again: %+v", h.changesSeen())
	if id := storedIdentity(t, f); id.UID != "uid-alpha-2" {
		t.Fatalf("stored credential names %+v", id)
	}
}

// A wrong token: no tunnel, an event on the cluster, retries with backoff, and the
// token is never echoed.
func TestAgentWithAWrongToken(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	runAgent(t, h, f, "alpha", tokWrong)
	eventually(t, 10*time.Second, func() bool { return len(h.exchangesSeen()) >= 3 }, "the agent does not retry")
	if _, reported := h.lastChange("alpha"); reported || h.srv.HasTunnel("alpha") {
		t.Fatal("a tunnel opened with a wrong token")
	}
	if sec, _ := f.stored(); sec != nil {
		t.Fatal("a credential was stored")
	}
	rejects := h.takeRejects()
	if len(rejects) == 0 {
		t.Fatal("no event")
	}
	for _, r := range rejects {
		if r.cluster != "alpha" || r.reason != ReasonTokenRejected || strings.Contains(r.message, tokWrong) || strings.Contains(r.message, tokAlpha) {
			t.Fatalf("event %+v", r)
		}
	}
}

// Two-thirds into its credential's life the agent renews it, with the credential, and
// opens the next tunnel before the old one goes: the cluster never looks disconnected.
func TestAgentRenewsItsCredentialWithoutAnOutage(t *testing.T) {
	h := newTestHub(t, hubOptions{ttl: 3 * time.Second})
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	runAgent(t, h, f, "alpha", tokAlpha)
	eventually(t, 10*time.Second, func() bool { return h.reportsOpen("alpha") }, "the tunnel never opened: %+v", h.changesSeen())
	if _, body, err := h.get("alpha", "/version", nil); err != nil || !strings.HasPrefix(body, "target-apiserver") {
		t.Fatalf("GET through the tunnel: %q %v", body, err)
	}
	first := storedIdentity(t, f).NotAfter

	eventually(t, 10*time.Second, func() bool { return len(h.exchangesSeen()) >= 2 }, "the credential was never renewed")
	renewal := h.exchangesSeen()[1]
	if renewal.Header.Get("Authorization") != "" || len(renewal.TLS.PeerCertificates) == 0 {
		t.Fatal("the renewal did not use the current credential")
	}
	eventually(t, 5*time.Second, func() bool { _, n := f.stored(); return n >= 2 }, "the renewed credential was not stored")
	// The next tunnel opens with it, and the older closes (and the hub does not close
	// the newer when the first credential expires).
	eventually(t, 10*time.Second, func() bool { return time.Now().After(first.Add(500 * time.Millisecond)) }, "")
	if !h.srv.HasTunnel("alpha") {
		t.Fatal("no tunnel after the first credential expired")
	}
	if _, body, err := h.get("alpha", "/version", nil); err != nil || !strings.HasPrefix(body, "target-apiserver") {
		t.Fatalf("GET through the renewed tunnel: %q %v", body, err)
	}
	if h.countChanges("alpha", false) != 0 {
		t.Fatalf("the renewal was reported as a disconnection: %+v", h.changesSeen())
	}
	if r := h.takeRejects(); len(r) != 0 {
		t.Errorf("events %+v", r)
	}
}

// The hub answering 503 for a moment (a restarting replica, its cache not synced yet)
// is no reason for the agent to give up a valid credential: once the hub is back, the
// agent reconnects, even though its bootstrap token has been revoked since it joined
// (docs/registration.md: the token only lets an agent join).
func TestAgentKeepsItsCredentialThroughABriefHubOutage(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	revoked := baseClusters()
	alpha := revoked["alpha"]
	alpha.Token = ""
	revoked["alpha"] = alpha
	h.setAll(baseClusters())
	f := newFakeCluster(t, "cid-alpha")
	runAgent(t, h, f, "alpha", tokAlpha)
	eventually(t, 10*time.Second, func() bool { return h.reportsOpen("alpha") }, "the tunnel never opened: %+v", h.changesSeen())
	h.setAll(revoked)

	// The tunnel drops, and the hub cannot check credentials for a moment.
	h.setLookupErr(errors.New("the cache is not synced yet"))
	h.srv.Close("alpha")
	eventually(t, 10*time.Second, func() bool { return h.lookupsFailed.Load() >= 2 }, "the agent did not try again")
	h.setLookupErr(nil)

	exchanges := len(h.exchangesSeen())
	h.takeRejects()
	// With a backoff of 10-50 ms, the agent has had a hundred tries in 5 s.
	deadline := time.Now().Add(5 * time.Second)
	for !h.srv.HasTunnel("alpha") {
		if time.Now().After(deadline) {
			reasons := map[string]int{}
			for _, r := range h.takeRejects() {
				reasons[r.reason]++
			}
			t.Fatalf("the agent never reconnected after a 503 from the hub: it dropped its valid credential and "+
				"has been exchanging its revoked bootstrap token since (%d exchanges in 5 s, events %v)", len(h.exchangesSeen())-exchanges, reasons)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJitterStaysWithinItsSpread(t *testing.T) {
	seen := map[bool]bool{}
	for range 200 {
		d := jitter(2 * time.Second)
		if d < 0 || d >= 2*time.Second {
			t.Fatalf("jitter(2s) = %s", d)
		}
		seen[d < time.Second] = true
	}
	if !seen[true] || !seen[false] {
		t.Fatalf("200 draws all fell in one half of the spread: %v", seen)
	}
	if d := jitter(0); d != 0 {
		t.Fatalf("jitter(0) = %s", d)
	}
}
