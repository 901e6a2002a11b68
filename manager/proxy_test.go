package manager

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/authproxy"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/userkubeconfig"
)

// TestProxy reaches targets through the authentication proxy with real API servers
// on both sides: a hub user with a client certificate and a hub ServiceAccount with
// a token, a target they are bound in, one they are not, one behind the agent's
// tunnel; revocation, a stopped target, and `drover kubeconfig` with plain kubectl.
func TestProxy(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub := startHub(t, "proxy-hub")
	targets, err := controlplane.StartMany(2, "proxy-target", controlplane.Options{ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	tunnelled, err := controlplane.Start(controlplane.Options{Name: "proxy-tunnel", ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, cp := range append(targets, tunnelled) {
			_ = cp.Stop()
		}
	})
	scheme, _ := Scheme()
	targetClient := func(cp *controlplane.ControlPlane) client.Client {
		c, err := client.New(cp.Config, client.Options{Scheme: scheme})
		g.Expect(err).NotTo(HaveOccurred())
		return c
	}
	allowedC, refusedC, tunnelC := targetClient(targets[0]), targetClient(targets[1]), targetClient(tunnelled)
	registerDirect(g, hub.c, "px-allowed", targets[0])
	registerDirect(g, hub.c, "px-refused", targets[1])
	stopAgent := registerTunnel(t, hub, "px-tunnel", tunnelC, tunnelled)
	defer stopAgent()
	for _, name := range []string{"px-allowed", "px-refused", "px-tunnel"} {
		waitReady(g, hub.c, name)
	}

	// alice@example.com has a client certificate from the hub's client CA; CI's
	// deployer is a hub ServiceAccount with a token.
	aliceKubeconfig, err := hub.cp.AddUser("alice@example.com", "devs")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hub.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ci"}})).To(Succeed())
	g.Expect(hub.c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: "ci"}})).To(Succeed())
	hubCS := kubernetes.NewForConfigOrDie(hub.cp.Config)
	tr, err := hubCS.CoreV1().ServiceAccounts("ci").CreateToken(ctx, "deployer",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	saToken := tr.Status.Token
	const saUser = "drover:hub:system:serviceaccount:ci:deployer"

	// alice may view the allowed and the tunnelled cluster; the deployer may edit
	// the allowed one. Nobody is bound in px-refused.
	g.Expect(hub.c.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-view"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"px-allowed", "px-tunnel"}}}})).To(Succeed())
	g.Expect(hub.c.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer-edit"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: saUser}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "edit"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"px-allowed"}}}})).To(Succeed())
	for _, c := range []client.Client{allowedC, tunnelC} {
		g.Eventually(func(g Gomega) { g.Expect(can(g, c, "alice@example.com", "list", "pods")).To(BeTrue()) }, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	}
	g.Eventually(func(g Gomega) { g.Expect(can(g, allowedC, saUser, "create", "configmaps")).To(BeTrue()) }, 30*time.Second, 50*time.Millisecond).Should(Succeed())

	proxyURL := "https://" + hub.addr + authproxy.PathPrefix
	aliceCfg := proxyConfig(g, hub, aliceKubeconfig, "")
	deployerCfg := proxyConfig(g, hub, nil, saToken)
	aliceHC := httpClient(g, aliceCfg)

	t.Run("client certificate user reaches its clusters, direct and tunnelled", func(t *testing.T) {
		g := NewWithT(t)
		for _, name := range []string{"px-allowed", "px-tunnel"} {
			cs := clientFor(g, aliceCfg, name)
			_, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
			g.Expect(err).NotTo(HaveOccurred(), name)
			// The target's RBAC decides: view may not create.
			_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%s: %v", name, err)
			g.Expect(err.Error()).To(ContainSubstring(`User "alice@example.com"`))
		}
	})

	t.Run("ServiceAccount token user: prefixed, server-side apply", func(t *testing.T) {
		g := NewWithT(t)
		cs := clientFor(g, deployerCfg, "px-allowed")
		cm := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deployed","namespace":"default"},"data":{"k":"v"}}`)
		_, err := cs.CoreV1().ConfigMaps("default").Patch(ctx, "deployed", "application/apply-patch+yaml", cm,
			metav1.PatchOptions{FieldManager: "ci", Force: ptr.To(true)})
		g.Expect(err).NotTo(HaveOccurred())
		var got corev1.ConfigMap
		g.Expect(allowedC.Get(ctx, client.ObjectKey{Namespace: "default", Name: "deployed"}, &got)).To(Succeed())
		g.Expect(got.Data).To(HaveKeyWithValue("k", "v"))
		// It is never the target's own ServiceAccount, and never cluster-admin.
		_, err = cs.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		g.Expect(err.Error()).To(ContainSubstring(saUser))
	})

	t.Run("watch through the proxy", func(t *testing.T) {
		g := NewWithT(t)
		cs := clientFor(g, aliceCfg, "px-tunnel")
		w, err := cs.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=watched"})
		g.Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		g.Expect(tunnelC.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "watched", Namespace: "default"}})).To(Succeed())
		g.Eventually(w.ResultChan(), 10*time.Second).Should(Receive(HaveField("Type", watch.Added)))
	})

	t.Run("refused where no AccessBinding lets them in", func(t *testing.T) {
		g := NewWithT(t)
		for _, cfg := range []*rest.Config{aliceCfg, deployerCfg} {
			_, err := clientFor(g, cfg, "px-refused").CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		}
		// The same answer for a cluster that does not exist.
		code, refused := get(g, aliceHC, proxyURL+"px-refused/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusForbidden))
		code, missing := get(g, aliceHC, proxyURL+"px-nowhere/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusForbidden))
		g.Expect(strings.ReplaceAll(refused, "px-refused", "X")).To(Equal(strings.ReplaceAll(missing, "px-nowhere", "X")))
		g.Expect(refusedC.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{})).To(Succeed())
	})

	t.Run("bad credentials and forged headers", func(t *testing.T) {
		g := NewWithT(t)
		anon := httpClient(g, &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: hub.ca}})
		code, _ := get(g, anon, proxyURL+"px-allowed/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusUnauthorized), "no credentials")
		code, body := get(g, anon, proxyURL+"px-allowed/api/v1/pods", http.Header{"Authorization": {"Bearer forged.token.here"}})
		g.Expect(code).To(Equal(http.StatusUnauthorized), "forged token")
		g.Expect(body).NotTo(ContainSubstring("forged.token.here"))
		// An expired token: signed with the hub's own ServiceAccount key, for the
		// deployer, but an hour past its expiry.
		var sa corev1.ServiceAccount
		g.Expect(hub.c.Get(ctx, client.ObjectKey{Namespace: "ci", Name: "deployer"}, &sa)).To(Succeed())
		code, body = get(g, anon, proxyURL+"px-allowed/api/v1/pods", http.Header{"Authorization": {"Bearer " + expiredToken(t, g, hub, &sa)}})
		g.Expect(code).To(Equal(http.StatusUnauthorized), "expired token")
		g.Expect(strings.ToLower(body)).To(ContainSubstring("expired"))
		// The token of a ServiceAccount that was deleted (revoked).
		g.Expect(hub.c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "temp", Namespace: "ci"}})).To(Succeed())
		revoked, err := hubCS.CoreV1().ServiceAccounts("ci").CreateToken(ctx, "temp",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600))}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(hubCS.CoreV1().ServiceAccounts("ci").Delete(ctx, "temp", metav1.DeleteOptions{})).To(Succeed())
		g.Eventually(func() int {
			code, _ := get(g, anon, proxyURL+"px-allowed/api/v1/pods", http.Header{"Authorization": {"Bearer " + revoked.Status.Token}})
			return code
		}, 20*time.Second, 200*time.Millisecond).Should(Equal(http.StatusUnauthorized), "token of a deleted ServiceAccount")
		// A client certificate from another CA (a target's).
		otherKubeconfig, err := targets[0].AddUser("alice@example.com", "devs")
		g.Expect(err).NotTo(HaveOccurred())
		other := proxyConfig(g, hub, otherKubeconfig, "")
		code, _ = get(g, httpClient(g, other), proxyURL+"px-allowed/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusUnauthorized), "client certificate from another CA")
		// Impersonation headers and a claimed system:masters are ignored.
		code, _ = get(g, aliceHC, proxyURL+"px-allowed/api/v1/namespaces/kube-system/secrets", http.Header{
			"Impersonate-User": {"drover-admin"}, "Impersonate-Group": {"system:masters"}})
		g.Expect(code).To(Equal(http.StatusForbidden))
		// Paths that try to leave the cluster's prefix.
		for _, p := range []string{"px-allowed/api/../../px-refused/api/v1/pods", "px-allowed/api/%2e%2e/%2e%2e/px-refused/api", "px-allowed%2F..%2Fpx-refused/api"} {
			code, _ = get(g, aliceHC, proxyURL+p, nil)
			g.Expect(code).To(Equal(http.StatusBadRequest), p)
		}
	})

	t.Run("drover kubeconfig works with plain kubectl", func(t *testing.T) {
		g := NewWithT(t)
		if _, err := exec.LookPath("kubectl"); err != nil {
			t.Skip("kubectl is not installed")
		}
		// What the installation grants every hub user: reading the hub server's CA and URL.
		data, err := os.ReadFile(filepath.Join("..", "config", "rbac", "hub_ca_reader.yaml"))
		g.Expect(err).NotTo(HaveOccurred())
		applyManifest(t, hub.c, string(data))
		dir := t.TempDir()
		hubKC := filepath.Join(dir, "alice-hub.kubeconfig")
		g.Expect(os.WriteFile(hubKC, aliceKubeconfig, 0o600)).To(Succeed())
		var out, errOut bytes.Buffer
		g.Expect(userkubeconfig.Main(ctx, []string{"--kubeconfig=" + hubKC}, &out, &errOut)).To(Succeed(), errOut.String())
		kc := filepath.Join(dir, "alice.kubeconfig")
		g.Expect(os.WriteFile(kc, out.Bytes(), 0o600)).To(Succeed())
		parsed, err := clientcmd.Load(out.Bytes())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(parsed.Contexts).To(HaveLen(2))
		g.Expect(parsed.Contexts).To(HaveKey("px-allowed"))
		g.Expect(parsed.Contexts).To(HaveKey("px-tunnel"))
		for _, name := range []string{"px-allowed", "px-tunnel"} {
			res := kubectl(t, kc, "--context="+name, "get", "pods", "-n", "default")
			g.Expect(res.err).NotTo(HaveOccurred(), res.out)
			res = kubectl(t, kc, "--context="+name, "auth", "can-i", "list", "pods")
			g.Expect(strings.TrimSpace(res.out)).To(Equal("yes"))
			res = kubectl(t, kc, "--context="+name, "auth", "can-i", "create", "pods")
			g.Expect(strings.TrimSpace(res.out)).To(HavePrefix("no"))
		}
		// The ServiceAccount, with a token in its hub kubeconfig: one cluster, where it may edit.
		tokenKC := clientcmdapi.NewConfig()
		tokenKC.Clusters["hub"] = &clientcmdapi.Cluster{Server: hub.cp.Config.Host, CertificateAuthorityData: hub.cp.Config.CAData}
		tokenKC.AuthInfos["deployer"] = &clientcmdapi.AuthInfo{Token: saToken}
		tokenKC.Contexts["hub"] = &clientcmdapi.Context{Cluster: "hub", AuthInfo: "deployer"}
		tokenKC.CurrentContext = "hub"
		deployerHub := filepath.Join(dir, "deployer-hub.kubeconfig")
		g.Expect(clientcmd.WriteToFile(*tokenKC, deployerHub)).To(Succeed())
		out.Reset()
		errOut.Reset()
		g.Expect(userkubeconfig.Main(ctx, []string{"--kubeconfig=" + deployerHub}, &out, &errOut)).To(Succeed(), errOut.String())
		deployerKC := filepath.Join(dir, "deployer.kubeconfig")
		g.Expect(os.WriteFile(deployerKC, out.Bytes(), 0o600)).To(Succeed())
		parsed, err = clientcmd.Load(out.Bytes())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(parsed.Contexts).To(HaveLen(1))
		g.Expect(parsed.CurrentContext).To(Equal("px-allowed"))
		res := kubectl(t, deployerKC, "create", "configmap", "from-kubectl", "-n", "default", "--from-literal=k=v")
		g.Expect(res.err).NotTo(HaveOccurred(), res.out)
		res = kubectl(t, deployerKC, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		g.Expect(res.out).To(Equal(saUser))

		// A cluster named explicitly that the user may not reach: a warning, and
		// kubectl is refused.
		out.Reset()
		errOut.Reset()
		g.Expect(userkubeconfig.Main(ctx, []string{"--kubeconfig=" + hubKC, "--cluster=px-refused"}, &out, &errOut)).To(Succeed())
		g.Expect(errOut.String()).To(ContainSubstring("px-refused"))
		g.Expect(os.WriteFile(kc, out.Bytes(), 0o600)).To(Succeed())
		res = kubectl(t, kc, "get", "pods")
		g.Expect(res.err).To(HaveOccurred())
		g.Expect(res.out).To(ContainSubstring("Forbidden"))
	})

	t.Run("revoked as soon as the binding is deleted", func(t *testing.T) {
		g := NewWithT(t)
		deployerHC := httpClient(g, deployerCfg)
		code, _ := get(g, deployerHC, proxyURL+"px-allowed/api/v1/namespaces/default/configmaps", nil)
		g.Expect(code).To(Equal(http.StatusOK))
		for _, name := range []string{"alice-view", "deployer-edit"} {
			g.Expect(hub.c.Delete(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
		}
		for _, hc := range []*http.Client{aliceHC, deployerHC} {
			g.Eventually(func() int {
				code, _ := get(g, hc, proxyURL+"px-allowed/api/v1/namespaces/default/pods", nil)
				return code
			}, 10*time.Second, 50*time.Millisecond).Should(Equal(http.StatusForbidden))
		}
		// The targets' RBAC has lost them too.
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, allowedC, "alice@example.com", "list", "pods")).To(BeFalse())
			g.Expect(can(g, allowedC, saUser, "create", "configmaps")).To(BeFalse())
		}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("a stopped target: 503 at once", func(t *testing.T) {
		g := NewWithT(t)
		admin := proxyConfig(g, hub, hub.cp.Kubeconfig(), "")
		adminHC := httpClient(g, admin)
		g.Expect(targets[1].StopAPIServer()).To(Succeed())
		g.Eventually(func(g Gomega) {
			c := findCond(getMC(g, hub.c, "px-refused").Status.Conditions, v1alpha1.ConnectedCondition)
			g.Expect(c).To(HaveField("Status", metav1.ConditionFalse))
		}, 20*time.Second, 100*time.Millisecond).Should(Succeed())
		// The hub's admin may use the proxy anywhere (hub permission); the target is gone.
		start := time.Now()
		code, body := get(g, adminHC, proxyURL+"px-refused/api/v1/pods", nil)
		t.Logf("answered in %s", time.Since(start).Round(time.Millisecond))
		g.Expect(code).To(Equal(http.StatusServiceUnavailable), body)
		g.Expect(body).To(ContainSubstring("px-refused is not connected"))
		// The same for a cluster whose agent went away: its tunnel closing is known
		// at once.
		stopAgent()
		waitTunnelDisconnected(g, hub.c, "px-tunnel")
		start = time.Now()
		code, body = get(g, adminHC, proxyURL+"px-tunnel/api/v1/pods", nil)
		t.Logf("answered in %s", time.Since(start).Round(time.Millisecond))
		g.Expect(code).To(Equal(http.StatusServiceUnavailable), body)
		g.Expect(body).To(ContainSubstring("px-tunnel is not connected: no agent tunnel is open"))
		// Deleting the ManagedCluster closes its route.
		g.Expect(targets[1].RestartAPIServer()).To(Succeed())
		waitReady(g, hub.c, "px-refused")
		code, _ = get(g, adminHC, proxyURL+"px-refused/api/v1/pods", nil)
		g.Expect(code).To(Equal(http.StatusForbidden), "the target's RBAC: drover-admin is not system:masters there")
		g.Expect(hub.c.Delete(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "px-refused"}})).To(Succeed())
		g.Eventually(func() int {
			code, _ := get(g, adminHC, proxyURL+"px-refused/api/v1/pods", nil)
			return code
		}, 60*time.Second, 200*time.Millisecond).Should(Equal(http.StatusNotFound))
	})
}

