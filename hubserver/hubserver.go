// Package hubserver is the manager's one HTTPS endpoint for everything that agents,
// nodes and people reach from outside the hub: the agent tunnel, registration
// manifests, node registration, the authentication proxy and artifacts. Each of those
// registers its routes with Handle; this package serves them with TLS.
//
// TLS comes from --hub-cert-dir (tls.crt and tls.key, reloaded when they change), or
// else from a self-signed CA and serving certificate that the server creates, keeps in
// Secret <namespace>/drover-hub-tls and renews before they expire. The CA is published
// in ConfigMap <namespace>/drover-hub-ca, key ca.crt, for agents and kubeconfigs.
// Several replicas share one Secret: whoever writes first wins, the others read it.
package hubserver

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/selfcert"
)

// The hub server keeps its certificate in a Secret and publishes its CA in a
// ConfigMap, both in the operator namespace.
//
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=configmaps,verbs=get;create;update

// Names in the operator namespace; they are part of Drover's contract.
const (
	// TLSSecretName holds the self-managed CA and serving certificate (keys ca.crt,
	// ca.key, tls.crt, tls.key).
	TLSSecretName = "drover-hub-tls"
	// CAConfigMapName publishes the CA under key ca.crt.
	CAConfigMapName = "drover-hub-ca"
	// CAKey is the key of the CA certificate in the ConfigMap and the Secret.
	CAKey = "ca.crt"
	// URLKey is the key of the hub server's URL (--hub-url) in the ConfigMap, for
	// `drover kubeconfig`.
	URLKey = "url"
)

// Options configure the hub server.
type Options struct {
	// BindAddress is where the server listens (--hub-bind-address); "0" disables it.
	BindAddress string
	// URL is where agents, nodes and people reach the server (--hub-url). Its host
	// goes into the self-managed serving certificate.
	URL string
	// CertDir, if set, holds tls.crt and tls.key (and optionally ca.crt) to serve
	// with instead of the self-managed certificate (--hub-cert-dir).
	CertDir string
	// Namespace is the operator namespace, which holds the Secret and ConfigMap.
	Namespace string
	// RenewBefore is how long before its expiry the self-managed serving certificate
	// is renewed; RenewCheck is how often that is checked.
	RenewBefore, RenewCheck time.Duration
}

// DefaultBindAddress is the default of --hub-bind-address.
const DefaultBindAddress = ":9443"

// BindFlags registers the hub server's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BindAddress, "hub-bind-address", DefaultBindAddress, "Address the hub server (agent tunnel, registration, authentication proxy) listens on; 0 disables it.")
	fs.StringVar(&o.URL, "hub-url", "", "URL at which agents, nodes and users reach the hub server, e.g. https://drover.example.com; it goes into manifests and kubeconfigs. Default: https://localhost:<port of --hub-bind-address>.")
	fs.StringVar(&o.CertDir, "hub-cert-dir", "", "Directory with tls.crt and tls.key (and optionally ca.crt) for the hub server. Default: a self-signed CA and certificate kept in Secret drover-hub-tls in the operator namespace.")
}

// Server is the hub server. It is a manager Runnable that runs on every replica.
type Server struct {
	opts   Options
	reader client.Reader
	writer client.Client
	mux    *http.ServeMux

	cert atomic.Pointer[tls.Certificate]
	// ca is the PEM of the CA that signs the serving certificate, when known.
	ca atomic.Pointer[[]byte]

	mu       sync.Mutex
	listener net.Listener
	ready    chan struct{}
}

// New returns a hub server. reader reads the Secret and ConfigMap straight from the
// API server; writer writes them.
func New(opts Options, reader client.Reader, writer client.Client) (*Server, error) {
	if opts.RenewBefore <= 0 {
		opts.RenewBefore = 30 * 24 * time.Hour
	}
	if opts.RenewCheck <= 0 {
		opts.RenewCheck = time.Hour
	}
	if opts.URL == "" {
		_, port, err := net.SplitHostPort(opts.BindAddress)
		if err != nil {
			return nil, fmt.Errorf("--hub-bind-address %q: %w", opts.BindAddress, err)
		}
		opts.URL = "https://localhost:" + port
	}
	u, err := url.Parse(opts.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--hub-url %q: want https://host[:port][/path], with no credentials, query or fragment", opts.URL)
	}
	s := &Server{opts: opts, reader: reader, writer: writer, mux: http.NewServeMux(), ready: make(chan struct{})}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	return s, nil
}

// URL returns the URL at which the server is reached.
func (s *Server) URL() string { return s.opts.URL }

// Handle registers a route (an http.ServeMux pattern).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// CA returns the PEM of the CA that clients verify the server with, or nil when it
// is not known (a --hub-cert-dir without ca.crt).
func (s *Server) CA() []byte {
	if p := s.ca.Load(); p != nil {
		return *p
	}
	return nil
}

