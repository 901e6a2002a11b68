package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/drover-io/drover/selfcert"
)

var caKey = client.ObjectKey{Namespace: testNS, Name: CASecretName}

func getCASecret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(context.Background(), caKey, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// sameSigner reports whether two signers hold the same CA, key and peer token.
func sameSigner(a, b *signer) bool {
	return a.cert.Equal(b.cert) && a.key.Equal(b.key) && a.peerToken == b.peerToken
}

// checkStored fails unless the Secret holds exactly what s was loaded from.
func checkStored(t *testing.T, c client.Client, s *signer) {
	t.Helper()
	sec := getCASecret(t, c)
	ca, key, err := selfcert.ParseCA(sec.Data[caCertKey], sec.Data[caKeyKey])
	if err != nil {
		t.Fatalf("stored CA: %v", err)
	}
	if !ca.Equal(s.cert) || !key.Equal(s.key) || string(sec.Data[peerTokenKey]) != s.peerToken {
		t.Fatal("the signer does not hold what the Secret holds")
	}
}

// countingClient counts writes to a fake client.
func countingClient(objs ...client.Object) (client.WithWatch, *atomic.Int32, *atomic.Int32) {
	var creates, updates atomic.Int32
	c := fake.NewClientBuilder().WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			creates.Add(1)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			updates.Add(1)
			return c.Update(ctx, obj, opts...)
		},
	}).Build()
	return c, &creates, &updates
}

func TestLoadSignerCreatesTheSecretOnceThenReusesIt(t *testing.T) {
	ctx := context.Background()
	c, creates, updates := countingClient()
	first, err := loadSigner(ctx, c, c, testNS)
	if err != nil {
		t.Fatal(err)
	}
	if creates.Load() != 1 || updates.Load() != 0 {
		t.Fatalf("first load: %d creates, %d updates; want 1, 0", creates.Load(), updates.Load())
	}
	sec := getCASecret(t, c)
	if sec.Type != corev1.SecretTypeOpaque {
		t.Errorf("type %q", sec.Type)
	}
	if sec.Labels["app.kubernetes.io/managed-by"] != "drover" || sec.Labels["app.kubernetes.io/component"] != "hub-server" {
		t.Errorf("labels %v", sec.Labels)
	}
	checkStored(t, c, first)
	if !first.cert.IsCA || !strings.HasPrefix(first.cert.Subject.CommonName, "drover-agent-ca@") {
		t.Errorf("CA %q, IsCA %v", first.cert.Subject.CommonName, first.cert.IsCA)
	}
	if len(first.peerToken) < 32 {
		t.Errorf("peer token of %d characters", len(first.peerToken))
	}
	if !first.pool.Equal(func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(first.cert); return p }()) {
		t.Error("the pool does not hold exactly the CA")
	}
	rv := sec.ResourceVersion

	second, err := loadSigner(ctx, c, c, testNS)
	if err != nil {
		t.Fatal(err)
	}
	if !sameSigner(first, second) {
		t.Fatal("a second load made a new CA or peer token")
	}
	if creates.Load() != 1 || updates.Load() != 0 || getCASecret(t, c).ResourceVersion != rv {
		t.Fatalf("a second load wrote the Secret: %d creates, %d updates", creates.Load(), updates.Load())
	}
}

