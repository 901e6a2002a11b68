package planner

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/drover-io/drover/selfcert"
)

// KeyPair is a PEM certificate and key. For the service-account key, Cert holds the
// public key.
type KeyPair struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
	// Generation is the certificate-rotation generation it was issued for (leaf
	// certificates only): a node whose generation moves on gets new ones.
	Generation int64 `json:"generation,omitempty"`
}

// The cluster's certificate authorities, and the service-account signing key.
const (
	EtcdCA       = "etcd-ca"
	KubernetesCA = "kubernetes-ca"
	FrontProxyCA = "front-proxy-ca"
	SAKey        = "service-account"
)

// leafValidity is how long issued certificates are valid; renewBefore is how long
// before they expire the planner issues new ones (which changes the plans, and so
// restarts the components that use them).
const (
	leafValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// certSpec is what a leaf certificate must say.
type certSpec struct {
	ca         string
	commonName string
	orgs       []string
	dns        []string
	ips        []net.IP
	server     bool
	client     bool
	// generation it must be issued for (spec.provisioning.rotateCertificates).
	generation int64
}

// pki issues and keeps the cluster's certificates. Certificates that already exist,
// are signed by the current CA and say exactly what their spec says are kept, so
// that plans (and the processes using them) change only when they must.
type pki struct {
	certs   map[string]KeyPair
	changed bool
	now     time.Time
	// expires is the earliest end of the leaf certificates handed out.
	expires time.Time
}

func newPKI(existing map[string]KeyPair, now time.Time) *pki {
	certs := make(map[string]KeyPair, len(existing))
	for k, v := range existing {
		certs[k] = v
	}
	return &pki{certs: certs, now: now}
}

// ca returns the named CA, creating it when missing or near its end.
func (p *pki) ca(name string) (KeyPair, *x509.Certificate, *ecdsa.PrivateKey, error) {
	kp, ok := p.certs[name]
	if ok {
		if cert, key, err := selfcert.ParseCA(kp.Cert, kp.Key); err == nil && !selfcert.CANeedsRenewal(cert, p.now) {
			return kp, cert, key, nil
		}
	}
	certPEM, keyPEM, err := selfcert.NewCA(name, p.now)
	if err != nil {
		return KeyPair{}, nil, nil, err
	}
	kp = KeyPair{Cert: certPEM, Key: keyPEM}
	p.certs[name] = kp
	p.changed = true
	cert, key, err := selfcert.ParseCA(kp.Cert, kp.Key)
	return kp, cert, key, err
}

// serviceAccountKey returns the key pair that signs service-account tokens.
func (p *pki) serviceAccountKey() (KeyPair, error) {
	if kp, ok := p.certs[SAKey]; ok {
		if b, _ := pem.Decode(kp.Key); b != nil {
			if _, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
				return kp, nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return KeyPair{}, err
	}
	kp := KeyPair{Cert: selfcert.PEM("PUBLIC KEY", pub), Key: selfcert.PEM("EC PRIVATE KEY", der)}
	p.certs[SAKey] = kp
	p.changed = true
	return kp, nil
}

// leaf returns the named certificate, issuing it when it is missing, signed by
// another CA, about to expire or different from spec.
func (p *pki) leaf(name string, spec certSpec) (KeyPair, error) {
	_, caCert, caKey, err := p.ca(spec.ca)
	if err != nil {
		return KeyPair{}, err
	}
	if kp, ok := p.certs[name]; ok && p.matches(kp, caCert, spec) {
		if cert, err := selfcert.ParseCert(kp.Cert); err == nil {
			p.used(cert.NotAfter)
		}
		return kp, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: selfcert.Serial(),
		Subject:      pkix.Name{CommonName: spec.commonName, Organization: spec.orgs},
		DNSNames:     spec.dns,
		IPAddresses:  spec.ips,
		NotBefore:    p.now.Add(-time.Hour),
		NotAfter:     p.now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if spec.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("certificate %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	kp := KeyPair{Cert: selfcert.PEM("CERTIFICATE", der), Key: selfcert.PEM("EC PRIVATE KEY", keyDER), Generation: spec.generation}
	p.certs[name] = kp
	p.changed = true
	p.used(tmpl.NotAfter)
	return kp, nil
}

func (p *pki) used(notAfter time.Time) {
	if p.expires.IsZero() || notAfter.Before(p.expires) {
		p.expires = notAfter
	}
}

func (p *pki) matches(kp KeyPair, ca *x509.Certificate, spec certSpec) bool {
	if kp.Generation != spec.generation {
		return false
	}
	cert, err := selfcert.ParseCert(kp.Cert)
	if err != nil || cert.CheckSignatureFrom(ca) != nil || p.now.Add(renewBefore).After(cert.NotAfter) {
		return false
	}
	if cert.Subject.CommonName != spec.commonName || !slices.Equal(cert.Subject.Organization, spec.orgs) || !slices.Equal(cert.DNSNames, spec.dns) {
		return false
	}
	if len(cert.IPAddresses) != len(spec.ips) {
		return false
	}
	for i, ip := range spec.ips {
		if !cert.IPAddresses[i].Equal(ip) {
			return false
		}
	}
	if b, _ := pem.Decode(kp.Key); b == nil {
		return false
	}
	return bytes.Contains(kp.Cert, []byte("CERTIFICATE"))
}
