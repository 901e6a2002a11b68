// Package registration serves what a cluster registered with spec.registration needs
// to join the hub: the agent's manifest, at <hub-url>/v1/register/<id>.yaml, where id
// is derived from the cluster's bootstrap token. The manifest is rendered by the same
// code that installs the agent in kubeconfig clusters (render.Agent), plus Secret
// drover-system/drover-agent-hub (keys url, ca.crt, token, cluster), which the agent
// reads to dial the hub.
//
// Unknown or revoked ids get 404 and are never logged: the id is as good as the token
// for fetching the manifest.
package registration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/drover-io/drover/render"
)

// Names in the target and on the hub; they are part of Drover's contract.
const (
	// HubSecretName is the Secret in the agent's namespace that tells the agent
	// where the hub is and how to join it.
	HubSecretName = "drover-agent-hub"
	// PathPrefix is where manifests are served on the hub server.
	PathPrefix = "/v1/register/"
	// MinTokenLength is the shortest bootstrap token accepted.
	MinTokenLength = 32
)

// ID derives the manifest URL's id from a bootstrap token: the URL changes when the
// token does, and the token itself never appears in status.
func ID(token string) string {
	sum := sha256.Sum256([]byte("drover-registration:" + token))
	return base64.RawURLEncoding.EncodeToString(sum[:24])
}

// ManifestURL is where a cluster's manifest is served.
func ManifestURL(hubURL, token string) string {
	return strings.TrimSuffix(hubURL, "/") + PathPrefix + ID(token) + ".yaml"
}

// Command installs the agent from its manifest.
func Command(hubURL, token string) string {
	return "kubectl apply -f " + ManifestURL(hubURL, token)
}

// Hub is what the manifest tells the agent about the hub.
type Hub struct {
	URL   string
	CA    []byte
	Image string
}

// Manifest renders the agent's manifest for cluster: the agent's objects and Secret
// drover-agent-hub. Applying it twice changes nothing.
func Manifest(cluster, token string, hub Hub) ([]byte, error) {
	objs := render.Agent(cluster, hub.Image, true)
	secret := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: HubSecretName, Namespace: render.AgentNamespace, Labels: map[string]string{
			render.ManagedByLabel: render.ManagedByValue, render.ComponentLabel: render.AgentComponent}},
		Type: corev1.SecretTypeOpaque,
		StringData: map[string]string{
			"url": hub.URL, "ca.crt": string(hub.CA), "token": token, "cluster": cluster,
		},
	}
	// The namespace first, then the Secret, then the rest: kubectl applies in order.
	objs = append([]client.Object{objs[0], secret}, objs[1:]...)
	var out bytes.Buffer
	for _, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, err
		}
		meta, _ := u["metadata"].(map[string]any)
		delete(meta, "creationTimestamp")
		delete(u, "status")
		b, err := yaml.Marshal(u)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes(), nil
}

// Registry maps manifest ids to clusters. The ManagedCluster controller keeps it up
// to date; the hub server's handler reads it.
type Registry struct {
	mu      sync.RWMutex
	byID    map[string]string
	byName  map[string]string
	tokenOf func(ctx context.Context, cluster string) (string, bool)
}

// NewRegistry returns an empty registry. tokenOf reads a cluster's current token
// (from its Secret); the handler checks it again on every request, so a token
// revoked a moment ago is never served.
func NewRegistry(tokenOf func(ctx context.Context, cluster string) (string, bool)) *Registry {
	return &Registry{byID: map[string]string{}, byName: map[string]string{}, tokenOf: tokenOf}
}

// Set records cluster's current token id, replacing the previous one.
func (r *Registry) Set(cluster, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[cluster]; ok {
		delete(r.byID, old)
	}
	r.byName[cluster] = id
	r.byID[id] = cluster
}

// Remove forgets cluster.
func (r *Registry) Remove(cluster string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[cluster]; ok {
		delete(r.byID, old)
		delete(r.byName, cluster)
	}
}

// Lookup returns the cluster of an id.
func (r *Registry) Lookup(id string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.byID[id]
	return c, ok
}

// Handler serves GET <PathPrefix>{file}, file being <id>.yaml. hub returns what the
// manifest says of the hub (its CA may change).
func (r *Registry) Handler(hub func() Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id, ok := strings.CutSuffix(req.PathValue("file"), ".yaml")
		cluster, known := r.Lookup(id)
		if !ok || !known || r.tokenOf == nil {
			http.NotFound(w, req)
			return
		}
		token, ok := r.tokenOf(req.Context(), cluster)
		if !ok || ID(token) != id {
			http.NotFound(w, req)
			return
		}
		b, err := Manifest(cluster, token, hub())
		if err != nil {
			http.Error(w, "cannot render the manifest", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
}
