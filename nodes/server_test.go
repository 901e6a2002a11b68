package nodes

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
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/nodeagent"
	"github.com/drover-io/drover/selfcert"
)

const testToken = "0123456789abcdef0123456789abcdef-token"

type env struct {
	t   *testing.T
	c   client.Client
	s   *Server
	mux *http.ServeMux
	// token is the cluster's current node token.
	token atomic.Pointer[string]
}

func newEnv(t *testing.T, objs ...client.Object) *env {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", UID: "mc-uid"},
		Spec: v1alpha1.ManagedClusterSpec{Provisioning: &v1alpha1.ProvisioningSpec{KubernetesVersion: "v1.36.3"}}}
	// The fake client gives objects no UID; the API server does, and credentials
	// name it.
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.ClusterNode{}).WithObjects(append(objs, mc)...).
		WithInterceptorFuncs(interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			obj.SetUID(uuid.NewUUID())
			return c.Create(ctx, obj, opts...)
		}}).Build()
	arts := t.TempDir()
	if err := os.MkdirAll(filepath.Join(arts, "v1.36.3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(arts, "v1.36.3", "kubelet"), []byte("kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c}
	tok := testToken
	e.token.Store(&tok)
	s := New(Options{Namespace: "drover-system", Cache: c, Reader: c, Writer: c, ArtifactsDir: arts,
		TokenOf: func(_ context.Context, cluster string) (string, bool) { return *e.token.Load(), cluster == "edge-1" },
		// As the registry does: the id of the token seen last, and of the one before
		// until the controller notices the change (the token itself is checked anyway).
		ClusterOf: func(id string) (string, bool) {
			if id == ID(testToken) || id == ID(*e.token.Load()) {
				return "edge-1", true
			}
			return "", false
		},
		HubURL: func() string { return "https://hub.example:9443" }, HubCA: func() []byte { return []byte("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n") },
		PollTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = s.Start(ctx) }()
	for s.ca.Load() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	mux := http.NewServeMux()
	s.Register(func(p string, h http.Handler) { mux.Handle(p, h) })
	e.s, e.mux = s, mux
	return e
}

func (e *env) do(method, path string, body any, cert *x509.Certificate) *httptest.ResponseRecorder {
	e.t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(b))
	if cert != nil {
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	}
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return rec
}

func csr(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(selfcert.PEM("CERTIFICATE REQUEST", der))
}

func registerReq(t *testing.T, host, addr string, roles ...string) RegisterRequest {
	return RegisterRequest{Token: testToken, Hostname: host, Address: addr, Roles: roles, CSR: csr(t)}
}

