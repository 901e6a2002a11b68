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
)

const ns = "drover-system"

func TestBundleEnsure(t *testing.T) {
	now := time.Now()
	renew := 30 * 24 * time.Hour
	fresh, changed, err := bundle{}.ensure("hub.example.com", ns, now, renew)
	if err != nil || !changed {
		t.Fatalf("empty secret: changed %v, err %v", changed, err)
	}
	caOf := func(b bundle) string { return string(b.caPEM) }
	cases := []struct {
		name     string
		in       bundle
		host     string
		at       time.Time
		changed  bool
		keepsCA  bool
		validFor string
	}{
		{"valid: kept as it is", fresh, "hub.example.com", now, false, true, "hub.example.com"},
		{"serving certificate about to expire: renewed, same CA", fresh, "hub.example.com", now.Add(servingLifetime - renew + time.Hour), true, true, "hub.example.com"},
		{"hub URL moved: reissued for the new host, same CA", fresh, "10.0.0.7", now, true, true, "10.0.0.7"},
		{"CA near its end: a new CA", fresh, "hub.example.com", now.Add(caLifetime - caRenewBefore + time.Hour), true, false, "hub.example.com"},
		{"garbage: a new CA", bundle{caPEM: []byte("x"), caKeyPEM: []byte("y"), certPEM: []byte("z"), keyPEM: []byte("w")}, "hub.example.com", now, true, false, "hub.example.com"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, changed, err := c.in.ensure(c.host, ns, c.at, renew)
			if err != nil {
				t.Fatal(err)
			}
			if changed != c.changed || (caOf(out) == caOf(c.in)) != c.keepsCA {
				t.Fatalf("changed %v (want %v), kept CA %v (want %v)", changed, c.changed, caOf(out) == caOf(c.in), c.keepsCA)
			}
			ca, _, err := parseCA(out.caPEM, out.caKeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := parseCert(out.certPEM)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: c.validFor, CurrentTime: c.at}); err != nil {
				t.Fatalf("serving certificate does not verify for %s: %v", c.validFor, err)
			}
			if err := cert.VerifyHostname("localhost"); err != nil {
				t.Error("not valid for localhost")
			}
		})
	}
}

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
	now := time.Now()
	ca, caKey, caPEM, _, err := newCA(now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _, err := newServing(ca, caKey, "localhost", ns, now)
	if err != nil {
		t.Fatal(err)
	}
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
