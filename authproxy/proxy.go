// Package authproxy is the authentication proxy: <hub-url>/clusters/<name>/ forwards
// the Kubernetes API of ManagedCluster <name> over that cluster's own connection
// (dialled directly, or through its agent's tunnel), impersonating the caller.
//
// Authentication is the hub's, delegated as an aggregated API server does it
// (k8s.io/apiserver): bearer tokens by TokenReview against the hub, cached briefly;
// client certificates against the hub's client CA from
// kube-system/extension-apiserver-authentication. Authorization is the target's own
// RBAC, which AccessBindings feed: the proxy only refuses, with the same 403 whether
// or not the cluster exists, callers that no AccessBinding names for the cluster and
// that the hub does not grant `get` on managedclusters/proxy.
//
// The caller's Authorization and Impersonate-* headers never reach the target; the
// proxy impersonates the identity Forward computes, and keeps the original one in
// impersonation extras for the target's audit log.
package authproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The proxy delegates authentication and authorization to the hub, as an aggregated
// API server does (ClusterRole system:auth-delegator and Role
// kube-system/extension-apiserver-authentication-reader grant the same).
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups="",namespace=kube-system,resources=configmaps,resourceNames=extension-apiserver-authentication,verbs=get;list;watch

// Paths on the hub server.
const (
	// PathPrefix is where the proxy serves: PathPrefix + <cluster> + the API path.
	PathPrefix = "/clusters/"
	// ListPath lists the clusters the caller may reach (for `drover kubeconfig`).
	ListPath = "/v1/clusters"
)

// The hub's client CA, as every aggregated API server reads it.
const (
	AuthenticationConfigMapNamespace = "kube-system"
	AuthenticationConfigMapName      = "extension-apiserver-authentication"
	ClientCAKey                      = "client-ca-file"
)

// DefaultCacheTTL is how long a TokenReview or SubjectAccessReview answer is kept.
// Short, so that a revoked token stops working within seconds.
const DefaultCacheTTL = 10 * time.Second

// Options configure the proxy.
type Options struct {
	// Hub is a client configuration of the hub's API server, with the manager's
	// identity: it reviews tokens and access and reads the client CA with it.
	Hub *rest.Config
	// Reader reads ManagedClusters, AccessBindings and ClusterProjects (the
	// manager's cache).
	Reader client.Reader
	// Backends finds each cluster's connection.
	Backends Backends
	// CacheTTL bounds how long review answers are cached; DefaultCacheTTL if zero.
	CacheTTL time.Duration
	// Authenticator and Authorizer replace the hub's (unit tests).
	Authenticator authenticator.Request
	Authorizer    authorizer.Authorizer
}

// Proxy is the authentication proxy. It is an http.Handler for PathPrefix and a
// manager Runnable (it watches the hub's client CA).
type Proxy struct {
	authn    authenticator.Request
	access   *access
	backends Backends
	caCtrl   *dynamiccertificates.ConfigMapCAController
	infos    *request.RequestInfoFactory
	log      logr.Logger
}

