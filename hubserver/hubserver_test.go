package hubserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/drover-io/drover/selfcert"
)

const ns = "drover-system"

// start runs a server until the test ends and returns it once it listens.
func start(t *testing.T, c client.Client, opts Options) *Server {
	t.Helper()
	opts.Namespace = ns
	if opts.BindAddress == "" {
		opts.BindAddress = "127.0.0.1:0"
	}
	s, err := New(opts, c, c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-s.ready:
	case err := <-done:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	return s
}

// get fetches /healthz from s, trusting only caPEM.
func get(t *testing.T, s *Server, caPEM []byte) string {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA")
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := hc.Get("https://" + s.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func publishedCA(t *testing.T, c client.Client) []byte {
	t.Helper()
	var cm corev1.ConfigMap
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: CAConfigMapName}, &cm); err != nil {
		t.Fatal(err)
	}
	return []byte(cm.Data[CAKey])
}

func TestSelfManagedTLS(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	s := start(t, c, Options{URL: "https://hub.example.com"})
	ca := publishedCA(t, c)
	if got := get(t, s, ca); got != "ok" {
		t.Fatalf("got %q", got)
	}
	var secret corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: TLSSecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{CAKey, "ca.key", "tls.crt", "tls.key"} {
		if len(secret.Data[k]) == 0 {
			t.Errorf("secret %s has no %s", TLSSecretName, k)
		}
	}
	// Another replica, or a restart: the same CA, nothing rewritten.
	rv := secret.ResourceVersion
	s2 := start(t, c, Options{URL: "https://hub.example.com"})
	if string(publishedCA(t, c)) != string(ca) {
		t.Fatal("the CA changed on restart")
	}
	if got := get(t, s2, ca); got != "ok" {
		t.Fatalf("second replica: got %q", got)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: TLSSecretName}, &secret); err != nil || secret.ResourceVersion != rv {
		t.Fatalf("the secret was rewritten on restart (err %v)", err)
	}
}

func TestCertDir(t *testing.T) {
	b, _, err := selfcert.Bundle{}.Ensure("test-ca", "drover-hub", selfcert.NamesFor("localhost"), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM := b.CA, b.Cert, b.Key
	dir := t.TempDir()
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, CAKey: caPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := fake.NewClientBuilder().Build()
	s := start(t, c, Options{CertDir: dir, URL: "https://localhost:9443"})
	if got := get(t, s, caPEM); got != "ok" {
		t.Fatalf("got %q", got)
	}
	if string(publishedCA(t, c)) != string(caPEM) {
		t.Fatal("ca.crt from --hub-cert-dir is not published")
	}
	err = c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: TLSSecretName}, &corev1.Secret{})
	if err == nil {
		t.Fatal("a self-managed secret was created although --hub-cert-dir is set")
	}
}

func TestBadURL(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	for _, u := range []string{"http://hub", "https://user:pw@hub", "https://hub?x=1", "hub"} {
		if _, err := New(Options{URL: u, BindAddress: ":9443", Namespace: ns}, c, c); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	s, err := New(Options{BindAddress: ":9555", Namespace: ns}, c, c)
	if err != nil || s.URL() != "https://localhost:9555" {
		t.Fatalf("default URL: %v %v", s, err)
	}
}
