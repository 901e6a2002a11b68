// Package admission is the manager's validating admission webhook: it refuses, at the
// hub's API server, what the CRDs' schemas and CEL rules cannot see because it needs
// other objects (inheritance cycles and unknown inherited RoleTemplates, a namespace
// claimed by a second ClusterProject, deleting a RoleTemplate that AccessBindings
// still grant), what needs the manager's configuration (the operator namespace in a
// project) and subjects no one may grant a role to.
//
// The webhook is served on its own listener (--webhook-bind-address), for the hub's
// API server only, by controller-runtime's webhook server, with one typed validator
// per kind. Its serving certificate is self-managed (a CA and a serving certificate
// in Secret <namespace>/drover-webhook-tls, renewed before they expire) unless
// --webhook-cert-dir provides one (cert-manager). The manager keeps the caBundle of
// ValidatingWebhookConfiguration drover-validating-webhook current itself. Outside a
// cluster (make dev, tests), --webhook-url makes it register that configuration too,
// pointing at the URL; in a cluster, config/webhook installs it, pointing at Service
// drover-webhook.
//
// The controllers never rely on the webhook: every object it refuses is also reported
// by them (Stalled, with the reason) and held, should it get past a webhook that was
// down or bypassed.
package admission

import (
	"bytes"
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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	cradmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/selfcert"
)

// The manager registers (with --webhook-url) or keeps the caBundle of (in a cluster)
// its ValidatingWebhookConfiguration.
//
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch;create;update;patch

// Names that are part of Drover's contract.
const (
	// DefaultBindAddress is the default of --webhook-bind-address.
	DefaultBindAddress = ":9444"
	// DefaultConfigurationName names the ValidatingWebhookConfiguration.
	DefaultConfigurationName = "drover-validating-webhook"
	// TLSSecretName, in the operator namespace, holds the self-managed CA and serving
	// certificate (keys ca.crt, ca.key, tls.crt, tls.key).
	TLSSecretName = "drover-webhook-tls"
	// ServiceName is the in-cluster Service (config/webhook) in front of the webhook.
	ServiceName = "drover-webhook"
)

// Paths of the webhooks on the server, one per kind.
const (
	AccessBindingPath  = "/validate-accessbindings"
	RoleTemplatePath   = "/validate-roletemplates"
	ClusterProjectPath = "/validate-clusterprojects"
)

// TimeoutSeconds is how long the API server waits for the webhook. The validators
// answer from the manager's cache in well under a millisecond and make at most one
// read of the API server before refusing, so 5 s is ample; and it is short, because
// with failurePolicy Fail a webhook that hangs (a replica stuck, a network partition)
// holds every write of these kinds for that long before the API server gives up and
// refuses it. The default, 10 s, and the maximum, 30 s, would let a slow webhook
// wedge kubectl and GitOps controllers for far longer than a retry takes.
const TimeoutSeconds int32 = 5

// Options configure the webhook.
type Options struct {
	// BindAddress is where the webhook listens (--webhook-bind-address); "0" disables it.
	BindAddress string
	// URL, outside a cluster, is where the hub's API server reaches the webhook
	// (--webhook-url); the manager then registers the configuration itself.
	URL string
	// CertDir, if set, holds tls.crt and tls.key (and optionally ca.crt) to serve
	// with instead of the self-managed certificate (--webhook-cert-dir).
	CertDir string
	// ConfigurationName names the ValidatingWebhookConfiguration.
	ConfigurationName string
	// Namespace is the operator namespace: it holds the Secret, and no project may
	// hold it. Set by the manager from --namespace.
	Namespace string
	// RenewBefore is how long before its expiry the self-managed serving certificate
	// is renewed; RenewCheck is how often the certificate and the configuration are
	// checked besides when they change.
	RenewBefore, RenewCheck time.Duration
}

