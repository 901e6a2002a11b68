package userkubeconfig

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/drover-io/drover/authproxy"
)

// fakeHub answers ListPath for one bearer token, as the hub server does.
func fakeHub(t *testing.T, token string) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != authproxy.ListPath || r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"kind":"Status","message":"Unauthorized: invalid bearer token"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(authproxy.ClusterList{Clusters: []authproxy.ClusterRef{{Name: "prod-eu-1"}, {Name: "edge-7"}}})
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "hub-ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, ca
}

func writeHubKubeconfig(t *testing.T, auth *clientcmdapi.AuthInfo) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["hub"] = &clientcmdapi.Cluster{Server: "https://hub.example.com:6443"}
	cfg.AuthInfos["me"] = auth
	cfg.Contexts["hub"] = &clientcmdapi.Context{Cluster: "hub", AuthInfo: "me"}
	cfg.CurrentContext = "hub"
	path := filepath.Join(t.TempDir(), "hub.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGenerate(t *testing.T) {
	srv, ca := fakeHub(t, "s3cret")
	ctx := context.Background()

	t.Run("token: one context per cluster, the hub server's CA, the same credentials", func(t *testing.T) {
		g := NewWithT(t)
		hub := writeHubKubeconfig(t, &clientcmdapi.AuthInfo{Token: "s3cret"})
		cfg, warnings, err := Generate(ctx, Options{Kubeconfig: hub, HubURL: srv.URL, HubCAFile: ca})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(warnings).To(BeEmpty())
		g.Expect(cfg.Contexts).To(HaveLen(2))
		g.Expect(cfg.Clusters["edge-7"].Server).To(Equal(srv.URL + "/clusters/edge-7"))
		g.Expect(cfg.Clusters["prod-eu-1"].CertificateAuthorityData).NotTo(BeEmpty())
		g.Expect(cfg.Contexts["prod-eu-1"].AuthInfo).To(Equal("me"))
		g.Expect(cfg.AuthInfos["me"].Token).To(Equal("s3cret"))
		g.Expect(cfg.CurrentContext).To(Equal("prod-eu-1"))
	})

	t.Run("exec plugin: kept as it is, and used to ask the hub", func(t *testing.T) {
		g := NewWithT(t)
		exec := &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: "sh",
			Args:            []string{"-c", `echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"s3cret"}}'`},
			InteractiveMode: clientcmdapi.NeverExecInteractiveMode}
		hub := writeHubKubeconfig(t, &clientcmdapi.AuthInfo{Exec: exec})
		var out, errOut bytes.Buffer
		g.Expect(Main(ctx, []string{"--kubeconfig=" + hub, "--hub-url=" + srv.URL, "--hub-ca-file=" + ca, "--cluster=edge-7,nowhere"}, &out, &errOut)).To(Succeed())
		g.Expect(errOut.String()).To(ContainSubstring(`cluster "nowhere" is not among the clusters the hub lists for you`))
		cfg, err := clientcmd.Load(out.Bytes())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cfg.Contexts).To(HaveLen(2))
		g.Expect(cfg.Contexts).To(HaveKey("nowhere"))
		g.Expect(cfg.AuthInfos["me"].Exec).NotTo(BeNil())
		g.Expect(cfg.AuthInfos["me"].Exec.Command).To(Equal("sh"))
		g.Expect(cfg.CurrentContext).To(Equal("edge-7"))
	})

	t.Run("refused by the hub: the hub's message, no token", func(t *testing.T) {
		g := NewWithT(t)
		hub := writeHubKubeconfig(t, &clientcmdapi.AuthInfo{Token: "wrong-token"})
		_, _, err := Generate(ctx, Options{Kubeconfig: hub, HubURL: srv.URL, HubCAFile: ca})
		g.Expect(err).To(MatchError(ContainSubstring("Unauthorized: invalid bearer token")))
		g.Expect(strings.Contains(err.Error(), "wrong-token")).To(BeFalse())
	})
}