// expiredToken signs, with the hub's ServiceAccount signing key, a token for sa that
// expired an hour ago.
func expiredToken(t *testing.T, g Gomega, hub *hubEnv, sa *corev1.ServiceAccount) string {
	t.Helper()
	keyPEM, err := os.ReadFile(filepath.Join(hub.cp.Dir(), "apiserver", "sa-signer.key"))
	g.Expect(err).NotTo(HaveOccurred())
	block, _ := pem.Decode(keyPEM)
	g.Expect(block).NotTo(BeNil())
	var key crypto.Signer
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		key = k
	} else {
		k8, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		g.Expect(err).NotTo(HaveOccurred())
		key = k8.(crypto.Signer)
	}
	issuer := hub.cp.Config.Host
	now := time.Now()
	claims, err := json.Marshal(map[string]any{
		"iss": issuer, "aud": []string{issuer}, "sub": "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		"iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": sa.Namespace, "serviceaccount": map[string]any{"name": sa.Name, "uid": string(sa.UID)}},
	})
	g.Expect(err).NotTo(HaveOccurred())
	enc := base64.RawURLEncoding
	alg := "RS256"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = "ES256"
	}
	signed := enc.EncodeToString([]byte(`{"alg":"`+alg+`","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, sum[:])
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	default:
		t.Fatalf("the ServiceAccount signing key is a %T", key)
	}
	g.Expect(err).NotTo(HaveOccurred())
	return signed + "." + enc.EncodeToString(sig)
}

// registerDirect registers a target by kubeconfig Secret.
func registerDirect(g Gomega, hub client.Client, name string, cp *controlplane.ControlPlane) {
	ctx := context.Background()
	g.Expect(hub.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: DefaultNamespace},
		Data: map[string][]byte{"value": cp.Kubeconfig()}})).To(Succeed())
	g.Expect(hub.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: name + "-kubeconfig"}}}})).To(Succeed())
}

// registerTunnel registers a target through spec.registration and runs its agent.
func registerTunnel(t *testing.T, hub *hubEnv, name string, tc client.Client, cp *controlplane.ControlPlane) func() {
	t.Helper()
	g := NewWithT(t)
	g.Expect(hub.c.Create(context.Background(), &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.ManagedClusterSpec{Registration: &v1alpha1.RegistrationSource{}}})).To(Succeed())
	var manifestURL string
	g.Eventually(func(g Gomega) {
		mc := getMC(g, hub.c, name)
		g.Expect(mc.Status.Registration).NotTo(BeNil())
		manifestURL = mc.Status.Registration.ManifestURL
		g.Expect(manifestURL).NotTo(BeEmpty())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	code, manifest := fetch(t, hub.hc, manifestURL)
	g.Expect(code).To(Equal(http.StatusOK))
	applyManifest(t, tc, manifest)
	return runAgent(t, cp)
}

func waitReady(g Gomega, hub client.Client, name string) {
	g.Eventually(func(g Gomega) {
		c := findCond(getMC(g, hub, name).Status.Conditions, v1alpha1.ReadyCondition)
		g.Expect(c).To(HaveField("Status", metav1.ConditionTrue))
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
}

// proxyConfig is a client configuration for the hub server with a user's hub
// credentials: those of a kubeconfig, or a bearer token.
func proxyConfig(g Gomega, hub *hubEnv, kubeconfig []byte, token string) *rest.Config {
	cfg := &rest.Config{}
	if kubeconfig != nil {
		var err error
		cfg, err = clientcmd.RESTConfigFromKubeConfig(kubeconfig)
		g.Expect(err).NotTo(HaveOccurred())
	}
	cfg.Host = "https://" + hub.addr
	cfg.BearerToken = token
	cfg.CAData, cfg.CAFile, cfg.ServerName, cfg.Insecure = hub.ca, "", "", false
	return cfg
}

// clientFor is a clientset for cluster through the proxy.
func clientFor(g Gomega, cfg *rest.Config, cluster string) *kubernetes.Clientset {
	c := rest.CopyConfig(cfg)
	c.Host = strings.TrimSuffix(cfg.Host, "/") + authproxy.PathPrefix + cluster
	cs, err := kubernetes.NewForConfig(c)
	g.Expect(err).NotTo(HaveOccurred())
	return cs
}

func httpClient(g Gomega, cfg *rest.Config) *http.Client {
	tlsCfg, err := rest.TLSConfigFor(cfg)
	g.Expect(err).NotTo(HaveOccurred())
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	if tlsCfg.RootCAs == nil {
		tlsCfg.RootCAs = x509.NewCertPool()
	}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: tlsCfg}
	if cfg.BearerToken != "" {
		rt = bearer{token: cfg.BearerToken, rt: rt}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: rt}
}

type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.rt.RoundTrip(r)
}

func get(g Gomega, hc *http.Client, url string, hdr http.Header) (int, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	g.Expect(err).NotTo(HaveOccurred())
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

type kubectlResult struct {
	out string
	err error
}

func kubectl(t *testing.T, kubeconfig string, args ...string) kubectlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	out, err := cmd.CombinedOutput()
	return kubectlResult{out: string(out), err: err}
}
