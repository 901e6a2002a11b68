package authproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/drover-io/drover/api/v1alpha1"
)

// tokens the fake hub authenticator knows.
var users = map[string]user.Info{
	"alice-token":   &user.DefaultInfo{Name: "alice@example.com", Groups: []string{"devs", "system:authenticated"}},
	"mallory-token": &user.DefaultInfo{Name: "mallory", Groups: []string{"system:masters", "system:authenticated"}},
	"admin-token":   &user.DefaultInfo{Name: "hub-admin", Groups: []string{"system:authenticated"}},
}

func fakeAuthn() authenticator.Request {
	return authenticator.RequestFunc(func(r *http.Request) (*authenticator.Response, bool, error) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return nil, false, nil
		}
		u, ok := users[tok]
		if !ok {
			return nil, false, errors.New("invalid bearer token")
		}
		r.Header.Del("Authorization")
		return &authenticator.Response{User: u}, true, nil
	})
}

// Only hub-admin may get managedclusters/proxy on the hub.
func fakeHub() authorizer.Authorizer {
	return authorizer.AuthorizerFunc(func(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		if a.GetUser().GetName() == "hub-admin" && a.GetResource() == "managedclusters" && a.GetSubresource() == "proxy" {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionNoOpinion, "", nil
	})
}

// backends maps cluster names to upstream servers.
type backends struct {
	mu   sync.Mutex
	urls map[string]string
	done map[string]chan struct{}
}

func (b *backends) Backend(name string) (*Backend, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.urls[name]
	if !ok {
		return nil, fmt.Errorf("cluster %s is not connected: test", name)
	}
	pu, _ := url.Parse(u)
	if b.done[name] == nil {
		b.done[name] = make(chan struct{})
	}
	return &Backend{URL: pu, Transport: http.DefaultTransport, Done: b.done[name], Via: "direct"}, nil
}

type env struct {
	proxy *httptest.Server
	b     *backends
	// logs holds the proxy's log lines.
	mu   sync.Mutex
	logs []string
}

func (e *env) logged() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.logs, "\n")
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := clientgoscheme.Scheme
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().WithScheme(s).WithObjects(
		&v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "allowed", Labels: map[string]string{"env": "dev"}}},
		&v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "refused"}},
		&v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "slow", Labels: map[string]string{"env": "dev"}}},
		&v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "down", Labels: map[string]string{"env": "dev"}}},
		&v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "devs"}, Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "devs"}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
			Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "dev"}}}}},
		// Granted to system:masters, which the proxy never forwards.
		&v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "masters"}, Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "system:masters"}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "cluster-admin"},
			Clusters: &v1alpha1.ClusterSelection{Names: []string{"refused"}}}},
	).Build()
	b := &backends{urls: map[string]string{}, done: map[string]chan struct{}{}}
	p, err := New(Options{Reader: reader, Backends: b, Authenticator: fakeAuthn(), Authorizer: fakeHub()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{b: b}
	p.log = funcr.New(func(prefix, args string) {
		e.mu.Lock()
		e.logs = append(e.logs, prefix+" "+args)
		e.mu.Unlock()
	}, funcr.Options{})
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, p)
	mux.Handle("GET "+ListPath, p.ListHandler())
	e.proxy = httptest.NewServer(mux)
	t.Cleanup(e.proxy.Close)
	return e
}

func (e *env) upstream(t *testing.T, name string, h http.HandlerFunc) {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	e.b.mu.Lock()
	e.b.urls[name] = s.URL
	e.b.mu.Unlock()
}