// Addr returns the address the server listens on, once it does.
func (s *Server) Addr() net.Addr {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listener.Addr()
}

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// Start loads or creates the certificate, then serves until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	log := ctrl.Log.WithName("hubserver")
	getCert, err := s.setupTLS(ctx)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.opts.BindAddress)
	if err != nil {
		return fmt.Errorf("hub server: listen on %s: %w", s.opts.BindAddress, err)
	}
	s.mu.Lock()
	s.listener = ln
	s.mu.Unlock()
	close(s.ready)
	srv := &http.Server{
		Handler:           canonicalPaths(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		// Agents authenticate with client certificates signed by the agent
		// credential CA; the handlers that accept them verify them (the TLS layer
		// only asks, so that browsers and kubectl are not prompted).
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert, ClientAuth: tls.RequestClientCert},
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	log.Info("Serving", "address", ln.Addr().String(), "url", s.opts.URL)
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("hub server: %w", err)
	}
}

// setupTLS returns the certificate source: files from CertDir, or the self-managed
// certificate, renewed in the background.
func (s *Server) setupTLS(ctx context.Context) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	if s.opts.CertDir != "" {
		w, err := certwatcher.New(filepath.Join(s.opts.CertDir, "tls.crt"), filepath.Join(s.opts.CertDir, "tls.key"))
		if err != nil {
			return nil, fmt.Errorf("hub server: --hub-cert-dir %s: %w", s.opts.CertDir, err)
		}
		go func() { _ = w.Start(ctx) }()
		if ca, err := os.ReadFile(filepath.Join(s.opts.CertDir, CAKey)); err == nil {
			s.ca.Store(&ca)
			if err := s.publishCA(ctx, ca); err != nil {
				return nil, err
			}
		}
		return w.GetCertificate, nil
	}
	if err := s.ensureSelfManaged(ctx); err != nil {
		return nil, err
	}
	go func() {
		t := time.NewTicker(s.opts.RenewCheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.ensureSelfManaged(ctx); err != nil {
					ctrl.Log.WithName("hubserver").Error(err, "Cannot renew the hub server's certificate; retrying at the next check")
				}
			}
		}
	}()
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }, nil
}

// ensureSelfManaged makes Secret drover-hub-tls hold a valid CA and a serving
// certificate for the hub URL's host that is not about to expire, loads it, and
// publishes the CA.
func (s *Server) ensureSelfManaged(ctx context.Context) error {
	key := client.ObjectKey{Namespace: s.opts.Namespace, Name: TLSSecretName}
	host := hostOf(s.opts.URL)
	names := selfcert.NamesFor(host, "drover-hub."+s.opts.Namespace+".svc", "drover-hub."+s.opts.Namespace+".svc.cluster.local")
	data, issued, err := selfcert.EnsureSecret(ctx, s.reader, s.writer, key, corev1.SecretTypeTLS,
		map[string]string{"app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": "hub-server"},
		func(data map[string][]byte) (map[string][]byte, bool, error) {
			next, changed, err := selfcert.BundleFrom(data).Ensure("drover-hub-ca", "drover-hub", names, time.Now(), s.opts.RenewBefore)
			return next.Data(), changed, err
		})
	if err != nil {
		return fmt.Errorf("hub server: certificate for %s: %w", host, err)
	}
	b := selfcert.BundleFrom(data)
	if issued {
		ctrl.Log.WithName("hubserver").Info("Issued the hub server's certificate", "secret", key.String(), "host", host)
	}
	cert, err := tls.X509KeyPair(append(append([]byte(nil), b.Cert...), b.CA...), b.Key)
	if err != nil {
		return fmt.Errorf("hub server: secret %s does not hold a usable key pair: %w", key, err)
	}
	s.cert.Store(&cert)
	ca := append([]byte(nil), b.CA...)
	s.ca.Store(&ca)
	return s.publishCA(ctx, b.CA)
}

// publishCA writes the CA and the hub URL to ConfigMap drover-hub-ca (keys ca.crt and
// url) when they differ.
func (s *Server) publishCA(ctx context.Context, ca []byte) error {
	key := client.ObjectKey{Namespace: s.opts.Namespace, Name: CAConfigMapName}
	want := map[string]string{CAKey: string(ca), URLKey: s.opts.URL}
	for attempt := 0; attempt < 5; attempt++ {
		var cm corev1.ConfigMap
		err := s.reader.Get(ctx, key, &cm)
		switch {
		case apierrors.IsNotFound(err):
			cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": "hub-server"}},
				Data: want}
			err = s.writer.Create(ctx, &cm)
		case err != nil:
			return fmt.Errorf("hub server: read configmap %s: %w", key, err)
		case cm.Data[CAKey] == want[CAKey] && cm.Data[URLKey] == want[URLKey]:
			return nil
		default:
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			for k, v := range want {
				cm.Data[k] = v
			}
			err = s.writer.Update(ctx, &cm)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("hub server: write configmap %s: %w", key, err)
		}
		return nil
	}
	return fmt.Errorf("hub server: configmap %s keeps changing under us", key)
}

// canonicalPaths refuses, with 400, a path that is not in canonical form: dot
// segments, repeated slashes, or encoded slashes and backslashes. http.ServeMux
// would redirect such a path to its cleaned form, which for the authentication proxy
// could lead from one cluster's prefix into another's.
func canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := strings.ToLower(r.URL.EscapedPath())
		if r.Method != http.MethodConnect && (strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") ||
			strings.Contains(r.URL.Path, "\\") || strings.Contains(r.URL.Path, "//") || hasDotSegment(r.URL.Path)) {
			http.Error(w, "the request path must not contain '.', '..' or empty segments, or encoded slashes", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func hasDotSegment(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Hostname()
}
