package selfcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ClientCA issues and checks client certificates that name their holder in a URI SAN
// (urn:drover:...): the credentials of agents and nodes, which hold no Kubernetes
// identity on the hub. Its CA lives in a Secret (keys tls.crt, tls.key) that the
// replicas share.
type ClientCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

// LoadClientCA reads the CA from the Secret at key, creating it (or a new CA, when
// the old one nears its end) first if needed. Replicas racing to create it all end
// with the same one.
func LoadClientCA(ctx context.Context, reader client.Reader, writer client.Client, key client.ObjectKey, commonName string, labels map[string]string) (*ClientCA, bool, error) {
	data, created, err := EnsureSecret(ctx, reader, writer, key, corev1.SecretTypeOpaque, labels,
		func(cur map[string][]byte) (map[string][]byte, bool, error) {
			data := maps.Clone(cur)
			if data == nil {
				data = map[string][]byte{}
			}
			if ca, _, err := ParseCA(data[CertKey], data[KeyKey]); err == nil && !CANeedsRenewal(ca, time.Now()) {
				return data, false, nil
			}
			certPEM, keyPEM, err := NewCA(commonName, time.Now())
			if err != nil {
				return nil, false, err
			}
			data[CertKey], data[KeyKey] = certPEM, keyPEM
			return data, true, nil
		})
	if err != nil {
		return nil, false, err
	}
	cert, caKey, err := ParseCA(data[CertKey], data[KeyKey])
	if err != nil {
		return nil, false, fmt.Errorf("secret %s does not hold a usable CA: %w", key, err)
	}
	return NewClientCA(cert, caKey), created, nil
}

// NewClientCA is a ClientCA for a CA already loaded.
func NewClientCA(cert *x509.Certificate, key *ecdsa.PrivateKey) *ClientCA {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ClientCA{cert: cert, key: key, pool: pool}
}

// Sign issues a client certificate for the public key of a PEM certificate request,
// with commonName and uri, valid for ttl (at most until the CA expires).
func (c *ClientCA) Sign(csrPEM []byte, commonName, uri string, ttl time.Duration, now time.Time) ([]byte, time.Time, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, time.Time{}, errors.New("csr is not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("csr cannot be parsed: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, time.Time{}, fmt.Errorf("csr signature is invalid: %w", err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, time.Time{}, err
	}
	notAfter := now.Add(ttl)
	if c.cert.NotAfter.Before(notAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: Serial(),
		Subject:      pkix.Name{CommonName: commonName},
		// Tolerate clocks a little behind the hub's.
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, time.Time{}, err
	}
	return PEM("CERTIFICATE", der), notAfter, nil
}

// Verify checks that cert was issued by this CA for client authentication and has not
// expired, and returns its URIs.
func (c *ClientCA) Verify(cert *x509.Certificate, now time.Time) ([]string, error) {
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, err
	}
	var out []string
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out, nil
}
