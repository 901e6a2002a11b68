package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/hubserver"
)

// TestHubServer runs the manager as `drover` does, against a real hub, and reaches
// its hub server with the CA it publishes.
func TestHubServer(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	hub, err := controlplane.Start(controlplane.Options{Name: "manager-hub", CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	kubeconfig := writeKubeconfig(t, "hub.kubeconfig", hub)
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(hub.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DefaultNamespace}}); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, []string{"--kubeconfig=" + kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0",
			"--hub-bind-address=" + addr, "--hub-url=https://" + addr, "--webhook-bind-address=0", "--zap-log-level=error"})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	var cm corev1.ConfigMap
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: hubserver.CAConfigMapName}, &cm)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap %s/%s never appeared: %v", DefaultNamespace, hubserver.CAConfigMapName, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[hubserver.CAKey])) {
		t.Fatal("the published CA is not PEM")
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var body []byte
	for {
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub server does not answer with the published CA: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(body) != "ok" {
		t.Fatalf("/healthz: %q", body)
	}
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: hubserver.TLSSecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeTLS || len(secret.Data["tls.key"]) == 0 {
		t.Fatalf("secret %s: type %s", hubserver.TLSSecretName, secret.Type)
	}

	t.Run("registration manifest", func(t *testing.T) {
		mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "edge-7"},
			Spec: v1alpha1.ManagedClusterSpec{Registration: &v1alpha1.RegistrationSource{}}}
		if err := c.Create(ctx, mc); err != nil {
			t.Fatal(err)
		}
		url := waitManifestURL(t, c, "", deadline.Add(30*time.Second))
		var tokenSecret corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: "edge-7-registration"}, &tokenSecret); err != nil {
			t.Fatal(err)
		}
		token := string(tokenSecret.Data["token"])
		if len(token) < 32 {
			t.Fatalf("token of %d characters", len(token))
		}
		code, body := fetch(t, hc, url)
		if code != http.StatusOK || !strings.Contains(body, "kind: Deployment") || !strings.Contains(body, "drover-agent-hub") || !strings.Contains(body, token) {
			t.Fatalf("manifest: %d %.200s", code, body)
		}
		var cur v1alpha1.ManagedCluster
		for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
			if err := c.Get(ctx, client.ObjectKey{Name: "edge-7"}, &cur); err != nil {
				t.Fatal(err)
			}
			if cond := findCond(cur.Status.Conditions, v1alpha1.ReadyCondition); cond != nil && cond.Reason == v1alpha1.ReasonAwaitingAgent {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("Ready: %+v", findCond(cur.Status.Conditions, v1alpha1.ReadyCondition))
			}
		}
		if cur.Status.Registration.Command != "kubectl apply -f "+url || strings.Contains(url, token) {
			t.Fatalf("status.registration: %+v", cur.Status.Registration)
		}
		// Revoking: delete the token; the hub makes a new one and the old URL is dead.
		if err := c.Delete(ctx, &tokenSecret); err != nil {
			t.Fatal(err)
		}
		newURL := waitManifestURL(t, c, url, time.Now().Add(30*time.Second))
		if code, _ := fetch(t, hc, url); code != http.StatusNotFound {
			t.Fatalf("revoked manifest URL: %d", code)
		}
		if code, _ := fetch(t, hc, newURL); code != http.StatusOK {
			t.Fatalf("new manifest URL: %d", code)
		}
	})
}

// waitManifestURL waits until status.registration.manifestURL of edge-7 is set and
// differs from old.
func waitManifestURL(t *testing.T, c client.Client, old string, deadline time.Time) string {
	t.Helper()
	for {
		var mc v1alpha1.ManagedCluster
		if err := c.Get(context.Background(), client.ObjectKey{Name: "edge-7"}, &mc); err != nil {
			t.Fatal(err)
		}
		if r := mc.Status.Registration; r != nil && r.ManifestURL != "" && r.ManifestURL != old {
			return r.ManifestURL
		}
		if time.Now().After(deadline) {
			t.Fatalf("status.registration never changed from %q: %+v", old, mc.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fetch(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func findCond(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}
