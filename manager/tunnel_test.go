package manager

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
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/hubserver"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/tunnel"
)

// hubEnv is a hub API server with the manager running against it as `drover` does.
type hubEnv struct {
	cp     *controlplane.ControlPlane
	c      client.Client
	addr   string
	hc     *http.Client
	ca     []byte
	cancel func()
}

var setLogger sync.Once

// startHub starts a hub API server and a manager with the hub server on a free port.
func startHub(t *testing.T, name string, extraArgs ...string) *hubEnv {
	t.Helper()
	hub, _, c := startBareHub(t, name, DefaultNamespace)
	e := &hubEnv{cp: hub, c: c, addr: freeAddr(t)}
	e.cancel = e.startManager(t, e.addr, extraArgs...)
	e.ca = e.waitCA(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca)
	e.hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return e
}

// startManager runs one manager process-alike against the hub; the returned func stops it.
func (e *hubEnv) startManager(t *testing.T, addr string, extraArgs ...string) func() {
	t.Helper()
	return e.startManagerWith(t, addr, nil, extraArgs...)
}

// startManagerWith is startManager, with a function that changes the options.
func (e *hubEnv) startManagerWith(t *testing.T, addr string, change func(*Options), extraArgs ...string) func() {
	t.Helper()
	kubeconfig := writeKubeconfig(t, "hub.kubeconfig", e.cp)
	// No admission webhook unless a test asks for one (on a port of its own): several
	// managers run in this process, and other packages' tests on this machine.
	args := append([]string{"--kubeconfig=" + kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--hub-bind-address=" + addr, "--hub-url=https://" + e.addrOr(addr), "--webhook-bind-address=0", "--zap-log-level=error"}, extraArgs...)
	fs := flag.NewFlagSet("drover", flag.ContinueOnError)
	var o Options
	o.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	o.several = true
	// Two cores are shared with other suites: give the runnables time to stop, and
	// say who was slow (runUntilStopped dumps the goroutines past 20 s).
	o.shutdownTimeout = 45 * time.Second
	if change != nil {
		change(&o)
	}
	setLogger.Do(func() { ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.Log))) })
	return runUntilStopped(t, "manager", func(ctx context.Context) error { return Run(ctx, o) })
}