// BindFlags registers the webhook's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BindAddress, "webhook-bind-address", DefaultBindAddress, "Address the admission webhook listens on, for the hub's API server only; 0 disables it.")
	fs.StringVar(&o.URL, "webhook-url", "", "Outside a cluster (make dev, tests): the URL at which the hub's API server reaches the admission webhook, e.g. https://127.0.0.1:9444; the manager then registers the ValidatingWebhookConfiguration itself. In a cluster leave it empty: config/webhook installs the configuration and the manager keeps its caBundle current.")
	fs.StringVar(&o.CertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key (and ca.crt, which goes into the configuration's caBundle) for the admission webhook, e.g. from cert-manager. Default: a self-signed CA and certificate kept in Secret drover-webhook-tls in the operator namespace.")
	fs.StringVar(&o.ConfigurationName, "webhook-configuration-name", DefaultConfigurationName, "Name of the ValidatingWebhookConfiguration the manager registers (with --webhook-url) or keeps the caBundle of.")
}

// Enabled tells whether the webhook is to be served.
func (o Options) Enabled() bool { return o.BindAddress != "" && o.BindAddress != "0" }

// Deps are what the webhook reads and writes on the hub.
type Deps struct {
	// Scheme decodes the objects under review.
	Scheme *runtime.Scheme
	// Cache is the manager's cache; the validators read it first.
	Cache client.Reader
	// Informers, when set, tell the server when its Secret or configuration changes
	// (the manager's cache); without them it checks every RenewCheck.
	Informers cache.Informers
	// Reader reads the API server directly; Client writes.
	Reader client.Reader
	Client client.Client
	// Authorizer answers whether a requester has the hub verbs bind and escalate;
	// nil asks the hub with SubjectAccessReviews through Client.
	Authorizer Authorizer
}

// Server is the webhook: a manager Runnable that runs on every replica.
type Server struct {
	opts    Options
	deps    Deps
	host    string
	port    int
	names   selfcert.Names
	log     logr.Logger
	kick    chan struct{}
	cert    atomic.Pointer[tls.Certificate]
	ca      atomic.Pointer[[]byte]
	watcher *certwatcher.CertWatcher
	serving atomic.Bool
	// missingLogged: the in-cluster configuration's absence was logged.
	missingLogged bool
}

// New checks the options and returns the webhook.
func New(opts Options, deps Deps) (*Server, error) {
	if opts.ConfigurationName == "" {
		opts.ConfigurationName = DefaultConfigurationName
	}
	if opts.RenewBefore <= 0 {
		opts.RenewBefore = 30 * 24 * time.Hour
	}
	if opts.RenewCheck <= 0 {
		opts.RenewCheck = time.Hour
	}
	host, portStr, err := net.SplitHostPort(opts.BindAddress)
	if err != nil {
		return nil, fmt.Errorf("--webhook-bind-address %q: %w", opts.BindAddress, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("--webhook-bind-address %q: want host:port with a port from 1 to 65535 (or 0 to disable the webhook)", opts.BindAddress)
	}
	urlHost := ""
	if opts.URL != "" {
		u, err := url.Parse(opts.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("--webhook-url %q: want https://host[:port][/path], with no credentials, query or fragment", opts.URL)
		}
		opts.URL = strings.TrimSuffix(opts.URL, "/")
		urlHost = u.Hostname()
	}
	return &Server{
		opts: opts, deps: deps, host: host, port: port,
		names: selfcert.NamesFor(urlHost, ServiceName+"."+opts.Namespace+".svc", ServiceName+"."+opts.Namespace+".svc.cluster.local"),
		log:   ctrl.Log.WithName("admission"),
		kick:  make(chan struct{}, 1),
	}, nil
}

// NeedLeaderElection is false: every replica serves, since the Service reaches any.
func (s *Server) NeedLeaderElection() bool { return false }

// ReadyCheck passes once the webhook serves with its certificate: a replica is not
// put behind the Service before.
func (s *Server) ReadyCheck() healthz.Checker {
	return func(*http.Request) error {
		if !s.serving.Load() {
			return errors.New("the admission webhook is not serving yet")
		}
		return nil
	}
}

// CA returns the PEM of the CA that the configuration's caBundle holds, or nil when it
// is not known (a --webhook-cert-dir without ca.crt).
func (s *Server) CA() []byte {
	if p := s.ca.Load(); p != nil {
		return *p
	}
	return nil
}

// Start loads or creates the certificate, serves, registers the configuration or
// keeps its caBundle current, and renews the certificate, until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	if err := s.loadCertificate(ctx); err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{Host: s.host, Port: s.port, TLSOpts: []func(*tls.Config){s.tlsConfig}})
	readers := Readers{Cache: s.deps.Cache, Live: s.deps.Reader}
	register := func(path string, wh *cradmission.Webhook) { srv.Register(path, wh.WithRecoverPanic(true)) }
	authz := s.deps.Authorizer
	if authz == nil {
		authz = SubjectAccessReviewer{Client: s.deps.Client}
	}
	register(AccessBindingPath, cradmission.WithValidator[*v1alpha1.AccessBinding](s.deps.Scheme, AccessBindingValidator{Readers: readers, Authorizer: authz}))
	register(RoleTemplatePath, cradmission.WithValidator[*v1alpha1.RoleTemplate](s.deps.Scheme, RoleTemplateValidator{Readers: readers, Authorizer: authz}))
	register(ClusterProjectPath, cradmission.WithValidator[*v1alpha1.ClusterProject](s.deps.Scheme, ClusterProjectValidator{Readers: readers, Namespace: s.opts.Namespace}))
	register(ClusterNodePath, cradmission.WithValidator[*v1alpha1.ClusterNode](s.deps.Scheme, ClusterNodeValidator{Readers: readers}))
	register(ManagedClusterPath, cradmission.WithValidator[*v1alpha1.ManagedCluster](s.deps.Scheme, ManagedClusterValidator{}))

	errc := make(chan error, 1)
	go func() { errc <- srv.Start(ctx) }()
	started := srv.StartedChecker()
	for started(nil) != nil {
		select {
		case err := <-errc:
			return s.stopped(err)
		case <-ctx.Done():
			return s.stopped(<-errc)
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.serving.Store(true)
	s.log.Info("Serving the admission webhook", "address", net.JoinHostPort(s.host, strconv.Itoa(s.port)), "url", s.opts.URL)
	s.watch(ctx)

	tick := time.NewTicker(s.opts.RenewCheck)
	defer tick.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	backoff := time.Second
	for {
		if err := s.ensureConfiguration(ctx); err != nil {
			s.log.Error(err, "Cannot update the ValidatingWebhookConfiguration; retrying", "name", s.opts.ConfigurationName, "in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
		}
		select {
		case err := <-errc:
			return s.stopped(err)
		case <-ctx.Done():
			return s.stopped(<-errc)
		case <-s.kick:
		case <-tick.C:
		case <-retry.C:
		}
		if err := s.loadCertificate(ctx); err != nil {
			s.log.Error(err, "Cannot renew the admission webhook's certificate; retrying at the next check")
		}
	}
}

func (s *Server) stopped(err error) error {
	s.serving.Store(false)
	if err != nil {
		return fmt.Errorf("admission webhook on %s: %w", net.JoinHostPort(s.host, strconv.Itoa(s.port)), err)
	}
	return nil
}

// trigger asks the loop to check the certificate and the configuration again.
func (s *Server) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) tlsConfig(c *tls.Config) {
	c.MinVersion = tls.VersionTLS12
	// HTTP/1.1 only, as kubebuilder recommends: the API server needs nothing more,
	// and HTTP/2 has had denial-of-service flaws (rapid reset, CVE-2023-44487).
	c.NextProtos = []string{"http/1.1"}
	if s.watcher != nil {
		c.GetCertificate = s.watcher.GetCertificate
		return
	}
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if cert := s.cert.Load(); cert != nil {
			return cert, nil
		}
		return nil, errNoCertificate
	}
}

// watch asks the manager's cache to tell the loop when the configuration, or the
// Secret with the self-managed certificate (another replica renewed it), changes.
func (s *Server) watch(ctx context.Context) {
	if s.deps.Informers == nil {
		return
	}
	add := func(obj client.Object, namespace, name string) {
		inf, err := s.deps.Informers.GetInformer(ctx, obj)
		if err != nil {
			s.log.Error(err, "Cannot watch; checking every --webhook renew interval instead", "kind", fmt.Sprintf("%T", obj), "name", name)
			return
		}
		match := func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if co, ok := o.(client.Object); ok && co.GetName() == name && co.GetNamespace() == namespace {
				s.trigger()
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { match(o) },
			UpdateFunc: func(_, o any) { match(o) },
			DeleteFunc: func(o any) { match(o) },
		}); err != nil {
			s.log.Error(err, "Cannot watch", "name", name)
		}
	}
	add(&admissionregistrationv1.ValidatingWebhookConfiguration{}, "", s.opts.ConfigurationName)
	if s.opts.CertDir == "" {
		add(&corev1.Secret{}, s.opts.Namespace, TLSSecretName)
	}
}

// loadCertificate loads the serving certificate: from --webhook-cert-dir (watched
// for changes; its ca.crt re-read), or from Secret drover-webhook-tls, creating or
// renewing what it holds when needed.
func (s *Server) loadCertificate(ctx context.Context) error {
	if s.opts.CertDir != "" {
		if s.watcher == nil {
			w, err := certwatcher.New(filepath.Join(s.opts.CertDir, selfcert.CertKey), filepath.Join(s.opts.CertDir, selfcert.KeyKey))
			if err != nil {
				return fmt.Errorf("admission webhook: --webhook-cert-dir %s: %w", s.opts.CertDir, err)
			}
			w.RegisterCallback(func(tls.Certificate) { s.trigger() })
			go func() {
				if err := w.Start(ctx); err != nil {
					s.log.Error(err, "Cannot watch --webhook-cert-dir", "dir", s.opts.CertDir)
				}
			}()
			s.watcher = w
		}
		ca, err := os.ReadFile(filepath.Join(s.opts.CertDir, selfcert.CACertKey))
		switch {
		case err == nil:
			s.ca.Store(&ca)
		case errors.Is(err, os.ErrNotExist):
			s.ca.Store(nil)
		default:
			return fmt.Errorf("admission webhook: --webhook-cert-dir %s: %w", s.opts.CertDir, err)
		}
		return nil
	}
	return s.ensureSelfManaged(ctx)
}

// ensureSelfManaged makes Secret drover-webhook-tls hold a valid CA and a serving
// certificate that is not about to expire, and loads it. Replicas share the Secret:
// whoever writes first wins, the others use what it wrote.
func (s *Server) ensureSelfManaged(ctx context.Context) error {
	key := client.ObjectKey{Namespace: s.opts.Namespace, Name: TLSSecretName}
	data, issued, err := selfcert.EnsureSecret(ctx, s.deps.Reader, s.deps.Client, key, corev1.SecretTypeTLS,
		map[string]string{"app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": "admission-webhook"},
		func(data map[string][]byte) (map[string][]byte, bool, error) {
			next, changed, err := selfcert.BundleFrom(data).Ensure("drover-webhook-ca", ServiceName, s.names, time.Now(), s.opts.RenewBefore)
			return next.Data(), changed, err
		})
	if err != nil {
		return fmt.Errorf("admission webhook: certificate: %w", err)
	}
	if issued {
		s.log.Info("Issued the admission webhook's certificate", "secret", key.String(), "names", s.names.All())
	}
	b := selfcert.BundleFrom(data)
	cert, err := tls.X509KeyPair(b.Cert, b.Key)
	if err != nil {
		return fmt.Errorf("admission webhook: secret %s does not hold a usable key pair: %w", key, err)
	}
	s.cert.Store(&cert)
	ca := append([]byte(nil), b.CA...)
	s.ca.Store(&ca)
	return nil
}

// ensureConfiguration registers the configuration (with --webhook-url) or brings
// the caBundle of the installed one up to date.
func (s *Server) ensureConfiguration(ctx context.Context) error {
	ca := s.CA()
	var cur admissionregistrationv1.ValidatingWebhookConfiguration
	err := s.deps.Reader.Get(ctx, client.ObjectKey{Name: s.opts.ConfigurationName}, &cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if s.opts.URL != "" {
		desired := Configuration(s.opts.ConfigurationName, func(path string) admissionregistrationv1.WebhookClientConfig {
			return admissionregistrationv1.WebhookClientConfig{URL: ptr.To(s.opts.URL + path), CABundle: ca}
		})
		if apierrors.IsNotFound(err) {
			if err := s.deps.Client.Create(ctx, desired); err != nil {
				return err
			}
			s.log.Info("Registered the ValidatingWebhookConfiguration", "name", desired.Name, "url", s.opts.URL)
			return nil
		}
		if equality.Semantic.DeepEqual(cur.Webhooks, desired.Webhooks) {
			return nil
		}
		cur.Webhooks = desired.Webhooks
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		for k, v := range desired.Labels {
			cur.Labels[k] = v
		}
		if err := s.deps.Client.Update(ctx, &cur); err != nil {
			return err
		}
		s.log.Info("Updated the ValidatingWebhookConfiguration", "name", cur.Name, "url", s.opts.URL)
		return nil
	}
	if apierrors.IsNotFound(err) {
		if !s.missingLogged {
			s.missingLogged = true
			s.log.Info("ValidatingWebhookConfiguration not found: the hub's API server does not call the webhook until it is installed (config/webhook), or the manager runs with --webhook-url", "name", s.opts.ConfigurationName)
		}
		return nil
	}
	s.missingLogged = false
	if len(ca) == 0 {
		return nil // a --webhook-cert-dir without ca.crt: the caBundle is someone else's
	}
	changed := false
	for i := range cur.Webhooks {
		if !bytes.Equal(cur.Webhooks[i].ClientConfig.CABundle, ca) {
			cur.Webhooks[i].ClientConfig.CABundle = ca
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := s.deps.Client.Update(ctx, &cur); err != nil {
		return err
	}
	s.log.Info("Updated the caBundle of the ValidatingWebhookConfiguration", "name", cur.Name)
	return nil
}

// hook is one webhook of the configuration.
type hook struct {
	name, path, resource string
	operations           []admissionregistrationv1.OperationType
}

// hooks lists the webhooks: only the kinds and operations a rule needs. Status
// subresources are not included: no rule looks at status.
var hooks = []hook{
	{"accessbindings.management.drover.io", AccessBindingPath, "accessbindings",
		[]admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}},
	{"roletemplates.management.drover.io", RoleTemplatePath, "roletemplates",
		[]admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete}},
	{"clusterprojects.management.drover.io", ClusterProjectPath, "clusterprojects",
		[]admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}},
	{"clusternodes.management.drover.io", ClusterNodePath, "clusternodes",
		[]admissionregistrationv1.OperationType{admissionregistrationv1.Delete}},
	{"managedclusters.management.drover.io", ManagedClusterPath, "managedclusters",
		[]admissionregistrationv1.OperationType{admissionregistrationv1.Update}},
}

// Configuration is the ValidatingWebhookConfiguration, each webhook reached at
// clientConfig(path). config/webhook/manifests.yaml holds the same webhooks with a
// Service reference (a test keeps the two in step). Every field the API server would
// default is set, so that a registered configuration compares equal to this one.
func Configuration(name string, clientConfig func(path string) admissionregistrationv1.WebhookClientConfig) *admissionregistrationv1.ValidatingWebhookConfiguration {
	c := &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"app.kubernetes.io/name": "drover", "app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": "admission-webhook"}},
	}
	for _, h := range hooks {
		c.Webhooks = append(c.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name:         h.name,
			ClientConfig: clientConfig(h.path),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: h.operations,
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{v1alpha1.GroupVersion.Group},
					APIVersions: []string{v1alpha1.GroupVersion.Version},
					Resources:   []string{h.resource},
					Scope:       ptr.To(admissionregistrationv1.ClusterScope),
				},
			}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			NamespaceSelector:       &metav1.LabelSelector{},
			ObjectSelector:          &metav1.LabelSelector{},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To(TimeoutSeconds),
			AdmissionReviewVersions: []string{"v1"},
		})
	}
	return c
}