func certOf(t *testing.T, rec *httptest.ResponseRecorder) *x509.Certificate {
	t.Helper()
	var resp RegisterResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	b, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestRegister(t *testing.T) {
	e := newEnv(t)
	rec := e.do(http.MethodPost, RegisterPath, registerReq(t, "etcd-0", "10.0.0.11", "etcd", "control-plane"), nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	cert := certOf(t, rec)
	var node v1alpha1.ClusterNode
	if err := e.c.Get(context.Background(), client.ObjectKey{Name: "edge-1-etcd-0"}, &node); err != nil {
		t.Fatal(err)
	}
	if node.Spec.Address != "10.0.0.11" || len(node.Spec.Roles) != 2 || node.OwnerReferences[0].Name != "edge-1" {
		t.Fatalf("node %+v", node)
	}
	if u := cert.URIs[0].String(); u != "urn:drover:node:edge-1:etcd-0:"+string(node.UID) {
		t.Fatalf("credential names %s", u)
	}

	for _, tc := range []struct {
		name string
		req  RegisterRequest
		code int
		want string
	}{
		{"bad hostname", registerReq(t, "Etcd_0", "10.0.0.12", "etcd"), http.StatusBadRequest, `hostname "Etcd_0"`},
		{"bad address", registerReq(t, "etcd-1", "etcd-1.local", "etcd"), http.StatusBadRequest, `address "etcd-1.local" is not an IP address`},
		{"bad role", registerReq(t, "etcd-1", "10.0.0.12", "master"), http.StatusBadRequest, `role "master": roles are etcd, control-plane and worker`},
		{"no role", registerReq(t, "etcd-1", "10.0.0.12"), http.StatusBadRequest, "no role"},
		{"wrong token", func() RegisterRequest {
			r := registerReq(t, "etcd-1", "10.0.0.12", "etcd")
			r.Token = "x" + testToken
			return r
		}(),
			http.StatusUnauthorized, "the node token is not valid"},
		{"hostname taken by another host", registerReq(t, "etcd-0", "10.0.0.99", "etcd"), http.StatusConflict,
			"hostname etcd-0 is already registered in cluster edge-1 by the host at 10.0.0.11"},
		{"bad csr", func() RegisterRequest { r := registerReq(t, "etcd-1", "10.0.0.12", "etcd"); r.CSR = "junk"; return r }(),
			http.StatusBadRequest, "csr is not a PEM certificate request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.do(http.MethodPost, RegisterPath, tc.req, nil)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("%d %q; want %d %q", rec.Code, rec.Body, tc.code, tc.want)
			}
			if strings.Contains(rec.Body.String(), testToken) {
				t.Fatal("the answer repeats the token")
			}
		})
	}

	// The same host again (its agent restarted, or its roles changed): same node.
	rec = e.do(http.MethodPost, RegisterPath, registerReq(t, "etcd-0", "10.0.0.11", "etcd"), nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if err := e.c.Get(context.Background(), client.ObjectKey{Name: "edge-1-etcd-0"}, &node); err != nil || len(node.Spec.Roles) != 1 {
		t.Fatalf("roles %v %v", node.Spec.Roles, err)
	}
	// The token is rotated: the old one no longer registers anything, at once, and
	// its install script is gone.
	rotated := testToken + "-rotated"
	e.token.Store(&rotated)
	if rec := e.do(http.MethodPost, RegisterPath, registerReq(t, "etcd-9", "10.0.0.19", "etcd"), nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("the old token after rotation: %d %s", rec.Code, rec.Body)
	}
	if rec := e.do(http.MethodGet, PathPrefix+ID(testToken)+"/install.sh", nil, nil); rec.Code != http.StatusNotFound {
		t.Fatalf("the old install script after rotation: %d", rec.Code)
	}
	fresh := registerReq(t, "etcd-9", "10.0.0.19", "etcd")
	fresh.Token = rotated
	if rec := e.do(http.MethodPost, RegisterPath, fresh, nil); rec.Code != http.StatusOK {
		t.Fatalf("the new token: %d %s", rec.Code, rec.Body)
	}
	// Nodes registered before keep their credentials.

	// Renewal with the credential, no token.
	renew := registerReq(t, "etcd-0", "10.0.0.11", "etcd")
	renew.Token = ""
	if rec := e.do(http.MethodPost, RegisterPath, renew, cert); rec.Code != http.StatusOK {
		t.Fatalf("renewal: %d %s", rec.Code, rec.Body)
	}
	// ...but not for another hostname.
	renew.Hostname = "etcd-5"
	if rec := e.do(http.MethodPost, RegisterPath, renew, cert); rec.Code != http.StatusForbidden {
		t.Fatalf("renewal as another host: %d %s", rec.Code, rec.Body)
	}
}

func TestPlanAndStatus(t *testing.T) {
	e := newEnv(t)
	cert := certOf(t, e.do(http.MethodPost, RegisterPath, registerReq(t, "w-0", "10.0.0.31", "worker"), nil))
	// No plan yet: the long poll ends with 304.
	if rec := e.do(http.MethodGet, PlanPath, nil, cert); rec.Code != http.StatusNotModified {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	// Without a credential, or with a forged one: 401.
	if rec := e.do(http.MethodGet, PlanPath, nil, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("%d", rec.Code)
	}
	other, _, _ := selfcert.NewCA("mallory", time.Now())
	b, _ := pem.Decode(other)
	forged, _ := x509.ParseCertificate(b.Bytes)
	if rec := e.do(http.MethodGet, PlanPath, nil, forged); rec.Code != http.StatusUnauthorized {
		t.Fatalf("forged: %d %s", rec.Code, rec.Body)
	}
	plan := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "drover-system", Name: PlanSecretName("edge-1-w-0")},
		Data: map[string][]byte{PlanKey: []byte("{}"), ChecksumKey: []byte("sum-1")}}
	if err := e.c.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	rec := e.do(http.MethodGet, PlanPath+"?checksum=", nil, cert)
	var p PlanResponse
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Checksum != "sum-1" || string(p.Plan) != "{}" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if rec := e.do(http.MethodGet, PlanPath+"?checksum=sum-1", nil, cert); rec.Code != http.StatusNotModified {
		t.Fatalf("the plan it has: %d", rec.Code)
	}
	// Status: written once, not again when nothing changed.
	rep := StatusReport{Status: nodeagent.Status{AppliedChecksum: "sum-1", Probes: []nodeagent.ProbeStatus{{Name: "kubelet", Healthy: true}}}}
	if rec := e.do(http.MethodPut, StatusPath, rep, cert); rec.Code != http.StatusNoContent {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var node v1alpha1.ClusterNode
	_ = e.c.Get(context.Background(), client.ObjectKey{Name: "edge-1-w-0"}, &node)
	if node.Status.State != StateApplied || node.Status.PlanChecksum != "sum-1" {
		t.Fatalf("status %+v", node.Status)
	}
	rv := node.ResourceVersion
	if rec := e.do(http.MethodPut, StatusPath, rep, cert); rec.Code != http.StatusNoContent {
		t.Fatalf("%d", rec.Code)
	}
	_ = e.c.Get(context.Background(), client.ObjectKey{Name: "edge-1-w-0"}, &node)
	if node.ResourceVersion != rv {
		t.Fatal("an unchanged report was written")
	}
	// Deleting the ClusterNode revokes the credential.
	if err := e.c.Delete(context.Background(), &node); err != nil {
		t.Fatal(err)
	}
	if rec := e.do(http.MethodGet, PlanPath, nil, cert); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "revoked") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestInstallCAAndArtifacts(t *testing.T) {
	e := newEnv(t)
	rec := e.do(http.MethodGet, PathPrefix+ID(testToken)+"/install.sh", nil, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "DROVER_NODE_TOKEN="+testToken) || !strings.Contains(rec.Body.String(), "drover node-agent") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if rec := e.do(http.MethodGet, PathPrefix+"unknown/install.sh", nil, nil); rec.Code != http.StatusNotFound {
		t.Fatalf("unknown id: %d", rec.Code)
	}
	rec = e.do(http.MethodGet, PathPrefix+ID(testToken)+"/ca", nil, nil)
	if !VerifySignature(testToken, rec.Body.Bytes(), rec.Header().Get(SignatureHeader)) || VerifySignature("other", rec.Body.Bytes(), rec.Header().Get(SignatureHeader)) {
		t.Fatal("the CA's signature does not verify with the token alone")
	}
	if rec := e.do(http.MethodGet, ArtifactsPrefix+"v1.36.3/kubelet", nil, nil); rec.Code != http.StatusOK || rec.Body.String() != "kubelet" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	for _, p := range []string{"../etc/passwd", "v1.36.3/../../x", "%2e%2e/x", "v1.36.3", "a/b/c"} {
		// 404, or the mux's redirect to the cleaned path, which is outside the
		// artifacts: never the file.
		if rec := e.do(http.MethodGet, ArtifactsPrefix+p, nil, nil); rec.Code != http.StatusNotFound && rec.Code != http.StatusTemporaryRedirect && rec.Code != http.StatusMovedPermanently {
			t.Errorf("%s: %d", p, rec.Code)
		}
	}
	arts, err := e.s.Artifacts()
	if err != nil || len(arts) != 1 || arts["v1.36.3/kubelet"] == "" {
		t.Fatalf("%v %v", arts, err)
	}
}

func TestSetStatus(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		rep     nodeagent.Status
		plan    string
		state   string
		reason  string
		stalled bool
	}{
		{"no plan", nodeagent.Status{}, "", StateRegistered, ReasonAwaitingPlan, false},
		{"applying", nodeagent.Status{AppliedChecksum: "a"}, "b", StateApplying, ReasonApplying, false},
		{"failing", nodeagent.Status{Failure: &nodeagent.Failure{Step: "instructions[0] (join)", Message: "exit 1", Attempts: 2, Checksum: "b"}}, "b", StateFailed, ReasonPlanFailed, false},
		{"failing for long", nodeagent.Status{Failure: &nodeagent.Failure{Step: "files[0]", Message: "read-only", Attempts: 9, Checksum: "b"}}, "b", StateFailed, ReasonPlanFailed, true},
		{"failure of an older plan", nodeagent.Status{AppliedChecksum: "b", Failure: &nodeagent.Failure{Step: "x", Checksum: "a"}}, "b", StateApplied, ReasonApplied, false},
		{"probe failing", nodeagent.Status{AppliedChecksum: "b", Probes: []nodeagent.ProbeStatus{{Name: "etcd", Message: "no leader"}}}, "b", StateApplied, ReasonProbeFailing, false},
		{"healthy", nodeagent.Status{AppliedChecksum: "b", Probes: []nodeagent.ProbeStatus{{Name: "etcd", Healthy: true}}}, "b", StateApplied, ReasonApplied, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &v1alpha1.ClusterNode{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
			SetStatus(n, StatusReport{Status: tc.rep}, tc.plan, now)
			var ready, stalled *metav1.Condition
			for i := range n.Status.Conditions {
				switch c := &n.Status.Conditions[i]; c.Type {
				case v1alpha1.ReadyCondition:
					ready = c
				case v1alpha1.StalledCondition:
					stalled = c
				}
			}
			if n.Status.State != tc.state || ready.Reason != tc.reason || (stalled.Status == metav1.ConditionTrue) != tc.stalled {
				t.Fatalf("state %s, ready %+v, stalled %+v", n.Status.State, ready, stalled)
			}
			if (ready.Status == metav1.ConditionTrue) != (tc.reason == ReasonApplied) {
				t.Fatalf("ready %+v", ready)
			}
			// Reported again, nothing changes, not even the heartbeat.
			before := n.Status.DeepCopy()
			SetStatus(n, StatusReport{Status: tc.rep}, tc.plan, now.Add(time.Hour))
			if n.Status.LastHeartbeatTime.Time != before.LastHeartbeatTime.Time {
				t.Fatal("an unchanged report moved the heartbeat")
			}
		})
	}
}
