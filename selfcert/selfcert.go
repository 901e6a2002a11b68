// Package selfcert keeps the certificates the manager makes for itself: a CA and a
// serving certificate signed by it, kept in a Secret that every replica shares and
// renewed before they expire. The hub server, the admission webhook and the agent
// credential CA all use it.
package selfcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Lifetimes of the certificates.
const (
	CALifetime      = 10 * 365 * 24 * time.Hour
	ServingLifetime = 365 * 24 * time.Hour
	// CARenewBefore: a CA closer than this to its end is replaced (and every client
	// must fetch the new one).
	CARenewBefore = 365 * 24 * time.Hour
)

// Keys of a Secret holding a Bundle (type kubernetes.io/tls).
const (
	CACertKey = "ca.crt"
	CAKeyKey  = "ca.key"
	CertKey   = corev1.TLSCertKey
	KeyKey    = corev1.TLSPrivateKeyKey
)

// Names are what a serving certificate covers.
type Names struct {
	DNS []string
	IPs []net.IP
}

// NamesFor covers localhost, 127.0.0.1, ::1, the given DNS names and host (an IP
// address or a DNS name, e.g. the host of a URL), if not covered already.
func NamesFor(host string, dns ...string) Names {
	n := Names{DNS: append([]string{"localhost"}, dns...), IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}}
	if ip := net.ParseIP(host); ip != nil {
		if !slices.ContainsFunc(n.IPs, ip.Equal) {
			n.IPs = append(n.IPs, ip)
		}
	} else if host != "" && !slices.Contains(n.DNS, host) {
		n.DNS = append(n.DNS, host)
	}
	return n
}

// All lists every name, IP addresses as text.
func (n Names) All() []string {
	out := append([]string(nil), n.DNS...)
	for _, ip := range n.IPs {
		out = append(out, ip.String())
	}
	return out
}

// Bundle is a CA and a serving certificate signed by it, in PEM.
type Bundle struct {
	CA, CAKey, Cert, Key []byte
}

// BundleFrom reads a Bundle from a Secret's data.
func BundleFrom(data map[string][]byte) Bundle {
	return Bundle{CA: data[CACertKey], CAKey: data[CAKeyKey], Cert: data[CertKey], Key: data[KeyKey]}
}

// Data is the Bundle as a Secret's data.
func (b Bundle) Data() map[string][]byte {
	return map[string][]byte{CACertKey: b.CA, CAKeyKey: b.CAKey, CertKey: b.Cert, KeyKey: b.Key}
}

// Ensure returns a bundle whose CA (named caName) is not due for renewal and whose
// serving certificate (named commonName) is signed by it, covers names and is valid
// for at least renewBefore; changed says whether it differs from b. A CA that is kept
// keeps every client's trust.
func (b Bundle) Ensure(caName, commonName string, names Names, now time.Time, renewBefore time.Duration) (Bundle, bool, error) {
	ca, caKey, err := ParseCA(b.CA, b.CAKey)
	newCA := err != nil || CANeedsRenewal(ca, now)
	if newCA {
		if b.CA, b.CAKey, err = NewCA(caName, now); err != nil {
			return b, false, err
		}
		if ca, caKey, err = ParseCA(b.CA, b.CAKey); err != nil {
			return b, false, err
		}
	}
	if !newCA && servingOK(b.Cert, b.Key, ca, names, now, renewBefore) {
		return b, false, nil
	}
	if b.Cert, b.Key, err = issueServing(ca, caKey, commonName, names, now); err != nil {
		return b, false, err
	}
	return b, true, nil
}

func servingOK(certPEM, keyPEM []byte, ca *x509.Certificate, names Names, now time.Time, renewBefore time.Duration) bool {
	cert, err := ParseCert(certPEM)
	if err != nil || now.Add(renewBefore).After(cert.NotAfter) || cert.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, n := range names.All() {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	_, err = tls.X509KeyPair(certPEM, keyPEM)
	return err == nil
}

// issueServing issues a serving certificate for names, signed by ca, valid for
// ServingLifetime (or until the CA ends, if sooner).
func issueServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, commonName string, names Names, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ServingLifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: Serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names.DNS,
		IPAddresses:  names.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return PEM("CERTIFICATE", der), PEM("EC PRIVATE KEY", keyDER), nil
}

// NewCA creates a CA named cn@<unix time>, valid for CALifetime from now, and returns
// its certificate and key in PEM.
func NewCA(cn string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          Serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", cn, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return PEM("CERTIFICATE", der), PEM("EC PRIVATE KEY", keyDER), nil
}

// ParseCA parses a CA certificate and its EC key from PEM.
func ParseCA(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ca, err := ParseCert(certPEM)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, nil, errors.New("no PEM key")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !ca.IsCA {
		return nil, nil, errors.New("not a CA")
	}
	return ca, key, nil
}

// ParseCert parses one PEM certificate.
func ParseCert(p []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// CANeedsRenewal reports whether a CA is closer than CARenewBefore to its end.
func CANeedsRenewal(ca *x509.Certificate, now time.Time) bool {
	return now.Add(CARenewBefore).After(ca.NotAfter)
}

// Serial returns a random certificate serial number.
func Serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// PEM encodes der as a PEM block of type typ.
func PEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// EnsureSecret makes Secret key hold what update makes of its data: it reads the
// Secret (an absent one has no data), and writes update's result when update says it
// changed, creating the Secret with typ and labels if needed. Replicas share the
// Secret: when another one wrote it meanwhile, EnsureSecret reads again and goes by
// theirs. It returns the data the Secret now holds, and whether this call wrote it.
func EnsureSecret(ctx context.Context, r client.Reader, w client.Writer, key client.ObjectKey, typ corev1.SecretType,
	labels map[string]string, update func(map[string][]byte) (map[string][]byte, bool, error)) (map[string][]byte, bool, error) {
	for range 5 {
		var secret corev1.Secret
		err := r.Get(ctx, key, &secret)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, false, fmt.Errorf("read secret %s: %w", key, err)
		}
		data, changed, err := update(secret.Data)
		if err != nil {
			return nil, false, err
		}
		if !changed {
			return data, false, nil
		}
		secret.ObjectMeta = metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, ResourceVersion: secret.ResourceVersion, Labels: labels}
		secret.Type = typ
		secret.Data = data
		if exists {
			err = w.Update(ctx, &secret)
		} else {
			err = w.Create(ctx, &secret)
		}
		switch {
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			continue // another replica wrote it first: go by theirs
		case err != nil:
			return nil, false, fmt.Errorf("write secret %s: %w", key, err)
		}
		return data, true, nil
	}
	return nil, false, fmt.Errorf("secret %s keeps changing under us", key)
}
