package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/selfcert"
)

// CASecretName is the Secret, in the operator namespace, that holds the CA signing
// agent credentials (tls.crt, tls.key) and the token replicas use to reach each other
// (peer-token). The manager creates it; every replica reads it.
const CASecretName = "drover-agent-ca"

// Keys of Secret drover-agent-ca.
const (
	caCertKey    = "tls.crt"
	caKeyKey     = "tls.key"
	peerTokenKey = "peer-token"
)

// credentialURIScheme prefixes the URI SAN that says whom an agent credential is for:
// urn:drover:agent:<cluster>:<ManagedCluster UID>:<kube-system UID>.
const credentialURIPrefix = "urn:drover:agent:"

// Identity is what an agent credential says about its holder.
type Identity struct {
	// Cluster is the ManagedCluster's name.
	Cluster string
	// UID is the ManagedCluster's UID: a credential issued for a ManagedCluster that
	// was deleted never opens a tunnel for a new one of the same name.
	UID string
	// ClusterID is the UID of the target's kube-system namespace, which the agent
	// reported when the credential was issued.
	ClusterID string
	// NotAfter is when the credential expires.
	NotAfter time.Time
}

// signer issues and checks agent credentials.
type signer struct {
	cert      *x509.Certificate
	key       *ecdsa.PrivateKey
	pool      *x509.CertPool
	peerToken string
}

// loadSigner reads Secret drover-agent-ca, creating it (or a new CA, when the old is
// near its end) if needed. Replicas racing to create it all end with the same one.
func loadSigner(ctx context.Context, reader client.Reader, writer client.Client, namespace string) (*signer, error) {
	key := client.ObjectKey{Namespace: namespace, Name: CASecretName}
	data, created, err := selfcert.EnsureSecret(ctx, reader, writer, key, corev1.SecretTypeOpaque,
		map[string]string{"app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": "hub-server"},
		func(cur map[string][]byte) (map[string][]byte, bool, error) {
			data := maps.Clone(cur)
			if data == nil {
				data = map[string][]byte{}
			}
			changed := false
			if ca, _, err := selfcert.ParseCA(data[caCertKey], data[caKeyKey]); err != nil || selfcert.CANeedsRenewal(ca, time.Now()) {
				certPEM, keyPEM, err := selfcert.NewCA("drover-agent-ca", time.Now())
				if err != nil {
					return nil, false, err
				}
				data[caCertKey], data[caKeyKey] = certPEM, keyPEM
				changed = true
			}
			if len(data[peerTokenKey]) < 32 {
				b := make([]byte, 32)
				if _, err := rand.Read(b); err != nil {
					return nil, false, err
				}
				data[peerTokenKey] = []byte(base64.RawURLEncoding.EncodeToString(b))
				changed = true
			}
			return data, changed, nil
		})
	if err != nil {
		return nil, err
	}
	if created {
		ctrl.Log.WithName("tunnel").Info("Created the agent credential CA", "secret", key.String())
	}
	ca, caKey, err := selfcert.ParseCA(data[caCertKey], data[caKeyKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s does not hold a usable CA: %w", key, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &signer{cert: ca, key: caKey, pool: pool, peerToken: string(data[peerTokenKey])}, nil
}

// sign issues a client certificate for the public key in csrPEM, naming id.
func (s *signer) sign(csrPEM []byte, id Identity, ttl time.Duration, now time.Time) ([]byte, time.Time, error) {
	return selfcert.NewClientCA(s.cert, s.key).Sign(csrPEM, "drover-agent:"+id.Cluster,
		credentialURIPrefix+id.Cluster+":"+id.UID+":"+id.ClusterID, ttl, now)
}

// verify checks that cert was issued by this CA for client authentication and has
// not expired, and returns whom it names.
func (s *signer) verify(cert *x509.Certificate, now time.Time) (Identity, error) {
	if _, err := selfcert.NewClientCA(s.cert, s.key).Verify(cert, now); err != nil {
		return Identity{}, fmt.Errorf("the client certificate is not a valid agent credential: %w", err)
	}
	return identityOf(cert)
}

// identityOf reads the identity from a credential's URI SAN.
func identityOf(cert *x509.Certificate) (Identity, error) {
	for _, u := range cert.URIs {
		rest, ok := strings.CutPrefix(u.String(), credentialURIPrefix)
		if !ok {
			continue
		}
		parts := strings.Split(rest, ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
			break
		}
		return Identity{Cluster: parts[0], UID: parts[1], ClusterID: parts[2], NotAfter: cert.NotAfter}, nil
	}
	return Identity{}, errors.New("the client certificate names no cluster")
}

// tokensEqual compares two tokens in constant time.
func tokensEqual(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
