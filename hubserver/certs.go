package hubserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Lifetimes of the self-managed certificates.
const (
	caLifetime      = 10 * 365 * 24 * time.Hour
	servingLifetime = 365 * 24 * time.Hour
	// caRenewBefore: a CA closer than this to its end is replaced (and every
	// client must fetch the new one from the ConfigMap).
	caRenewBefore = 365 * 24 * time.Hour
)

// bundle is the content of Secret drover-hub-tls.
type bundle struct {
	caPEM, caKeyPEM, certPEM, keyPEM []byte
	notAfter                         time.Time
}

func bundleFrom(data map[string][]byte) bundle {
	return bundle{caPEM: data[CAKey], caKeyPEM: data["ca.key"], certPEM: data["tls.crt"], keyPEM: data["tls.key"]}
}

func (b bundle) data() map[string][]byte {
	return map[string][]byte{CAKey: b.caPEM, "ca.key": b.caKeyPEM, "tls.crt": b.certPEM, "tls.key": b.keyPEM}
}

// ensure returns a bundle whose CA is valid for at least caRenewBefore and whose
// serving certificate is signed by it, covers host, and is valid for at least
// renewBefore; changed says whether it differs from b. A CA that is kept keeps every
// client's trust.
func (b bundle) ensure(host, namespace string, now time.Time, renewBefore time.Duration) (bundle, bool, error) {
	ca, caKey, caErr := parseCA(b.caPEM, b.caKeyPEM)
	changed := false
	if caErr != nil || now.Add(caRenewBefore).After(ca.NotAfter) {
		var err error
		if ca, caKey, b.caPEM, b.caKeyPEM, err = newCA(now); err != nil {
			return b, false, err
		}
		changed = true
	}
	cert, certErr := parseCert(b.certPEM)
	if !changed && certErr == nil && b.servingOK(cert, ca, host, now, renewBefore) {
		b.notAfter = cert.NotAfter
		return b, false, nil
	}
	certPEM, keyPEM, notAfter, err := newServing(ca, caKey, host, namespace, now)
	if err != nil {
		return b, false, err
	}
	b.certPEM, b.keyPEM, b.notAfter = certPEM, keyPEM, notAfter
	return b, true, nil
}

func (b bundle) servingOK(cert, ca *x509.Certificate, host string, now time.Time, renewBefore time.Duration) bool {
	if now.Add(renewBefore).After(cert.NotAfter) || cert.CheckSignatureFrom(ca) != nil || cert.VerifyHostname(host) != nil {
		return false
	}
	if _, err := parseKey(b.keyPEM); err != nil {
		return false
	}
	return true
}

func parseCert(p []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(p []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(p)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ca, err := parseCert(certPEM)
	if err != nil {
		return nil, nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, err
	}
	if !ca.IsCA {
		return nil, nil, errors.New("not a CA")
	}
	return ca, key, nil
}

// NewCA creates a CA named cn@<unix time>, valid for ten years from now, and returns
// its certificate and key in PEM. Other parts of the hub (the agent credential CA)
// use it too.
func NewCA(cn string, now time.Time) (certPEM, keyPEM []byte, err error) {
	_, _, certPEM, keyPEM, err = newNamedCA(cn, now)
	return certPEM, keyPEM, err
}

// ParseCA parses a CA certificate and its EC key from PEM.
func ParseCA(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	return parseCA(certPEM, keyPEM)
}

// CANeedsRenewal reports whether a CA is closer than a year to its end.
func CANeedsRenewal(ca *x509.Certificate, now time.Time) bool {
	return now.Add(caRenewBefore).After(ca.NotAfter)
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte, error) {
	return newNamedCA("drover-hub-ca", now)
}

func newNamedCA(cn string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", cn, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return ca, key, pemOf("CERTIFICATE", der), pemOf("EC PRIVATE KEY", keyDER), nil
}

// newServing issues a serving certificate for host, localhost and the in-cluster
// Service names of the hub server.
func newServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, host, namespace string, now time.Time) ([]byte, []byte, time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	dns := []string{"localhost", "drover-hub." + namespace + ".svc", "drover-hub." + namespace + ".svc.cluster.local"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if ip := net.ParseIP(host); ip != nil {
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	} else if host != "" && !slices.Contains(dns, host) {
		dns = append([]string{host}, dns...)
	}
	notAfter := now.Add(servingLifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "drover-hub"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return pemOf("CERTIFICATE", der), pemOf("EC PRIVATE KEY", keyDER), notAfter, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// Serial returns a random certificate serial number.
func Serial() *big.Int { return serial() }

// PEM encodes der as a PEM block of type typ.
func PEM(typ string, der []byte) []byte { return pemOf(typ, der) }

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