func TestLoadSignerRepairsTheSecret(t *testing.T) {
	good := newTestSigner(t)
	goodCert := selfcert.PEM("CERTIFICATE", good.cert.Raw)
	keyDER, err := x509.MarshalECPrivateKey(good.key)
	if err != nil {
		t.Fatal(err)
	}
	goodKey := selfcert.PEM("EC PRIVATE KEY", keyDER)
	// A CA issued nine and a half years ago has half a year left: it is renewed.
	oldCert, oldKey, err := selfcert.NewCA("drover-agent-ca", time.Now().Add(-(9*365+182)*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// A certificate that is not a CA, with its key.
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: selfcert.Serial(), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, good.cert, &leafKey.PublicKey, good.key)
	if err != nil {
		t.Fatal(err)
	}
	leafKeyDER, _ := x509.MarshalECPrivateKey(leafKey)
	token := strings.Repeat("t", 43)

	cases := []struct {
		name              string
		data              map[string][]byte
		write, keepCA     bool
		keepToken         bool
		wantTokenNotEqual string
	}{
		{name: "valid: used as it is", data: map[string][]byte{caCertKey: goodCert, caKeyKey: goodKey, peerTokenKey: []byte(token)}, keepCA: true, keepToken: true},
		{name: "empty Secret: filled", data: nil, write: true},
		{name: "garbage CA: a new CA, same peer token", data: map[string][]byte{caCertKey: []byte("x"), caKeyKey: []byte("y"), peerTokenKey: []byte(token)}, write: true, keepToken: true},
		{name: "CA without its key: a new CA", data: map[string][]byte{caCertKey: goodCert, peerTokenKey: []byte(token)}, write: true, keepToken: true},
		{name: "not a CA: a new CA", data: map[string][]byte{caCertKey: selfcert.PEM("CERTIFICATE", leafDER), caKeyKey: selfcert.PEM("EC PRIVATE KEY", leafKeyDER), peerTokenKey: []byte(token)}, write: true, keepToken: true},
		{name: "CA near its end: a new CA, same peer token", data: map[string][]byte{caCertKey: oldCert, caKeyKey: oldKey, peerTokenKey: []byte(token)}, write: true, keepToken: true},
		{name: "peer token too short: a new token, same CA", data: map[string][]byte{caCertKey: goodCert, caKeyKey: goodKey, peerTokenKey: []byte("short")}, write: true, keepCA: true, wantTokenNotEqual: "short"},
		{name: "no peer token: a new token, same CA", data: map[string][]byte{caCertKey: goodCert, caKeyKey: goodKey}, write: true, keepCA: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			existing := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: testNS}, Data: tc.data}
			c, creates, updates := countingClient(existing)
			s, err := loadSigner(context.Background(), c, c, testNS)
			if err != nil {
				t.Fatal(err)
			}
			if creates.Load() != 0 {
				t.Errorf("created the Secret that exists")
			}
			if wrote := updates.Load() == 1; wrote != tc.write || updates.Load() > 1 {
				t.Errorf("%d updates, want a write: %v", updates.Load(), tc.write)
			}
			checkStored(t, c, s)
			if selfcert.CANeedsRenewal(s.cert, time.Now()) {
				t.Error("the CA needs renewal already")
			}
			if kept := s.cert.Equal(good.cert); kept != tc.keepCA {
				t.Errorf("kept the CA: %v, want %v", kept, tc.keepCA)
			}
			if kept := s.peerToken == token; kept != tc.keepToken {
				t.Errorf("kept the peer token: %v, want %v", kept, tc.keepToken)
			}
			if len(s.peerToken) < 32 || s.peerToken == tc.wantTokenNotEqual {
				t.Errorf("peer token %q", s.peerToken)
			}
		})
	}
}

func TestLoadSignerReplicasRacingEndWithTheSameCA(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	const replicas = 4
	signers := make([]*signer, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			signers[i], errs[i] = loadSigner(context.Background(), c, c, testNS)
		}()
	}
	close(start)
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if !sameSigner(signers[0], signers[i]) {
			t.Fatalf("replica %d ended with another CA or peer token", i)
		}
	}
	checkStored(t, c, signers[0])
}

func TestLoadSignerUsesTheSecretAnotherReplicaWroteFirst(t *testing.T) {
	theirs := newTestSigner(t)
	theirCert := selfcert.PEM("CERTIFICATE", theirs.cert.Raw)
	keyDER, _ := x509.MarshalECPrivateKey(theirs.key)
	theirKey := selfcert.PEM("EC PRIVATE KEY", keyDER)
	theirData := map[string][]byte{caCertKey: theirCert, caKeyKey: theirKey, peerTokenKey: []byte(theirs.peerToken)}

	t.Run("create loses", func(t *testing.T) {
		var once sync.Once
		c := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				once.Do(func() {
					if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: testNS}, Data: theirData}); err != nil {
						t.Error(err)
					}
				})
				return c.Create(ctx, obj, opts...)
			},
		}).Build()
		s, err := loadSigner(context.Background(), c, c, testNS)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSigner(s, theirs) {
			t.Fatal("did not use the other replica's CA")
		}
		checkStored(t, c, s)
	})

	t.Run("update conflicts", func(t *testing.T) {
		var once sync.Once
		garbage := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: testNS}, Data: map[string][]byte{caCertKey: []byte("x")}}
		c := fake.NewClientBuilder().WithObjects(garbage).WithInterceptorFuncs(interceptor.Funcs{
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				once.Do(func() {
					var cur corev1.Secret
					if err := c.Get(ctx, caKey, &cur); err != nil {
						t.Error(err)
					}
					cur.Data = theirData
					if err := c.Update(ctx, &cur); err != nil {
						t.Error(err)
					}
				})
				return c.Update(ctx, obj, opts...)
			},
		}).Build()
		s, err := loadSigner(context.Background(), c, c, testNS)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSigner(s, theirs) {
			t.Fatal("did not use the other replica's CA")
		}
	})
}

func TestLoadSignerErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "secrets"}
	cases := []struct {
		name  string
		funcs interceptor.Funcs
		want  string
	}{
		{"cannot read", interceptor.Funcs{
			Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
				return apierrors.NewForbidden(gr, CASecretName, errors.New("no"))
			}}, "read secret"},
		{"cannot write", interceptor.Funcs{
			Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
				return apierrors.NewForbidden(gr, CASecretName, errors.New("no"))
			}}, "write secret"},
		{"keeps changing", interceptor.Funcs{
			Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
				return apierrors.NewAlreadyExists(gr, CASecretName)
			}}, "keeps changing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithInterceptorFuncs(tc.funcs).Build()
			s, err := loadSigner(context.Background(), c, c, testNS)
			if err == nil || s != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("signer %v, error %v; want an error with %q", s, err, tc.want)
			}
		})
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	s := newTestSigner(t)
	key, csr := newCSR(t)
	id := Identity{Cluster: "alpha", UID: "0f4c6a2e-uid", ClusterID: "kube-system-uid"}
	now := time.Now()
	certPEM, _, err := s.sign(csr, id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCertPEM(t, certPEM)
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:drover:agent:alpha:0f4c6a2e-uid:kube-system-uid" {
		t.Fatalf("URI SANs %v", cert.URIs)
	}
	if cert.Subject.CommonName != "drover-agent:alpha" {
		t.Errorf("subject %q", cert.Subject.CommonName)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Errorf("usage %v, CA %v", cert.ExtKeyUsage, cert.IsCA)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		t.Error("the certificate is not for the CSR's key")
	}
	if d := cert.NotBefore.Sub(now.Add(-5 * time.Minute)); d > 0 || d < -time.Second {
		t.Errorf("NotBefore %v, want 5 minutes before %v", cert.NotBefore, now)
	}
	if d := cert.NotAfter.Sub(now.Add(time.Hour)); d > 0 || d < -time.Second {
		t.Errorf("NotAfter %v, want an hour after %v", cert.NotAfter, now)
	}
	if err := cert.CheckSignatureFrom(s.cert); err != nil {
		t.Error(err)
	}
	want := id
	want.NotAfter = cert.NotAfter
	for name, at := range map[string]time.Time{"now": now, "at NotBefore": cert.NotBefore, "at NotAfter": cert.NotAfter} {
		got, err := s.verify(cert, at)
		if err != nil || got != want {
			t.Errorf("verify %s: %+v, %v; want %+v", name, got, err, want)
		}
	}
	if got, err := identityOf(cert); err != nil || got != want {
		t.Errorf("identityOf: %+v, %v", got, err)
	}
	// Two credentials never share a serial number.
	other, _, err := s.sign(csr, id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if parseCertPEM(t, other).SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Error("the same serial number twice")
	}
}

func TestSignCapsNotAfterAtTheCA(t *testing.T) {
	s := newTestSigner(t)
	_, csr := newCSR(t)
	certPEM, _, err := s.sign(csr, Identity{Cluster: "alpha", UID: "u", ClusterID: "c"}, 100*365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCertPEM(t, certPEM)
	if !cert.NotAfter.Equal(s.cert.NotAfter) {
		t.Fatalf("NotAfter %v, want the CA's %v", cert.NotAfter, s.cert.NotAfter)
	}
	if _, err := s.verify(cert, s.cert.NotAfter); err != nil {
		t.Fatal(err)
	}
}

// rawCert issues a certificate from tmpl with the signer's CA, without sign's rules.
func rawCert(t *testing.T, s *signer, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = selfcert.Serial()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, &key.PublicKey, s.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestVerifyRejects(t *testing.T) {
	s := newTestSigner(t)
	other := newTestSigner(t)
	id := Identity{Cluster: "alpha", UID: "uid", ClusterID: "cid"}
	now := time.Now()
	_, valid := credentialFrom(t, s, id, time.Hour, now)
	_, foreign := credentialFrom(t, other, id, time.Hour, now)
	_, expired := credentialFrom(t, s, id, time.Hour, now.Add(-2*time.Hour))
	agentURI, _ := url.Parse("urn:drover:agent:alpha:uid:cid")
	serverAuth := rawCert(t, s, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, URIs: []*url.URL{agentURI}})
	noURI := rawCert(t, s, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	// A CA that is not the hub's own, but names itself the same.
	selfSigned := func() *x509.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := *s.cert
		tmpl.URIs = []*url.URL{agentURI}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.PublicKey = nil
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}()

	// The valid one passes, so that the others fail for their own reason.
	if _, err := s.verify(valid, now); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cert *x509.Certificate
		at   time.Time
	}{
		{"issued by another CA", foreign, now},
		{"self-signed, named like the CA", selfSigned, now},
		{"expired", expired, now},
		{"valid one, a second after NotAfter", valid, valid.NotAfter.Add(time.Second)},
		{"valid one, before NotBefore", valid, valid.NotBefore.Add(-time.Second)},
		{"server, not client, authentication", serverAuth, now},
		{"no URI SAN", noURI, now},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := s.verify(tc.cert, tc.at); err == nil {
				t.Fatalf("accepted as %+v", got)
			}
		})
	}
}