// New builds the proxy.
func New(o Options) (*Proxy, error) {
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	p := &Proxy{
		authn: o.Authenticator, backends: o.Backends,
		access: &access{reader: o.Reader, hub: o.Authorizer},
		infos: &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"),
			GrouplessAPIPrefixes: sets.NewString("api")},
		log: ctrl.Log.WithName("proxy"),
	}
	if p.authn != nil && p.access.hub != nil {
		return p, nil
	}
	if o.Hub == nil {
		return nil, errors.New("authentication proxy: no client configuration for the hub")
	}
	cs, err := kubernetes.NewForConfig(o.Hub)
	if err != nil {
		return nil, fmt.Errorf("authentication proxy: %w", err)
	}
	backoff := &wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 3}
	if p.authn == nil {
		p.caCtrl, err = dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca",
			AuthenticationConfigMapNamespace, AuthenticationConfigMapName, ClientCAKey, cs)
		if err != nil {
			return nil, fmt.Errorf("authentication proxy: %w", err)
		}
		p.authn, _, err = authenticatorfactory.DelegatingAuthenticatorConfig{
			TokenAccessReviewClient:            cs.AuthenticationV1(),
			TokenAccessReviewTimeout:           5 * time.Second,
			WebhookRetryBackoff:                backoff,
			CacheTTL:                           o.CacheTTL,
			ClientCertificateCAContentProvider: p.caCtrl,
		}.New()
		if err != nil {
			return nil, fmt.Errorf("authentication proxy: %w", err)
		}
	}
	if p.access.hub == nil {
		p.access.hub, err = authorizerfactory.DelegatingAuthorizerConfig{
			SubjectAccessReviewClient: cs.AuthorizationV1(),
			AllowCacheTTL:             o.CacheTTL,
			DenyCacheTTL:              o.CacheTTL,
			WebhookRetryBackoff:       backoff,
		}.New()
		if err != nil {
			return nil, fmt.Errorf("authentication proxy: %w", err)
		}
	}
	return p, nil
}

// NeedLeaderElection is false: every replica serves the proxy.
func (p *Proxy) NeedLeaderElection() bool { return false }

// Start watches the hub's client CA until ctx is done.
func (p *Proxy) Start(ctx context.Context) error {
	if p.caCtrl == nil {
		<-ctx.Done()
		return nil
	}
	_ = p.caCtrl.RunOnce(ctx)
	p.caCtrl.Run(ctx, 1)
	return nil
}

// ServeHTTP proxies one request under PathPrefix.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	a := auditRecord{path: r.URL.Path, verb: strings.ToLower(r.Method)}
	defer func() { p.finish(rec, &a, start) }()

	name, rest, err := splitPath(r.URL)
	if err != nil {
		writeStatus(rec, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	a.verb = p.verb(r, rest)
	u, ok := p.authenticate(rec, r)
	if !ok {
		return
	}
	a.user = u.GetName()
	id := Forward(u)
	d, err := p.access.decide(r.Context(), u, id, name)
	if err != nil {
		p.log.Error(err, "Cannot decide whether a caller may use the proxy", "user", u.GetName())
		writeStatus(rec, http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"the hub cannot decide whether you may reach this cluster; try again")
		return
	}
	if !d.allowed {
		writeStatus(rec, http.StatusForbidden, metav1.StatusReasonForbidden, forbidden(u, name))
		return
	}
	if !d.exists {
		writeStatus(rec, http.StatusNotFound, metav1.StatusReasonNotFound,
			fmt.Sprintf("managedclusters.management.drover.io %q not found", name))
		return
	}
	// Only names of clusters that exist become label values.
	a.cluster = name
	b, err := p.backends.Backend(name)
	if err != nil {
		writeStatus(rec, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error())
		return
	}
	a.via = b.Via
	p.forward(rec, r, b, name, rest, id)
}

// authenticate answers 401 unless the hub knows the caller.
func (p *Proxy) authenticate(w http.ResponseWriter, r *http.Request) (user.Info, bool) {
	resp, ok, err := p.authn.AuthenticateRequest(r)
	if err != nil || !ok || resp == nil || resp.User == nil {
		msg := "Unauthorized: present a bearer token or client certificate that the hub accepts"
		if err != nil {
			// The authenticators' errors name no credential, only why it failed.
			msg = "Unauthorized: " + err.Error()
		}
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, msg)
		return nil, false
	}
	return resp.User, true
}

