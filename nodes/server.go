package nodes

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/nodeagent"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/selfcert"
)

// The hub server reads plan Secrets, manages ClusterNodes and their status, and
// keeps the node credential CA.
//
// +kubebuilder:rbac:groups=management.drover.io,resources=clusternodes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=management.drover.io,resources=clusternodes/status,verbs=get;update;patch

// Options configure the Server.
type Options struct {
	// Namespace is the operator namespace: plan Secrets, tokens and the CA.
	Namespace string
	// Cache reads ClusterNodes, ManagedClusters and Secrets in Namespace;
	// Informers tell the Server when plans change. Both are the manager's cache.
	Cache     client.Reader
	Informers cache.Informers
	// Reader reads the API server directly; Writer writes.
	Reader client.Reader
	Writer client.Client
	// TokenOf returns a cluster's current node token; ClusterOf the cluster an
	// install id belongs to (see ID).
	TokenOf   func(ctx context.Context, cluster string) (string, bool)
	ClusterOf func(id string) (string, bool)
	// HubURL and HubCA are the hub server's URL and CA (PEM).
	HubURL func() string
	HubCA  func() []byte
	// ArtifactsDir is the artifact source (--artifacts-dir); empty serves only drover.
	ArtifactsDir string
	// DroverBinary is the drover binary hosts download (default: this executable).
	DroverBinary string
	// CredentialTTL defaults to DefaultCredentialTTL.
	CredentialTTL time.Duration
	// PollTimeout bounds a plan long poll (25 s).
	PollTimeout time.Duration
}

// Server serves provisioned hosts. It is a manager Runnable that runs on every
// replica.
type Server struct {
	opts Options
	log  logr.Logger
	ca   atomic.Pointer[selfcert.ClientCA]

	mu      sync.Mutex
	waiters map[string]chan struct{} // node -> closed when its plan changes

	artifacts artifactIndex
}

// New returns the Server; Start loads its CA.
func New(opts Options) *Server {
	if opts.CredentialTTL <= 0 {
		opts.CredentialTTL = DefaultCredentialTTL
	}
	if opts.PollTimeout <= 0 {
		opts.PollTimeout = 25 * time.Second
	}
	return &Server{opts: opts, log: ctrl.Log.WithName("nodes"), waiters: map[string]chan struct{}{},
		artifacts: artifactIndex{dir: opts.ArtifactsDir, sums: map[string]fileSum{}}}
}

// NeedLeaderElection is false: every replica serves nodes.
func (s *Server) NeedLeaderElection() bool { return false }