func (e *env) do(t *testing.T, token, method, path string, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.proxy.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestProxy(t *testing.T) {
	e := newEnv(t)
	var seen atomic.Pointer[http.Request]
	e.upstream(t, "allowed", func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Clone(context.Background()))
		_, _ = fmt.Fprintf(w, `{"kind":"PodList","path":%q}`, r.URL.Path)
	})
	e.upstream(t, "refused", func(w http.ResponseWriter, _ *http.Request) { t.Error("a refused request reached its target") })

	t.Run("unauthenticated", func(t *testing.T) {
		g := NewWithT(t)
		code, _ := e.do(t, "", "GET", "/clusters/allowed/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusUnauthorized))
		code, body := e.do(t, "forged-token", "GET", "/clusters/allowed/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusUnauthorized))
		g.Expect(body).NotTo(ContainSubstring("forged-token"))
	})

	t.Run("forwarded as the caller, never with its credentials", func(t *testing.T) {
		g := NewWithT(t)
		before := testutil.ToFloat64(requests.WithLabelValues("allowed", "200"))
		code, body := e.do(t, "alice-token", "GET", "/clusters/allowed/api/v1/namespaces/default/pods?limit=5", http.Header{
			"Impersonate-User": {"system:admin"}, "Impersonate-Group": {"system:masters"}})
		g.Expect(code).To(Equal(http.StatusOK), body)
		g.Expect(body).To(ContainSubstring(`"path":"/api/v1/namespaces/default/pods"`))
		r := seen.Load()
		g.Expect(r.URL.RawQuery).To(Equal("limit=5"))
		g.Expect(r.Header.Get("Authorization")).To(BeEmpty())
		g.Expect(r.Header.Get("Impersonate-User")).To(Equal("alice@example.com"))
		g.Expect(r.Header.Values("Impersonate-Group")).To(ConsistOf("system:authenticated", "devs"))
		// Counted, and one audit line that names the caller, never its token (both
		// written as the handler returns, which may be just after the client has read
		// the answer).
		g.Eventually(func() float64 { return testutil.ToFloat64(requests.WithLabelValues("allowed", "200")) }).Should(Equal(before + 1))
		g.Eventually(e.logged).Should(ContainSubstring(`"user"="alice@example.com" "cluster"="allowed" "verb"="list" "path"="/clusters/allowed/api/v1/namespaces/default/pods" "code"=200`))
	})

	t.Run("refused alike whether or not the cluster exists", func(t *testing.T) {
		g := NewWithT(t)
		code, refused := e.do(t, "alice-token", "GET", "/clusters/refused/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusForbidden))
		code, missing := e.do(t, "alice-token", "GET", "/clusters/nowhere/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusForbidden))
		g.Expect(strings.ReplaceAll(refused, "refused", "X")).To(Equal(strings.ReplaceAll(missing, "nowhere", "X")))
		// system:masters is never forwarded, so a binding to it lets no one in.
		code, _ = e.do(t, "mallory-token", "GET", "/clusters/refused/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusForbidden))
		// With the hub's permission, a missing cluster is a plain 404.
		code, _ = e.do(t, "admin-token", "GET", "/clusters/nowhere/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusNotFound))
	})

	t.Run("path escapes", func(t *testing.T) {
		g := NewWithT(t)
		for _, p := range []string{"/clusters/allowed/api/%2e%2e/%2e%2e/refused/api", "/clusters/allowed%2F..%2Frefused/api", "/clusters/allowed/api%2Fv1"} {
			code, _ := e.do(t, "alice-token", "GET", p, nil)
			g.Expect(code).To(Equal(http.StatusBadRequest), p)
		}
	})

	t.Run("disconnected: 503 at once", func(t *testing.T) {
		g := NewWithT(t)
		code, body := e.do(t, "alice-token", "GET", "/clusters/down/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusServiceUnavailable))
		g.Expect(body).To(ContainSubstring("cluster down is not connected"))
	})

	t.Run("no credential is ever logged", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(e.logged()).NotTo(BeEmpty())
		for tok := range users {
			g.Expect(e.logged()).NotTo(ContainSubstring(tok))
		}
		g.Expect(e.logged()).NotTo(ContainSubstring("forged-token"))
	})

	t.Run("list", func(t *testing.T) {
		g := NewWithT(t)
		code, body := e.do(t, "alice-token", "GET", ListPath, nil)
		g.Expect(code).To(Equal(http.StatusOK))
		var l ClusterList
		g.Expect(json.Unmarshal([]byte(body), &l)).To(Succeed())
		g.Expect(l.Clusters).To(Equal([]ClusterRef{{Name: "allowed"}, {Name: "down"}, {Name: "slow"}}))
		_, body = e.do(t, "admin-token", "GET", ListPath, nil)
		g.Expect(body).To(ContainSubstring("refused"))
	})

	t.Run("a slow target delays no other", func(t *testing.T) {
		g := NewWithT(t)
		release := make(chan struct{})
		e.upstream(t, "slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		slowDone := make(chan struct{})
		go func() {
			defer close(slowDone)
			e.do(t, "alice-token", "GET", "/clusters/slow/api/v1/pods", nil)
		}()
		for range 20 {
			code, _ := e.do(t, "alice-token", "GET", "/clusters/allowed/api/v1/pods", nil)
			g.Expect(code).To(Equal(http.StatusOK))
		}
		g.Expect(slowDone).NotTo(BeClosed())
		close(release)
		g.Eventually(slowDone).Should(BeClosed())
	})

	t.Run("deleting the cluster ends its watches", func(t *testing.T) {
		g := NewWithT(t)
		e.upstream(t, "allowed", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		req, _ := http.NewRequest("GET", e.proxy.URL+"/clusters/allowed/api/v1/pods?watch=true", nil)
		req.Header.Set("Authorization", "Bearer alice-token")
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		defer func() { _ = resp.Body.Close() }()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		ended := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, resp.Body); close(ended) }()
		g.Consistently(ended, 200*time.Millisecond).ShouldNot(BeClosed())
		e.b.mu.Lock()
		close(e.b.done["allowed"])
		e.b.mu.Unlock()
		g.Eventually(ended, 5*time.Second).Should(BeClosed())
	})
}

// TestUpgradeEndsWithTheConnection: an upgraded stream (exec, port-forward) through
// the proxy is closed when the cluster's connection closes (the ManagedCluster was
// deleted), and the target sees the caller's identity, never its credentials.
func TestUpgradeEndsWithTheConnection(t *testing.T) {
	g := NewWithT(t)
	e := newEnv(t)
	seen := make(chan http.Header, 1)
	e.upstream(t, "allowed", func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test-stream\r\n\r\nhello\n")
		_ = rw.Flush()
		_, _ = io.Copy(io.Discard, conn) // held open until the other side closes
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.proxy.URL, "http://"))
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = conn.Close() }()
	_, err = io.WriteString(conn, "POST /clusters/allowed/api/v1/namespaces/default/pods/web/exec?command=sh HTTP/1.1\r\n"+
		"Host: hub\r\nAuthorization: Bearer alice-token\r\nImpersonate-User: admin\r\nConnection: Upgrade\r\nUpgrade: test-stream\r\n\r\n")
	g.Expect(err).NotTo(HaveOccurred())
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(status).To(HavePrefix("HTTP/1.1 101"))
	var h http.Header
	g.Eventually(seen).Should(Receive(&h))
	g.Expect(h.Get("Authorization")).To(BeEmpty())
	g.Expect(h.Get("Impersonate-User")).To(Equal("alice@example.com"))
	for {
		line, err := r.ReadString('\n')
		g.Expect(err).NotTo(HaveOccurred())
		if line == "hello\n" {
			break
		}
	}
	e.b.mu.Lock()
	close(e.b.done["allowed"])
	e.b.mu.Unlock()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = r.ReadByte()
	g.Expect(err).To(MatchError(io.EOF), "the stream outlived its cluster's connection")
	g.Eventually(func() string { return e.logged() }).Should(ContainSubstring(`"verb"="create" "path"="/clusters/allowed/api/v1/namespaces/default/pods/web/exec" "code"=101`))
}

// TestLargeResponse streams 1 GiB through the proxy; the proxy's memory stays
// bounded (it never holds the response).
func TestLargeResponse(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GiB")
	}
	g := NewWithT(t)
	e := newEnv(t)
	const size = 1 << 30
	chunk := make([]byte, 1<<20)
	e.upstream(t, "allowed", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	req, _ := http.NewRequest("GET", e.proxy.URL+"/clusters/allowed/api/v1/pods", nil)
	req.Header.Set("Authorization", "Bearer alice-token")
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	n, err := io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	close(stop)
	<-sampled
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(n).To(Equal(int64(size)))
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("heap in use grew by at most %d MiB while 1 GiB went through", grew>>20)
	g.Expect(grew).To(BeNumerically("<", 64<<20), "the proxy buffered the response")
}
