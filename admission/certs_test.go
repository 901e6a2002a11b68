package admission

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"
)

func TestCertBundle(t *testing.T) {
	now := time.Now()
	renew := 30 * 24 * time.Hour
	names := namesFor("drover-system", "127.0.0.1")

	b, changed, err := certBundle{}.ensure(names, now, renew)
	if err != nil || !changed {
		t.Fatalf("first ensure: changed %v, %v", changed, err)
	}
	cert, err := parseCert(b.certPEM)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := parseCert(b.caPEM)
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
	if _, err := b.keyPair(); err != nil {
		t.Fatal(err)
	}

	// Nothing to do while the certificate is fresh.
	if again, changed, err := b.ensure(names, now.Add(time.Hour), renew); err != nil || changed || !bytes.Equal(again.certPEM, b.certPEM) {
		t.Fatalf("second ensure: changed %v, %v", changed, err)
	}
	// 30 days before it expires: a new serving certificate, the same CA (the
	// caBundle does not change).
	later := cert.NotAfter.Add(-29 * 24 * time.Hour)
	renewed, changed, err := b.ensure(names, later, renew)
	if err != nil || !changed || !bytes.Equal(renewed.caPEM, b.caPEM) || bytes.Equal(renewed.certPEM, b.certPEM) {
		t.Fatalf("renewal: changed %v, same CA %v, %v", changed, bytes.Equal(renewed.caPEM, b.caPEM), err)
	}
	// Another host in --webhook-url: reissued under the same CA.
	other, changed, err := b.ensure(namesFor("drover-system", "webhook.example.com"), now, renew)
	if err != nil || !changed || !bytes.Equal(other.caPEM, b.caPEM) {
		t.Fatalf("new host: changed %v, %v", changed, err)
	}
	if c, _ := parseCert(other.certPEM); c.VerifyHostname("webhook.example.com") != nil {
		t.Fatal("the new host is not covered")
	}
	// A year before the CA ends: a new CA, and a certificate from it.
	end := ca.NotAfter.Add(-364 * 24 * time.Hour)
	rotated, changed, err := b.ensure(names, end, renew)
	if err != nil || !changed || bytes.Equal(rotated.caPEM, b.caPEM) {
		t.Fatalf("CA rotation: changed %v, %v", changed, err)
	}
	newCA, _ := parseCert(rotated.caPEM)
	if c, _ := parseCert(rotated.certPEM); c.CheckSignatureFrom(newCA) != nil {
		t.Fatal("the certificate is not signed by the new CA")
	}
	// Garbage in the Secret: start over.
	if _, changed, err := (certBundle{caPEM: []byte("x"), caKeyPEM: []byte("y"), certPEM: []byte("z")}).ensure(names, now, renew); err != nil || !changed {
		t.Fatalf("garbage: changed %v, %v", changed, err)
	}
	// A key that does not match the certificate: reissued.
	mismatched := b
	mismatched.keyPEM = renewed.keyPEM
	if _, changed, err := mismatched.ensure(names, now, renew); err != nil || !changed {
		t.Fatalf("mismatched key: changed %v, %v", changed, err)
	}
}