// forward sends the request to the cluster as id, and streams the answer back.
func (p *Proxy) forward(w *recorder, r *http.Request, b *Backend, name, rest string, id Identity) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// A connection that closes (the cluster was deleted) ends what runs through it:
	// watches and streams by their context, upgraded connections by closing them.
	go func() {
		select {
		case <-b.Done:
			cancel()
			w.closeHijacked()
		case <-ctx.Done():
		}
	}()
	out := r.Clone(ctx)
	stripCredentials(out.Header)
	setImpersonation(out.Header, id)
	loc := *b.URL
	loc.Path = strings.TrimSuffix(b.URL.Path, "/") + "/" + strings.TrimPrefix(rest, "/")
	loc.RawPath = ""
	loc.RawQuery = r.URL.RawQuery
	h := &proxy.UpgradeAwareHandler{
		Location:         &loc,
		Transport:        b.Transport,
		UpgradeTransport: b.Upgrade,
		// The target's API server (or the agent's tunnel) is addressed by its own
		// host name, never the hub's.
		UseLocationHost:           true,
		RejectForwardingRedirects: true,
		// Flush as soon as the target writes: watches, logs -f.
		FlushInterval: -1,
		Responder:     responder{cluster: name},
	}
	h.ServeHTTP(w, out)
}

// responder reports an error reaching the target.
type responder struct{ cluster string }

func (e responder) Error(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The caller went away, or the cluster was deleted: nothing to answer.
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("the connection to cluster %s closed", e.cluster))
		return
	}
	writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
		fmt.Sprintf("cluster %s cannot be reached: %v", e.cluster, err))
}

// ListHandler answers ListPath: the clusters the caller may reach, by name.
func (p *Proxy) ListHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		a := auditRecord{path: r.URL.Path, verb: "list"}
		defer func() { p.finish(rec, &a, start) }()
		u, ok := p.authenticate(rec, r)
		if !ok {
			return
		}
		a.user = u.GetName()
		mcs, err := p.access.reachable(r.Context(), u, Forward(u))
		if err != nil {
			p.log.Error(err, "Cannot list the clusters a caller may reach", "user", u.GetName())
			writeStatus(rec, http.StatusInternalServerError, metav1.StatusReasonInternalError, "the hub cannot list your clusters; try again")
			return
		}
		list := ClusterList{Clusters: []ClusterRef{}}
		for _, mc := range mcs {
			list.Clusters = append(list.Clusters, ClusterRef{Name: mc.Name, DisplayName: mc.Spec.DisplayName})
		}
		rec.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rec).Encode(list)
	})
}

// ClusterList is the answer of ListPath.
type ClusterList struct {
	Clusters []ClusterRef `json:"clusters"`
}

// ClusterRef names one cluster the caller may reach.
type ClusterRef struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName,omitempty"`
}

func forbidden(u user.Info, cluster string) string {
	return fmt.Sprintf("user %q may not use the proxy to cluster %q: no AccessBinding grants you a role there, "+
		"and the hub does not grant you get on managedclusters/proxy", u.GetName(), cluster)
}

// splitPath returns the cluster name and the API path below PathPrefix<name>. It
// refuses anything that could escape the cluster's prefix or be read differently
// by the target: dot segments, empty segments and encoded slashes or backslashes.
func splitPath(u *url.URL) (name, rest string, err error) {
	raw := strings.ToLower(u.EscapedPath())
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(u.Path, "\\") {
		return "", "", errors.New("the path must not contain encoded slashes or backslashes")
	}
	p, ok := strings.CutPrefix(u.Path, PathPrefix)
	if !ok {
		return "", "", fmt.Errorf("the path must start with %s<cluster>", PathPrefix)
	}
	name, rest, _ = strings.Cut(p, "/")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", "", fmt.Errorf("%q is not a cluster name: %s", name, strings.Join(errs, "; "))
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		if s == "." || s == ".." || (s == "" && i != len(segs)-1) {
			return "", "", errors.New("the path must not contain '.', '..' or empty segments")
		}
	}
	return name, "/" + rest, nil
}

// verb is the Kubernetes verb of a request (get, list, watch, create, ...), for the
// audit line.
func (p *Proxy) verb(r *http.Request, rest string) string {
	rr := r.WithContext(r.Context())
	u := *r.URL
	u.Path, u.RawPath = rest, ""
	rr.URL = &u
	info, err := p.infos.NewRequestInfo(rr)
	if err != nil || info == nil {
		return strings.ToLower(r.Method)
	}
	return info.Verb
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
		Message: msg, Reason: reason, Code: int32(code)}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