func TestIdentityOf(t *testing.T) {
	notAfter := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name string
		uris []string
		want *Identity
	}{
		{"one agent URI", []string{"urn:drover:agent:alpha:uid:cid"}, &Identity{Cluster: "alpha", UID: "uid", ClusterID: "cid"}},
		{"after URIs of other kinds", []string{"spiffe://example.org/ns/x", "urn:drover:hub:x:y:z", "urn:drover:agent:beta.example:uid-2:cid-2"}, &Identity{Cluster: "beta.example", UID: "uid-2", ClusterID: "cid-2"}},
		{"empty cluster ID", []string{"urn:drover:agent:alpha:uid:"}, &Identity{Cluster: "alpha", UID: "uid"}},
		{"no URI", nil, nil},
		{"other kinds only", []string{"spiffe://example.org/agent/alpha", "urn:drover:hub:alpha:uid:cid"}, nil},
		{"empty cluster", []string{"urn:drover:agent::uid:cid"}, nil},
		{"empty UID", []string{"urn:drover:agent:alpha::cid"}, nil},
		{"too few parts", []string{"urn:drover:agent:alpha:uid"}, nil},
		{"too many parts", []string{"urn:drover:agent:alpha:uid:cid:extra"}, nil},
		{"prefix only", []string{"urn:drover:agent:"}, nil},
		{"a malformed agent URI is not skipped for a later one", []string{"urn:drover:agent:alpha", "urn:drover:agent:beta:uid:cid"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert := &x509.Certificate{NotAfter: notAfter}
			for _, s := range tc.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				cert.URIs = append(cert.URIs, u)
			}
			got, err := identityOf(cert)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted as %+v", got)
				}
				return
			}
			want := *tc.want
			want.NotAfter = notAfter
			if err != nil || got != want {
				t.Fatalf("got %+v, %v; want %+v", got, err, want)
			}
		})
	}
}

func TestSignRejectsBadCSRs(t *testing.T) {
	s := newTestSigner(t)
	_, csr := newCSR(t)
	block, _ := pem.Decode(csr)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-1] ^= 0xff // the signature's last byte
	// The CSR parses: only its signature is wrong.
	if _, err := x509.ParseCertificateRequest(tampered); err != nil {
		t.Fatalf("the tampered CSR does not parse: %v", err)
	}
	cases := []struct {
		name string
		csr  []byte
		want string
	}{
		{"empty", nil, "not a PEM"},
		{"garbage", []byte("garbage"), "not a PEM"},
		{"a certificate, not a request", selfcert.PEM("CERTIFICATE", block.Bytes), "not a PEM"},
		{"garbage in the PEM block", selfcert.PEM("CERTIFICATE REQUEST", []byte("garbage")), "cannot be parsed"},
		{"bad signature", selfcert.PEM("CERTIFICATE REQUEST", tampered), "signature is invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := s.sign(tc.csr, Identity{Cluster: "alpha", UID: "u", ClusterID: "c"}, time.Hour, time.Now())
			if err == nil || out != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %q, %v; want an error with %q", out, err, tc.want)
			}
		})
	}
	// The untampered one is signed, so the cases above fail for their own reason.
	if _, _, err := s.sign(csr, Identity{Cluster: "alpha", UID: "u", ClusterID: "c"}, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestTokensEqual(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"abcdef0123456789", "abcdef0123456789", true},
		{"abcdef0123456789", "abcdef0123456788", false},
		{"abcdef0123456789", "Abcdef0123456789", false},
		{"abcdef0123456789", "abcdef012345678", false},
		{"abcdef012345678", "abcdef0123456789", false},
		{"abcdef0123456789", "abcdef0123456789 ", false},
		{"abcdef0123456789", "", false},
		{"", "abcdef0123456789", false},
		{"", "", true},
	}
	for _, tc := range cases {
		if got := tokensEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("tokensEqual(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
