package simcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// PathPrefix is where each cluster's API is served: PathPrefix + name.
const PathPrefix = "/clusters/"

// Server serves every simulated cluster behind one TLS listener.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	caPEM  []byte
	url    string
	closed atomic.Bool

	mu       sync.RWMutex
	clusters map[string]*Cluster
}

// Start listens on a free loopback port and serves until Close.
func Start() (*Server, error) {
	cert, caPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, caPEM: caPEM, url: "https://" + ln.Addr().String(), clusters: map[string]*Cluster{}}
	s.srv = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
		// The clients' own log lines about their connections are noise here.
		ErrorLog: nil,
	}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

// Close stops serving and ends every watch.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.RLock()
	for _, c := range s.clusters {
		c.closeWatches()
	}
	s.mu.RUnlock()
	return s.srv.Close()
}

// URL is the listener's base URL, https://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// CA is the PEM certificate that the listener's certificate chains to.
func (s *Server) CA() []byte { return append([]byte(nil), s.caPEM...) }

// AddCluster creates a simulated cluster with namespaces default, kube-system,
// kube-public and kube-node-lease and the ClusterRole cluster-admin, as a new
// cluster has them. It fails if the name is taken.
func (s *Server) AddCluster(name string) (*Cluster, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("invalid cluster name %q", name)
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	c := newCluster(s, name, hex.EncodeToString(tok))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clusters[name]; ok {
		return nil, fmt.Errorf("cluster %s exists", name)
	}
	s.clusters[name] = c
	return c, nil
}

// Cluster returns a simulated cluster by name, or nil.
func (s *Server) Cluster(name string) *Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusters[name]
}

// Clusters lists the simulated clusters by name.
func (s *Server) Clusters() []*Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Cluster, 0, len(s.clusters))
	for _, c := range s.clusters {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Counts sums the requests every cluster has served, by verb (get, list, watch,
// create, update, patch, apply, delete) plus "write" for all writes.
func (s *Server) Counts() map[string]int64 {
	out := map[string]int64{}
	for _, c := range s.Clusters() {
		for k, v := range c.Counts() {
			out[k] += v
		}
	}
	return out
}

// ServeHTTP routes /clusters/<name>/... to the cluster.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	name, p, _ := strings.Cut(rest, "/")
	c := s.Cluster(name)
	if c == nil {
		http.NotFound(w, r)
		return
	}
	c.serve(w, r, "/"+p)
}

// URL is the cluster's API server URL.
func (c *Cluster) URL() string { return c.server.url + PathPrefix + c.name }

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Token is the cluster's admin bearer token.
func (c *Cluster) Token() string { return c.token }

// RESTConfig is an admin client configuration for the cluster.
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{Host: c.URL(), BearerToken: c.token, TLSClientConfig: rest.TLSClientConfig{CAData: c.server.CA()},
		QPS: 1000, Burst: 2000}
}

// Kubeconfig is the cluster's admin kubeconfig, as a user stores it in a Secret.
func (c *Cluster) Kubeconfig() []byte {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[c.name] = &clientcmdapi.Cluster{Server: c.URL(), CertificateAuthorityData: c.server.CA()}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.token}
	cfg.Contexts[c.name] = &clientcmdapi.Context{Cluster: c.name, AuthInfo: "admin"}
	cfg.CurrentContext = c.name
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		// Writing a config built here cannot fail; say so loudly if it does.
		return []byte("# " + err.Error())
	}
	return b
}

func (c *Cluster) authenticate(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(c.token)) == 1
}

// selfSigned makes a certificate for 127.0.0.1 that is its own CA.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "simcluster"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, errors.Join(errors.New("simcluster: serving certificate"), err)
	}
	return cert, certPEM, nil
}