// writeKubeconfig writes a control plane's admin kubeconfig into the test's directory.
func writeKubeconfig(t *testing.T, name string, cp *controlplane.ControlPlane) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, cp.Kubeconfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runUntilStopped runs run until the returned func is called (or the test ends), and
// reports the error it returns.
func runUntilStopped(t *testing.T, what string, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
			return
		case <-time.After(20 * time.Second):
		}
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Logf("%s is still stopping after 20 s; the goroutines that are not the runtime's:\n%s", what, notRuntime(b.String()))
		err := <-done
		switch {
		case err != nil && strings.Contains(err.Error(), "failed waiting for all runnables to end within grace period"):
			// Known, under CI load only (TestEscalation, twice): a runnable outside
			// Drover's code does not end; the dump above is for whoever hunts it. A
			// manager in a Pod is killed at its termination grace period anyway.
			t.Logf("%s: %v", what, err)
		case err != nil:
			t.Errorf("%s: %v", what, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// notRuntime keeps the goroutine profile's stacks that are not only the runtime's and
// the testing package's.
func notRuntime(profile string) string {
	var out []string
	for _, g := range strings.Split(profile, "\n\n") {
		if strings.Contains(g, "sigs.k8s.io/") || strings.Contains(g, "k8s.io/") || strings.Contains(g, "drover-io/drover/") || strings.Contains(g, "net/http") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func (e *hubEnv) addrOr(addr string) string {
	if e.addr != "" {
		return e.addr
	}
	return addr
}

func (e *hubEnv) waitCA(t *testing.T) []byte {
	t.Helper()
	var cm corev1.ConfigMap
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.c.Get(context.Background(), client.ObjectKey{Namespace: DefaultNamespace, Name: hubserver.CAConfigMapName}, &cm)
		if err == nil {
			return []byte(cm.Data[hubserver.CAKey])
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap %s never appeared: %v", hubserver.CAConfigMapName, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// applyManifest creates every object of a registration manifest in a target, as
// `kubectl apply -f` does on a fresh cluster.
func applyManifest(t *testing.T, c client.Client, manifest string) {
	t.Helper()
	for _, doc := range strings.Split(manifest, "\n---\n") {
		doc = strings.TrimPrefix(strings.TrimSpace(doc), "---")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("manifest: %v", err)
		}
		if err := c.Create(context.Background(), u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// runAgent runs `drover agent --kubeconfig <target>` until the returned func is called.
func runAgent(t *testing.T, target *controlplane.ControlPlane) func() {
	t.Helper()
	kubeconfig := writeKubeconfig(t, "target.kubeconfig", target)
	return runUntilStopped(t, "agent", func(ctx context.Context) error {
		return agent.Main(ctx, []string{"--kubeconfig=" + kubeconfig, "--zap-log-level=error"})
	})
}

// TestTunnel registers a target through spec.registration only: the manifest applied
// to it and the agent run outside it, as `make dev` does. The hub is never given a
// kubeconfig for the target; everything goes through the agent's tunnel.
func TestTunnel(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub := startHub(t, "tunnel-hub", "--agent-credential-ttl=15s")
	target, err := controlplane.Start(controlplane.Options{Name: "tunnel-target", ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Stop() })
	scheme, _ := Scheme()
	tc, err := client.New(target.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	var kubeSystem corev1.Namespace
	g.Expect(tc.Get(ctx, client.ObjectKey{Name: "kube-system"}, &kubeSystem)).To(Succeed())

	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "edge-7"},
		Spec: v1alpha1.ManagedClusterSpec{Registration: &v1alpha1.RegistrationSource{}}}
	g.Expect(hub.c.Create(ctx, mc)).To(Succeed())
	url := waitManifestURL(t, hub.c, "", time.Now().Add(30*time.Second))
	g.Eventually(func(g Gomega) {
		cur := getMC(g, hub.c, "edge-7")
		g.Expect(findCond(cur.Status.Conditions, v1alpha1.ConnectedCondition)).To(HaveField("Reason", v1alpha1.ReasonAwaitingAgent))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	code, manifest := fetch(t, hub.hc, url)
	g.Expect(code).To(Equal(http.StatusOK))
	applyManifest(t, tc, manifest)
	var tokenSecret corev1.Secret
	g.Expect(hub.c.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: "edge-7-registration"}, &tokenSecret)).To(Succeed())
	oldToken := string(tokenSecret.Data["token"])
	noTokens = append(noTokens, oldToken)

	outer := t // agents and managers outlive the subtests
	stopAgent := runAgent(outer, target)
	t.Run("ready through the tunnel", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			cur := getMC(g, hub.c, "edge-7")
			g.Expect(findCond(cur.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
			g.Expect(cur.Status.ClusterID).To(Equal(string(kubeSystem.UID)))
			g.Expect(cur.Status.KubernetesVersion).NotTo(BeEmpty())
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		// The tunnel binding and the credential are in the target.
		var crb rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: render.AgentTunnelBindingName}, &crb)).To(Succeed())
		var cred corev1.Secret
		g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: render.AgentNamespace, Name: render.AgentCredentialSecretName}, &cred)).To(Succeed())
	})

	t.Run("access binding allowed and drift repaired", func(t *testing.T) {
		g := NewWithT(t)
		grantView(g, hub.c, tc, "edge-7")
		var crb rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:edge-viewers"}, &crb)).To(Succeed())
		g.Expect(tc.Delete(ctx, &crb)).To(Succeed())
		g.Eventually(func(g Gomega) {
			var again rbacv1.ClusterRoleBinding
			g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:edge-viewers"}, &again)).To(Succeed())
			g.Expect(again.UID).NotTo(Equal(crb.UID))
		}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("credential renewed", func(t *testing.T) {
		g := NewWithT(t)
		var before corev1.Secret
		g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: render.AgentNamespace, Name: render.AgentCredentialSecretName}, &before)).To(Succeed())
		// 15 s credentials are renewed after 10 s, with no outage: the agent opens
		// the next tunnel before the hub closes the old one.
		flapped := ""
		g.Eventually(func(g Gomega) {
			if c := findCond(getMC(g, hub.c, "edge-7").Status.Conditions, v1alpha1.ConnectedCondition); c == nil || c.Status != metav1.ConditionTrue {
				flapped = fmt.Sprintf("%+v", c)
			}
			var cur corev1.Secret
			g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: render.AgentNamespace, Name: render.AgentCredentialSecretName}, &cur)).To(Succeed())
			g.Expect(cur.Data["tls.crt"]).NotTo(Equal(before.Data["tls.crt"]))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		g.Consistently(func(g Gomega) {
			c := findCond(getMC(g, hub.c, "edge-7").Status.Conditions, v1alpha1.ConnectedCondition)
			g.Expect(c).To(HaveField("Status", metav1.ConditionTrue))
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
		g.Expect(flapped).To(BeEmpty(), "Connected changed during the renewal")
		g.Expect(eventReasons(g, hub.c, "edge-7")).NotTo(ContainElement(v1alpha1.ReasonTunnelDisconnected))
		g.Eventually(func(g Gomega) {
			cur := getMC(g, hub.c, "edge-7")
			g.Expect(findCond(cur.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("bootstrap token revoked", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(hub.c.Delete(ctx, &tokenSecret)).To(Succeed())
		waitManifestURL(t, hub.c, url, time.Now().Add(30*time.Second))
		code, body := exchange(t, hub, "edge-7", string(kubeSystem.UID), oldToken)
		g.Expect(code).To(Equal(http.StatusUnauthorized), body)
		g.Expect(body).NotTo(ContainSubstring(oldToken))
		g.Eventually(func(g Gomega) {
			g.Expect(eventReasons(g, hub.c, "edge-7")).To(ContainElement(tunnel.ReasonTokenRejected))
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		// An unknown cluster gets the same answer.
		code, _ = exchange(t, hub, "nowhere", string(kubeSystem.UID), oldToken)
		g.Expect(code).To(Equal(http.StatusUnauthorized))
		// The agent that already joined keeps its tunnel.
		g.Consistently(func(g Gomega) {
			cur := getMC(g, hub.c, "edge-7")
			g.Expect(findCond(cur.Status.Conditions, v1alpha1.ConnectedCondition)).To(HaveField("Status", metav1.ConditionTrue))
		}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	})

	t.Run("manifest applied to the wrong cluster", func(t *testing.T) {
		g := NewWithT(t)
		other, err := controlplane.Start(controlplane.Options{Name: "tunnel-other"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = other.Stop() })
		oc, err := client.New(other.Config, client.Options{Scheme: scheme})
		g.Expect(err).NotTo(HaveOccurred())
		cur := getMC(g, hub.c, "edge-7")
		code, manifest := fetch(t, hub.hc, cur.Status.Registration.ManifestURL)
		g.Expect(code).To(Equal(http.StatusOK))
		applyManifest(t, oc, manifest)
		stopOther := runAgent(t, other)
		defer stopOther()
		g.Eventually(func(g Gomega) {
			g.Expect(eventReasons(g, hub.c, "edge-7")).To(ContainElement(tunnel.ReasonClusterMismatch))
		}, 20*time.Second, 100*time.Millisecond).Should(Succeed())
		// The registered cluster is untouched.
		g.Consistently(func(g Gomega) {
			cur := getMC(g, hub.c, "edge-7")
			g.Expect(cur.Status.ClusterID).To(Equal(string(kubeSystem.UID)))
			g.Expect(findCond(cur.Status.Conditions, v1alpha1.ConnectedCondition)).To(HaveField("Status", metav1.ConditionTrue))
		}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
		var cred corev1.Secret
		err = oc.Get(ctx, client.ObjectKey{Namespace: render.AgentNamespace, Name: render.AgentCredentialSecretName}, &cred)
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the wrong cluster got a credential")
	})

	t.Run("tunnel lost and recovered", func(t *testing.T) {
		g := NewWithT(t)
		stopAgent()
		start := time.Now()
		waitTunnelDisconnected(g, hub.c, "edge-7")
		t.Logf("tunnel loss seen in %s", time.Since(start).Round(time.Millisecond))
		// The agent starts again with its stored credential (the bootstrap token
		// it holds has been revoked meanwhile).
		stopAgent = runAgent(outer, target)
		g.Eventually(func(g Gomega) {
			cur := getMC(g, hub.c, "edge-7")
			g.Expect(findCond(cur.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("deleted: cleaned up and revoked", func(t *testing.T) {
		g := NewWithT(t)
		var cred corev1.Secret
		g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: render.AgentNamespace, Name: render.AgentCredentialSecretName}, &cred)).To(Succeed())
		g.Expect(hub.c.Delete(ctx, getMC(g, hub.c, "edge-7"))).To(Succeed())
		g.Eventually(func(g Gomega) {
			var cur v1alpha1.ManagedCluster
			err := hub.c.Get(ctx, client.ObjectKey{Name: "edge-7"}, &cur)
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%+v", cur.Status.Conditions)
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		for _, name := range []string{"drover:edge-viewers", render.AgentTunnelBindingName} {
			err := tc.Get(ctx, client.ObjectKey{Name: name}, &rbacv1.ClusterRoleBinding{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), name)
		}
		var ns corev1.Namespace
		err := tc.Get(ctx, client.ObjectKey{Name: render.AgentNamespace}, &ns)
		g.Expect(apierrors.IsNotFound(err) || !ns.DeletionTimestamp.IsZero()).To(BeTrue())
		// The credential no longer opens anything.
		cert, err := tls.X509KeyPair(cred.Data["tls.crt"], cred.Data["tls.key"])
		g.Expect(err).NotTo(HaveOccurred())
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(hub.ca)
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
		resp, err := hc.Get("https://" + hub.addr + tunnel.Path)
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusForbidden))
	})
}

// eventReasons lists the reasons of the events about a ManagedCluster. No event may
// quote the bootstrap token: every note is checked against noTokens.
func eventReasons(g Gomega, c client.Client, cluster string) []string {
	var list eventsv1.EventList
	g.Expect(c.List(context.Background(), &list)).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "ManagedCluster" && e.Regarding.Name == cluster {
			out = append(out, e.Reason)
			for _, tok := range noTokens {
				g.Expect(e.Note).NotTo(ContainSubstring(tok))
			}
		}
	}
	return out
}

// grantView binds ClusterRole view to alice@example.com in cluster (through
// AccessBinding edge-viewers) and waits until the target's own authorizer allows it.
func grantView(g Gomega, hub, target client.Client, cluster string) {
	b := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "edge-viewers"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: "ClusterRole", Name: "view"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{cluster}}}}
	g.Expect(hub.Create(context.Background(), b)).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(can(g, target, "alice@example.com", "list", "pods")).To(BeTrue()) }, 30*time.Second, 50*time.Millisecond).Should(Succeed())
}

// waitTunnelDisconnected waits (at most the 10 s the design allows) until cluster is
// Connected=False with reason TunnelDisconnected.
func waitTunnelDisconnected(g Gomega, hub client.Client, cluster string) {
	g.Eventually(func(g Gomega) {
		cur := getMC(g, hub, cluster)
		g.Expect(findCond(cur.Status.Conditions, v1alpha1.ConnectedCondition)).To(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", v1alpha1.ReasonTunnelDisconnected)))
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
}

// noTokens are the bootstrap tokens no event may quote.
var noTokens []string

func getMC(g Gomega, c client.Client, name string) *v1alpha1.ManagedCluster {
	mc := &v1alpha1.ManagedCluster{}
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: name}, mc)).To(Succeed())
	return mc
}

func can(g Gomega, c client.Client, user, verb, resource string) bool {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: []string{"system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Namespace: "default"}}}
	g.Expect(c.Create(context.Background(), sar)).To(Succeed())
	return sar.Status.Allowed
}

// exchange asks the hub for a credential with a bootstrap token, as an agent does.
func exchange(t *testing.T, hub *hubEnv, cluster, clusterID, token string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(tunnel.CredentialRequest{Cluster: cluster, ClusterID: clusterID, CSR: testCSR(t)})
	req, _ := http.NewRequest(http.MethodPost, "https://"+hub.addr+tunnel.CredentialPath, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hub.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func testCSR(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "test"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