// Start loads (or creates) the node credential CA and watches plan Secrets.
func (s *Server) Start(ctx context.Context) error {
	backoff := time.Second
	for {
		ca, created, err := selfcert.LoadClientCA(ctx, s.opts.Reader, s.opts.Writer,
			client.ObjectKey{Namespace: s.opts.Namespace, Name: CASecretName}, "drover-node-ca",
			map[string]string{render.ManagedByLabel: render.ManagedByValue, "app.kubernetes.io/component": "hub-server"})
		if err == nil {
			if created {
				s.log.Info("Created the node credential CA", "secret", s.opts.Namespace+"/"+CASecretName)
			}
			s.ca.Store(ca)
			break
		}
		s.log.Error(err, "Cannot load the node credential CA; retrying", "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
	if s.opts.Informers != nil {
		inf, err := s.opts.Informers.GetInformer(ctx, &corev1.Secret{})
		if err != nil {
			return err
		}
		wake := func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if sec, ok := o.(*corev1.Secret); ok && sec.Labels["app.kubernetes.io/component"] == ComponentPlan {
				s.wake(sec.Labels[NodeLabel])
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: wake, UpdateFunc: func(_, o any) { wake(o) }, DeleteFunc: wake,
		}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// wake tells the long polls of node that its plan changed.
func (s *Server) wake(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.waiters[node]; ok {
		close(c)
		delete(s.waiters, node)
	}
}

func (s *Server) waiter(node string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.waiters[node]
	if !ok {
		c = make(chan struct{})
		s.waiters[node] = c
	}
	return c
}

// Register adds the routes to mux (the hub server's Handle).
func (s *Server) Register(handle func(pattern string, h http.Handler)) {
	handle("GET "+PathPrefix+"{id}/install.sh", http.HandlerFunc(s.serveInstall))
	handle("GET "+PathPrefix+"{id}/ca", http.HandlerFunc(s.serveCA))
	handle("POST "+RegisterPath, http.HandlerFunc(s.serveRegister))
	handle("GET "+PlanPath, http.HandlerFunc(s.servePlan))
	handle("PUT "+StatusPath, http.HandlerFunc(s.serveStatus))
	handle("GET "+ArtifactsPrefix+"{path...}", http.HandlerFunc(s.serveArtifact))
}

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		http.Error(w, he.msg, he.code)
		return
	}
	http.Error(w, "the hub cannot answer right now; retry", http.StatusServiceUnavailable)
}

// tokenFor resolves an install id to its cluster and current token; unknown or
// revoked ids are 404, and never logged.
func (s *Server) tokenFor(ctx context.Context, id string) (string, string, error) {
	cluster, ok := s.opts.ClusterOf(id)
	if !ok {
		return "", "", errorf(http.StatusNotFound, "404 page not found")
	}
	token, ok := s.opts.TokenOf(ctx, cluster)
	if !ok || ID(token) != id {
		return "", "", errorf(http.StatusNotFound, "404 page not found")
	}
	return cluster, token, nil
}

func (s *Server) serveCA(w http.ResponseWriter, r *http.Request) {
	_, token, err := s.tokenFor(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	ca := s.opts.HubCA()
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set(SignatureHeader, Sign(token, ca))
	_, _ = w.Write(ca)
}

var installScript = template.Must(template.New("install").Parse(`#!/bin/sh
# Installs Drover's node agent on this host, for cluster {{.Cluster}}, and starts it.
# Run it as root, with the host's roles: sh -s -- --roles etcd,control-plane,worker
# Other flags of drover node-agent (--address, --hostname) may follow.
set -eu
hub_url='{{.URL}}'
data='{{.DataDir}}'
umask 077
mkdir -p "$data/bin"
cat > "$data/hub-ca.crt" <<'DROVER_CA'
{{.CA}}DROVER_CA
cat > "$data/node-token.env" <<'DROVER_TOKEN'
DROVER_NODE_TOKEN={{.Token}}
DROVER_TOKEN
curl -fsS --cacert "$data/hub-ca.crt" -o "$data/bin/drover.new" "$hub_url/v1/artifacts/drover"
chmod 0755 "$data/bin/drover.new"
mv -f "$data/bin/drover.new" "$data/bin/drover"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	args=""
	for a in "$@"; do args="$args '$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'"; done
	cat > /etc/systemd/system/drover-node-agent.service <<EOF
[Unit]
Description=Drover node agent ({{.Cluster}})
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=$data/node-token.env
ExecStart=$data/bin/drover node-agent --hub-url $hub_url --hub-ca-file $data/hub-ca.crt --data-dir $data $args
Restart=always
RestartSec=5
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
	systemctl daemon-reload
	systemctl enable --now drover-node-agent.service
	echo "drover-node-agent.service is running; journalctl -u drover-node-agent -f shows what it does"
else
	echo "no systemd here: running the node agent in the foreground"
	. "$data/node-token.env"
	export DROVER_NODE_TOKEN
	exec "$data/bin/drover" node-agent --hub-url "$hub_url" --hub-ca-file "$data/hub-ca.crt" --data-dir "$data" "$@"
fi
`))

func (s *Server) serveInstall(w http.ResponseWriter, r *http.Request) {
	cluster, token, err := s.tokenFor(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	ca := string(s.opts.HubCA())
	if !strings.HasSuffix(ca, "\n") {
		ca += "\n"
	}
	w.Header().Set("Content-Type", "text/x-shellscript")
	w.Header().Set("Cache-Control", "no-store")
	_ = installScript.Execute(w, map[string]string{"Cluster": cluster, "URL": s.opts.HubURL(), "DataDir": DefaultDataDir, "CA": ca, "Token": token})
}

// credential returns the identity of a request's node credential, checking that the
// ClusterNode it names still exists with the same UID (deleting it revokes it).
func (s *Server) credential(ctx context.Context, r *http.Request) (Identity, *v1alpha1.ClusterNode, error) {
	ca := s.ca.Load()
	if ca == nil {
		return Identity{}, nil, errorf(http.StatusServiceUnavailable, "the hub is starting; retry")
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Identity{}, nil, errorf(http.StatusUnauthorized, "a node credential (client certificate) is required")
	}
	uris, err := ca.Verify(r.TLS.PeerCertificates[0], time.Now())
	if err != nil {
		return Identity{}, nil, errorf(http.StatusUnauthorized, "the client certificate is not a valid node credential: %v", err)
	}
	id, err := identityOf(uris)
	if err != nil {
		return Identity{}, nil, errorf(http.StatusUnauthorized, "%v", err)
	}
	var node v1alpha1.ClusterNode
	err = s.opts.Cache.Get(ctx, client.ObjectKey{Name: id.Node()}, &node)
	if (err == nil && string(node.UID) != id.UID) || apierrors.IsNotFound(err) {
		// The cache may not hold a ClusterNode created a moment ago (the node
		// registered, then asked for its plan at once): a credential is revoked
		// only on what the API server itself says.
		if s.opts.Reader != nil {
			err = s.opts.Reader.Get(ctx, client.ObjectKey{Name: id.Node()}, &node)
		}
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Identity{}, nil, errorf(http.StatusForbidden, "ClusterNode %s no longer exists: this node's credential is revoked", id.Node())
		}
		return Identity{}, nil, err
	}
	if string(node.UID) != id.UID {
		return Identity{}, nil, errorf(http.StatusForbidden, "ClusterNode %s was deleted and made anew: this node's credential is revoked; register again", id.Node())
	}
	return id, &node, nil
}

func (s *Server) serveRegister(w http.ResponseWriter, r *http.Request) {
	resp, err := s.register(r.Context(), r)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Server) register(ctx context.Context, r *http.Request) (*RegisterResponse, error) {
	ca := s.ca.Load()
	if ca == nil {
		return nil, errorf(http.StatusServiceUnavailable, "the hub is starting; retry")
	}
	var req RegisterRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		return nil, errorf(http.StatusBadRequest, "the request must be a JSON registration request")
	}
	if errs := validation.IsDNS1123Label(req.Hostname); len(errs) > 0 {
		return nil, errorf(http.StatusBadRequest, "hostname %q: %s; pass --hostname with a DNS label", req.Hostname, strings.Join(errs, "; "))
	}
	if net.ParseIP(req.Address) == nil {
		return nil, errorf(http.StatusBadRequest, "address %q is not an IP address; pass --address", req.Address)
	}
	var roles []v1alpha1.NodeRole
	for _, role := range req.Roles {
		switch v1alpha1.NodeRole(role) {
		case v1alpha1.NodeRoleEtcd, v1alpha1.NodeRoleControlPlane, v1alpha1.NodeRoleWorker:
			if !slices.Contains(roles, v1alpha1.NodeRole(role)) {
				roles = append(roles, v1alpha1.NodeRole(role))
			}
		default:
			return nil, errorf(http.StatusBadRequest, "role %q: roles are etcd, control-plane and worker", role)
		}
	}
	if len(roles) == 0 {
		return nil, errorf(http.StatusBadRequest, "no role: pass --roles, e.g. --roles etcd,control-plane")
	}

	var cluster string
	var renewing *Identity
	switch {
	case req.Token != "":
		c, token, err := s.tokenFor(ctx, ID(req.Token))
		if err != nil || subtle.ConstantTimeCompare([]byte(token), []byte(req.Token)) != 1 {
			return nil, errorf(http.StatusUnauthorized, "the node token is not valid (it may have been rotated); get the current registration command from the ManagedCluster's status.provisioning")
		}
		cluster = c
	default:
		id, _, err := s.credential(ctx, r)
		if err != nil {
			return nil, err
		}
		if id.Hostname != req.Hostname {
			return nil, errorf(http.StatusForbidden, "the credential of node %s cannot register hostname %s", id.Node(), req.Hostname)
		}
		cluster, renewing = id.Cluster, &id
	}
	var mc v1alpha1.ManagedCluster
	if err := s.opts.Reader.Get(ctx, client.ObjectKey{Name: cluster}, &mc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errorf(http.StatusForbidden, "ManagedCluster %s no longer exists", cluster)
		}
		return nil, err
	}
	if mc.Spec.Provisioning == nil || !mc.DeletionTimestamp.IsZero() {
		return nil, errorf(http.StatusForbidden, "ManagedCluster %s is not being provisioned (or is being deleted): no node may join it", cluster)
	}
	node, err := s.ensureNode(ctx, &mc, req, roles)
	if err != nil {
		return nil, err
	}
	id := Identity{Cluster: cluster, Hostname: req.Hostname, UID: string(node.UID)}
	if renewing != nil && renewing.UID != id.UID {
		return nil, errorf(http.StatusForbidden, "ClusterNode %s was made anew: register with the node token", id.Node())
	}
	certPEM, notAfter, err := ca.Sign([]byte(req.CSR), "drover-node:"+id.Node(), id.uri(), s.opts.CredentialTTL, time.Now())
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	if renewing == nil {
		s.log.Info("Node registered", "ClusterNode", id.Node(), "address", req.Address, "roles", req.Roles)
	}
	return &RegisterResponse{Node: id.Node(), Certificate: string(certPEM), NotAfter: notAfter}, nil
}

// ensureNode creates the host's ClusterNode, or checks that the existing one is the
// same host (same address): a second host with the same hostname is refused.
func (s *Server) ensureNode(ctx context.Context, mc *v1alpha1.ManagedCluster, req RegisterRequest, roles []v1alpha1.NodeRole) (*v1alpha1.ClusterNode, error) {
	name := NodeName(mc.Name, req.Hostname)
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, errorf(http.StatusBadRequest, "node name %s: %s", name, strings.Join(errs, "; "))
	}
	var node v1alpha1.ClusterNode
	err := s.opts.Reader.Get(ctx, client.ObjectKey{Name: name}, &node)
	switch {
	case apierrors.IsNotFound(err):
		node = v1alpha1.ClusterNode{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				render.ManagedByLabel: render.ManagedByValue, render.ClusterLabel: mc.Name}},
			Spec: v1alpha1.ClusterNodeSpec{Cluster: mc.Name, Hostname: req.Hostname, Roles: roles, Address: req.Address, KubeletCgroupRoot: req.KubeletCgroupRoot},
		}
		if err := controllerutil.SetOwnerReference(mc, &node, s.opts.Writer.Scheme()); err != nil {
			return nil, err
		}
		if err := s.opts.Writer.Create(ctx, &node); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil, errorf(http.StatusConflict, "ClusterNode %s was registered at the same moment by another host; retry", name)
			}
			return nil, err
		}
		return &node, nil
	case err != nil:
		return nil, err
	}
	if !node.DeletionTimestamp.IsZero() {
		return nil, errorf(http.StatusConflict, "ClusterNode %s is being deleted; retry once it is gone", name)
	}
	if node.Spec.Address != req.Address {
		return nil, errorf(http.StatusConflict, "hostname %s is already registered in cluster %s by the host at %s: give this host another hostname (--hostname), or delete ClusterNode %s if that host is gone",
			req.Hostname, mc.Name, node.Spec.Address, name)
	}
	if !equality.Semantic.DeepEqual(node.Spec.Roles, roles) || node.Spec.KubeletCgroupRoot != req.KubeletCgroupRoot {
		// The host says what it is: its roles changed (re-run with other --roles).
		node.Spec.Roles, node.Spec.KubeletCgroupRoot = roles, req.KubeletCgroupRoot
		if err := s.opts.Writer.Update(ctx, &node); err != nil {
			return nil, err
		}
	}
	return &node, nil
}

