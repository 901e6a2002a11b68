package selfcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

const ns = "drover-system"

func hubNames(host string) Names {
	return NamesFor(host, "drover-hub."+ns+".svc", "drover-hub."+ns+".svc.cluster.local")
}

func TestBundleEnsure(t *testing.T) {
	now := time.Now()
	renew := 30 * 24 * time.Hour
	fresh, changed, err := Bundle{}.Ensure("ca", "drover-hub", hubNames("hub.example.com"), now, renew)
	if err != nil || !changed {
		t.Fatalf("empty secret: changed %v, err %v", changed, err)
	}
	caOf := func(b Bundle) string { return string(b.CA) }
	cases := []struct {
		name     string
		in       Bundle
		host     string
		at       time.Time
		changed  bool
		keepsCA  bool
		validFor string
	}{
		{"valid: kept as it is", fresh, "hub.example.com", now, false, true, "hub.example.com"},
		{"serving certificate about to expire: renewed, same CA", fresh, "hub.example.com", now.Add(ServingLifetime - renew + time.Hour), true, true, "hub.example.com"},
		{"hub URL moved: reissued for the new host, same CA", fresh, "10.0.0.7", now, true, true, "10.0.0.7"},
		{"CA near its end: a new CA", fresh, "hub.example.com", now.Add(CALifetime - CARenewBefore + time.Hour), true, false, "hub.example.com"},
		{"garbage: a new CA", Bundle{CA: []byte("x"), CAKey: []byte("y"), Cert: []byte("z"), Key: []byte("w")}, "hub.example.com", now, true, false, "hub.example.com"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, changed, err := c.in.Ensure("ca", "drover-hub", hubNames(c.host), c.at, renew)
			if err != nil {
				t.Fatal(err)
			}
			if changed != c.changed || (caOf(out) == caOf(c.in)) != c.keepsCA {
				t.Fatalf("changed %v (want %v), kept CA %v (want %v)", changed, c.changed, caOf(out) == caOf(c.in), c.keepsCA)
			}
			ca, _, err := ParseCA(out.CA, out.CAKey)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ParseCert(out.Cert)
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

func TestBundleRenewal(t *testing.T) {
	now := time.Now()
	renew := 30 * 24 * time.Hour
	names := NamesFor("127.0.0.1", "drover-webhook.drover-system.svc", "drover-webhook.drover-system.svc.cluster.local")

	b, changed, err := Bundle{}.Ensure("ca", "drover-webhook", names, now, renew)
	if err != nil || !changed {
		t.Fatalf("first ensure: changed %v, %v", changed, err)
	}
	cert, err := ParseCert(b.Cert)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCert(b.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, host := range []string{"drover-webhook.drover-system.svc", "drover-webhook.drover-system.svc.cluster.local", "localhost", "127.0.0.1", "::1"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: now}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}

	// Nothing to do while the certificate is fresh.
	if again, changed, err := b.Ensure("ca", "drover-webhook", names, now.Add(time.Hour), renew); err != nil || changed || !bytes.Equal(again.Cert, b.Cert) {
		t.Fatalf("second ensure: changed %v, %v", changed, err)
	}
	// 30 days before it expires: a new serving certificate, the same CA.
	later := cert.NotAfter.Add(-29 * 24 * time.Hour)
	renewed, changed, err := b.Ensure("ca", "drover-webhook", names, later, renew)
	if err != nil || !changed || !bytes.Equal(renewed.CA, b.CA) || bytes.Equal(renewed.Cert, b.Cert) {
		t.Fatalf("renewal: changed %v, same CA %v, %v", changed, bytes.Equal(renewed.CA, b.CA), err)
	}
	// Another host: reissued under the same CA.
	other, changed, err := b.Ensure("ca", "drover-webhook", NamesFor("webhook.example.com"), now, renew)
	if err != nil || !changed || !bytes.Equal(other.CA, b.CA) {
		t.Fatalf("new host: changed %v, %v", changed, err)
	}
	if c, _ := ParseCert(other.Cert); c.VerifyHostname("webhook.example.com") != nil {
		t.Fatal("the new host is not covered")
	}
	// A year before the CA ends: a new CA, and a certificate from it.
	end := ca.NotAfter.Add(-364 * 24 * time.Hour)
	rotated, changed, err := b.Ensure("ca", "drover-webhook", names, end, renew)
	if err != nil || !changed || bytes.Equal(rotated.CA, b.CA) {
		t.Fatalf("CA rotation: changed %v, %v", changed, err)
	}
	newCA, _ := ParseCert(rotated.CA)
	if c, _ := ParseCert(rotated.Cert); c.CheckSignatureFrom(newCA) != nil {
		t.Fatal("the certificate is not signed by the new CA")
	}
	// A key that does not match the certificate: reissued.
	mismatched := b
	mismatched.Key = renewed.Key
	if _, changed, err := mismatched.Ensure("ca", "drover-webhook", names, now, renew); err != nil || !changed {
		t.Fatalf("mismatched key: changed %v, %v", changed, err)
	}
}

// EnsureSecret writes only when update changes something, and goes by what another
// replica wrote first.
func TestEnsureSecret(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientBuilder().Build()
	key := client.ObjectKey{Namespace: ns, Name: "certs"}

	update := func(data map[string][]byte) (map[string][]byte, bool, error) {

		if len(data["v"]) > 0 {
			return data, false, nil
		}
		return map[string][]byte{"v": []byte("mine")}, true, nil
	}
	data, wrote, err := EnsureSecret(ctx, c, c, key, corev1.SecretTypeOpaque, map[string]string{"a": "b"}, update)
	if err != nil || !wrote || string(data["v"]) != "mine" {
		t.Fatalf("first: %v %v %q", err, wrote, data["v"])
	}
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil || s.Labels["a"] != "b" || s.Type != corev1.SecretTypeOpaque {
		t.Fatalf("secret: %v %+v", err, s)
	}
	rv := s.ResourceVersion
	if _, wrote, err := EnsureSecret(ctx, c, c, key, corev1.SecretTypeOpaque, nil, update); err != nil || wrote {
		t.Fatalf("second: wrote %v, %v", wrote, err)
	}
	if err := c.Get(ctx, key, &s); err != nil || s.ResourceVersion != rv {
		t.Fatal("the Secret was rewritten although nothing changed")
	}

	// Another replica creates it between our read and our create: we use theirs.
	key2 := client.ObjectKey{Namespace: ns, Name: "raced"}
	first := true
	racing := func(data map[string][]byte) (map[string][]byte, bool, error) {
		if first {
			first = false
			theirs := &corev1.Secret{Data: map[string][]byte{"v": []byte("theirs")}}
			theirs.Namespace, theirs.Name = key2.Namespace, key2.Name
			if err := c.Create(ctx, theirs); err != nil {
				return nil, false, err
			}
		}
		return update(data)
	}
	data, wrote, err = EnsureSecret(ctx, c, c, key2, corev1.SecretTypeOpaque, nil, racing)
	if err != nil || wrote || string(data["v"]) != "theirs" {
		t.Fatalf("raced: %v %v %q", err, wrote, data["v"])
	}
}
