package admission

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/drover-io/drover/selfcert"
)

func hubClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, admissionregistrationv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
}

func newServer(t *testing.T, c client.Client, opts Options) *Server {
	t.Helper()
	if opts.BindAddress == "" {
		opts.BindAddress = "127.0.0.1:9444"
	}
	if opts.Namespace == "" {
		opts.Namespace = "drover-system"
	}
	s, err := New(opts, Deps{Reader: c, Client: c})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOptions(t *testing.T) {
	for _, bad := range []Options{
		{BindAddress: "9444"},
		{BindAddress: ":0"},
		{BindAddress: ":https"},
		{BindAddress: ":9444", URL: "http://127.0.0.1:9444"},
		{BindAddress: ":9444", URL: "https://user:pw@127.0.0.1:9444"},
		{BindAddress: ":9444", URL: "https://127.0.0.1:9444?x=1"},
	} {
		if _, err := New(bad, Deps{}); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	s, err := New(Options{BindAddress: ":9444", URL: "https://127.0.0.1:9444/hooks/"}, Deps{})
	if err != nil || s.opts.URL != "https://127.0.0.1:9444/hooks" || s.opts.ConfigurationName != DefaultConfigurationName {
		t.Fatalf("%+v, %v", s.opts, err)
	}
	if (Options{BindAddress: "0"}).Enabled() || (Options{}).Enabled() || !(Options{BindAddress: DefaultBindAddress}).Enabled() {
		t.Fatal("Enabled")
	}
}

// TestSelfManagedCertificate: replicas share Secret drover-webhook-tls; the second
// uses what the first wrote.
func TestSelfManagedCertificate(t *testing.T) {
	ctx := context.Background()
	c := hubClient(t)
	first := newServer(t, c, Options{URL: "https://10.1.2.3:9444"})
	if err := first.loadCertificate(ctx); err != nil {
		t.Fatal(err)
	}
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "drover-system", Name: TLSSecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	if secret.Type != corev1.SecretTypeTLS || !bytes.Equal(first.CA(), secret.Data[selfcert.CACertKey]) || first.cert.Load() == nil {
		t.Fatalf("secret %s, CA loaded %v", secret.Type, first.CA() != nil)
	}
	leaf, err := selfcert.ParseCert(secret.Data[selfcert.CertKey])
	if err != nil || leaf.VerifyHostname("10.1.2.3") != nil || leaf.VerifyHostname("drover-webhook.drover-system.svc") != nil {
		t.Fatalf("serving certificate: %v", err)
	}
	second := newServer(t, c, Options{URL: "https://10.1.2.3:9444"})
	if err := second.loadCertificate(ctx); err != nil {
		t.Fatal(err)
	}
	var again corev1.Secret
	if err := c.Get(ctx, client.ObjectKeyFromObject(&secret), &again); err != nil {
		t.Fatal(err)
	}
	if again.ResourceVersion != secret.ResourceVersion || !bytes.Equal(second.CA(), first.CA()) {
		t.Fatal("the second replica rewrote the Secret")
	}
}

// TestKeepsCABundle: in a cluster the manager only fills in the caBundle of the
// configuration config/webhook installs, and does nothing while there is none.
func TestKeepsCABundle(t *testing.T) {
	ctx := context.Background()
	installed := Configuration(DefaultConfigurationName, func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: "drover-system", Name: ServiceName, Path: ptr.To(path), Port: ptr.To[int32](443)}}
	})
	c := hubClient(t)
	s := newServer(t, c, Options{})
	if err := s.loadCertificate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.ensureConfiguration(ctx); err != nil {
		t.Fatalf("no configuration installed: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &admissionregistrationv1.ValidatingWebhookConfiguration{}); err == nil {
		t.Fatal("without --webhook-url the manager created the configuration")
	}
	if err := c.Create(ctx, installed); err != nil {
		t.Fatal(err)
	}
	if err := s.ensureConfiguration(ctx); err != nil {
		t.Fatal(err)
	}
	var got admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &got); err != nil {
		t.Fatal(err)
	}
	for _, w := range got.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, s.CA()) || w.ClientConfig.Service == nil || w.ClientConfig.URL != nil {
			t.Fatalf("%s: %+v", w.Name, w.ClientConfig)
		}
	}
	rv := got.ResourceVersion
	if err := s.ensureConfiguration(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &got); err != nil || got.ResourceVersion != rv {
		t.Fatalf("rewritten with nothing to change: %v", err)
	}

	// --webhook-cert-dir: its ca.crt goes into the caBundle; without one, the caBundle
	// is left to whoever fills it in.
	dir := t.TempDir()
	certs, _, err := selfcert.Bundle{}.Ensure("test-ca", ServiceName, selfcert.NamesFor("", ServiceName+".drover-system.svc"), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string][]byte{selfcert.CertKey: certs.Cert, selfcert.KeyKey: certs.Key} {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fromDir := newServer(t, c, Options{CertDir: dir})
	if err := fromDir.loadCertificate(cctx); err != nil {
		t.Fatal(err)
	}
	if err := fromDir.ensureConfiguration(cctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &got); err != nil || got.ResourceVersion != rv {
		t.Fatalf("without ca.crt the caBundle was touched: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, selfcert.CACertKey), certs.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fromDir.loadCertificate(cctx); err != nil {
		t.Fatal(err)
	}
	if err := fromDir.ensureConfiguration(cctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &got); err != nil || !bytes.Equal(got.Webhooks[2].ClientConfig.CABundle, certs.CA) {
		t.Fatalf("ca.crt of --webhook-cert-dir is not the caBundle: %v", err)
	}
	if newServer(t, c, Options{CertDir: filepath.Join(dir, "nope")}).loadCertificate(cctx) == nil {
		t.Fatal("a --webhook-cert-dir without tls.crt is accepted")
	}
}

// TestRegistersConfiguration: with --webhook-url the manager creates the
// configuration, pointing at the URL with its CA, and repairs it.
func TestRegistersConfiguration(t *testing.T) {
	ctx := context.Background()
	c := hubClient(t)
	s := newServer(t, c, Options{URL: "https://127.0.0.1:9444"})
	if err := s.loadCertificate(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.ensureConfiguration(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var got admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Webhooks) != len(hooks) {
		t.Fatalf("%d webhooks", len(got.Webhooks))
	}
	for _, w := range got.Webhooks {
		if w.ClientConfig.URL == nil || !strings.HasPrefix(*w.ClientConfig.URL, "https://127.0.0.1:9444/validate-") || !bytes.Equal(w.ClientConfig.CABundle, s.CA()) {
			t.Fatalf("%s: %+v", w.Name, w.ClientConfig)
		}
	}
	got.Webhooks = got.Webhooks[:1]
	got.Labels = map[string]string{"mine": "yes"}
	if err := c.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if err := s.ensureConfiguration(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: DefaultConfigurationName}, &got); err != nil || len(got.Webhooks) != len(hooks) || got.Labels["mine"] != "yes" {
		t.Fatalf("not repaired (%d webhooks), or labels lost (%v): %v", len(got.Webhooks), got.Labels, err)
	}
}