func (s *Server) servePlan(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, _, err := s.credential(ctx, r)
	if err != nil {
		writeError(w, err)
		return
	}
	have := r.URL.Query().Get("checksum")
	deadline := time.NewTimer(s.opts.PollTimeout)
	defer deadline.Stop()
	for {
		wait := s.waiter(id.Node())
		var sec corev1.Secret
		err := s.opts.Cache.Get(ctx, client.ObjectKey{Namespace: s.opts.Namespace, Name: PlanSecretName(id.Node())}, &sec)
		switch {
		case err == nil && len(sec.Data[ChecksumKey]) > 0 && string(sec.Data[ChecksumKey]) != have:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_ = json.NewEncoder(w).Encode(PlanResponse{Checksum: string(sec.Data[ChecksumKey]), Plan: sec.Data[PlanKey]})
			return
		case err != nil && !apierrors.IsNotFound(err):
			writeError(w, err)
			return
		}
		select {
		case <-wait:
		case <-deadline.C:
			w.WriteHeader(http.StatusNotModified)
			return
		case <-ctx.Done():
			return
		}
	}
}

// StatusReport is what a node agent reports.
type StatusReport struct {
	nodeagent.Status
	AgentVersion      string `json:"agentVersion,omitempty"`
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, node, err := s.credential(ctx, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var rep StatusReport
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rep); err != nil {
		http.Error(w, "the request must be a JSON status report", http.StatusBadRequest)
		return
	}
	var sec corev1.Secret
	planSum := ""
	if err := s.opts.Cache.Get(ctx, client.ObjectKey{Namespace: s.opts.Namespace, Name: PlanSecretName(id.Node())}, &sec); err == nil {
		planSum = string(sec.Data[ChecksumKey])
	}
	next := node.DeepCopy()
	SetStatus(next, rep, planSum, time.Now())
	if equality.Semantic.DeepEqual(next.Status, node.Status) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := s.opts.Writer.Status().Patch(ctx, next, client.MergeFrom(node)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// The artifact source.

type fileSum struct {
	size    int64
	modTime time.Time
	sum     string
}

// artifactIndex knows the sha256 of every file in the artifact directory, computing
// each once (again when its size or time changes).
type artifactIndex struct {
	dir  string
	mu   sync.Mutex
	sums map[string]fileSum
}

// Artifacts returns every file of the artifact source (<version>/<binary> and
// images/<name>.tar) with its sha256, for the planner. Nil without --artifacts-dir.
func (s *Server) Artifacts() (map[string]string, error) {
	return s.artifacts.list()
}

func (a *artifactIndex) list() (map[string]string, error) {
	if a.dir == "" {
		return nil, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, fmt.Errorf("--artifacts-dir: %w", err)
	}
	for _, d := range entries {
		if !d.IsDir() {
			continue
		}
		// Hidden directories (a download in progress) are not part of the source.
		if strings.HasPrefix(d.Name(), ".") {
			continue
		}
		files, err := os.ReadDir(filepath.Join(a.dir, d.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if !f.Type().IsRegular() {
				continue
			}
			rel := d.Name() + "/" + f.Name()
			info, err := f.Info()
			if err != nil {
				return nil, err
			}
			if c, ok := a.sums[rel]; ok && c.size == info.Size() && c.modTime.Equal(info.ModTime()) {
				out[rel] = c.sum
				continue
			}
			sum, err := nodeagent.FileSHA256(filepath.Join(a.dir, rel))
			if err != nil {
				return nil, err
			}
			a.sums[rel] = fileSum{size: info.Size(), modTime: info.ModTime(), sum: sum}
			out[rel] = sum
		}
	}
	return out, nil
}

func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("path")
	if p == "drover" {
		exe, err := s.opts.DroverBinary, error(nil)
		if exe == "" {
			exe, err = os.Executable()
		}
		if err != nil {
			http.Error(w, "the hub cannot find its own binary", http.StatusInternalServerError)
			return
		}
		http.ServeFile(w, r, exe)
		return
	}
	if s.opts.ArtifactsDir == "" || p == "" || path.Clean(p) != p || strings.HasPrefix(p, "/") || strings.Contains(p, "..") || strings.Count(p, "/") != 1 {
		http.NotFound(w, r)
		return
	}
	root, err := os.OpenRoot(s.opts.ArtifactsDir)
	if err != nil {
		http.Error(w, "the artifact source is not available", http.StatusServiceUnavailable)
		return
	}
	defer func() { _ = root.Close() }()
	f, err := root.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		http.Error(w, "the artifact cannot be read", http.StatusInternalServerError)
		return
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, path.Base(p), info.ModTime(), f)
}
