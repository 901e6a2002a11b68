package admission

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"time"

	"github.com/drover-io/drover/hubserver"
)

// The self-managed certificates: the CA and its renewal come from package hubserver
// (ten years, replaced a year before its end); the serving certificate lives a year.
const (
	servingLifetime = 365 * 24 * time.Hour
	caName          = "drover-webhook-ca"
)

// Keys of Secret drover-webhook-tls (type kubernetes.io/tls).
const (
	caCertKey  = "ca.crt"
	caKeyKey   = "ca.key"
	tlsCertKey = "tls.crt"
	tlsKeyKey  = "tls.key"
)

// certBundle is the content of Secret drover-webhook-tls.
type certBundle struct {
	caPEM, caKeyPEM, certPEM, keyPEM []byte
}

func bundleFrom(data map[string][]byte) certBundle {
	return certBundle{caPEM: data[caCertKey], caKeyPEM: data[caKeyKey], certPEM: data[tlsCertKey], keyPEM: data[tlsKeyKey]}
}

func (b certBundle) data() map[string][]byte {
	return map[string][]byte{caCertKey: b.caPEM, caKeyKey: b.caKeyPEM, tlsCertKey: b.certPEM, tlsKeyKey: b.keyPEM}
}

// servingNames are the names the serving certificate covers.
type servingNames struct {
	dns []string
	ips []net.IP
}

// namesFor covers localhost, the in-cluster Service drover-webhook in namespace, and
// host (the host of --webhook-url), if any.
func namesFor(namespace, host string) servingNames {
	n := servingNames{
		dns: []string{"localhost", ServiceName + "." + namespace + ".svc", ServiceName + "." + namespace + ".svc.cluster.local"},
		ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.Equal(n.ips[0]) && !ip.Equal(n.ips[1]) {
			n.ips = append(n.ips, ip)
		}
	} else if host != "" && host != "localhost" {
		n.dns = append(n.dns, host)
	}
	return n
}

func (n servingNames) all() []string {
	out := append([]string(nil), n.dns...)
	for _, ip := range n.ips {
		out = append(out, ip.String())
	}
	return out
}

// ensure returns a bundle whose CA is not due for renewal and whose serving
// certificate is signed by it, covers names and is valid for at least renewBefore;
// changed says whether it differs from b. A CA that is kept keeps the API server's
// trust (the caBundle does not change).
func (b certBundle) ensure(names servingNames, now time.Time, renewBefore time.Duration) (certBundle, bool, error) {
	ca, caKey, err := hubserver.ParseCA(b.caPEM, b.caKeyPEM)
	newCA := err != nil || hubserver.CANeedsRenewal(ca, now)
	if newCA {
		if b.caPEM, b.caKeyPEM, err = hubserver.NewCA(caName, now); err != nil {
			return b, false, err
		}
		if ca, caKey, err = hubserver.ParseCA(b.caPEM, b.caKeyPEM); err != nil {
			return b, false, err
		}
	}
	if !newCA && servingOK(b.certPEM, b.keyPEM, ca, names, now, renewBefore) {
		return b, false, nil
	}
	if b.certPEM, b.keyPEM, err = issueServing(ca, caKey, names, now); err != nil {
		return b, false, err
	}
	return b, true, nil
}

// keyPair is the certificate to serve: the serving certificate and its key.
func (b certBundle) keyPair() (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(b.certPEM, b.keyPEM)
	if err != nil {
		return nil, err
	}
	return &cert, nil
}

func servingOK(certPEM, keyPEM []byte, ca *x509.Certificate, names servingNames, now time.Time, renewBefore time.Duration) bool {
	cert, err := parseCert(certPEM)
	if err != nil || now.Add(renewBefore).After(cert.NotAfter) || cert.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, n := range names.all() {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	_, err = tls.X509KeyPair(certPEM, keyPEM)
	return err == nil
}

func parseCert(p []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// issueServing issues a serving certificate for names, signed by ca, valid for
// servingLifetime (or until the CA ends, if sooner).
func issueServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, names servingNames, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(servingLifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: hubserver.Serial(),
		Subject:      pkix.Name{CommonName: ServiceName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names.dns,
		IPAddresses:  names.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return hubserver.PEM("CERTIFICATE", der), hubserver.PEM("EC PRIVATE KEY", keyDER), nil
}
