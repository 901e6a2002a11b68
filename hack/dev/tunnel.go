package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/hubserver"
	"github.com/drover-io/drover/registration"
)

// registerTunnelled creates a ManagedCluster with spec.registration and no
// kubeconfig, as a user registers a cluster the hub cannot reach: the manager
// answers with a bootstrap token and status.registration.manifestURL.
func registerTunnelled(ctx context.Context, hub client.Client, name, displayName string, labels map[string]string) error {
	return applyManagedCluster(ctx, hub, name, displayName, labels, "registration", map[string]any{})
}

// joinTunnelled does what a user does to a cluster registered with
// spec.registration, then runs its agent: it waits for the manifest URL, fetches the
// manifest over HTTPS trusting the hub's published CA, applies it to the target with
// the target's admin kubeconfig (kubectl apply -f <url>), and runs `drover agent`
// with no flags but its kubeconfig, as the manifest's Deployment does: the agent
// reads Secret drover-agent-hub, exchanges the token for a credential and opens the
// tunnel. Like the other agents it runs with the token of the agent's
// ServiceAccount, which the manifest creates, so that it has exactly the rights the
// Deployment would have.
func (d *dev) joinTunnelled(ctx context.Context, hub client.Client, t *target) {
	tag := "agent " + t.name
	warn := func(err error) {
		if ctx.Err() == nil {
			d.con.tagf(tag, colorWarn, "cannot join %s to the hub: %v", t.name, err)
		}
	}
	url, err := waitManifestURL(ctx, hub, t.name, func() {
		d.con.tagf(tag, colorAgent, "waiting for the manager to publish the registration manifest (ManagedCluster %s status.registration.manifestURL)", t.name)
	})
	if err != nil {
		warn(err)
		return
	}
	ca, err := waitHubCA(ctx, hub)
	if err != nil {
		warn(err)
		return
	}
	manifest, err := fetchManifest(ctx, url, ca)
	if err != nil {
		warn(err)
		return
	}
	objs, err := decodeObjects(manifest, "the registration manifest")
	if err != nil {
		warn(err)
		return
	}
	tc, err := client.New(t.cp.Config, client.Options{})
	if err != nil {
		warn(err)
		return
	}
	applied, err := applyObjects(ctx, tc, objs, "the registration manifest")
	if err != nil {
		warn(err)
		return
	}
	// The URL holds the token's id, as good as the token for fetching the
	// manifest: like the manager, make dev does not print it.
	d.con.tagf(tag, colorAgent, "fetched the registration manifest from the hub server (trusting ConfigMap %s/%s) and applied it to %s as kubectl apply -f would: %s",
		namespace, hubserver.CAConfigMapName, t.name, strings.Join(applied, ", "))
	raw, err := agentKubeconfig(ctx, t.cp.Config, t.cp.Kubeconfig(), func() {
		d.con.tagf(tag, colorAgent, "waiting for ServiceAccount %s/drover-agent", namespace)
	})
	if err != nil {
		warn(err)
		return
	}
	d.con.tagf(tag, colorAgent, "starting the agent with no flags but --kubeconfig: it finds the hub in Secret %s/%s and tunnels to it", namespace, registration.HubSecretName)
	d.startAgent(ctx, t, raw)
}

// waitManifestURL waits until the manager publishes a ManagedCluster's
// status.registration.manifestURL, and returns it.
func waitManifestURL(ctx context.Context, hub client.Client, name string, waiting func()) (string, error) {
	warned := false
	for {
		mc := &unstructured.Unstructured{}
		mc.SetAPIVersion("management.drover.io/v1alpha1")
		mc.SetKind("ManagedCluster")
		if err := hub.Get(ctx, client.ObjectKey{Name: name}, mc); err == nil {
			if url, _, _ := unstructured.NestedString(mc.Object, "status", "registration", "manifestURL"); url != "" {
				return url, nil
			}
		}
		if !warned {
			waiting()
			warned = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHubCA waits for the CA the hub server publishes in ConfigMap
// drover-system/drover-hub-ca, and returns it.
func waitHubCA(ctx context.Context, hub client.Client) ([]byte, error) {
	for {
		cm := &corev1.ConfigMap{}
		err := hub.Get(ctx, client.ObjectKey{Namespace: namespace, Name: hubserver.CAConfigMapName}, cm)
		if err == nil && cm.Data[hubserver.CAKey] != "" {
			return []byte(cm.Data[hubserver.CAKey]), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ConfigMap %s/%s: %w", namespace, hubserver.CAConfigMapName, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// fetchManifest GETs the registration manifest, trusting only the hub's CA. The
// manager may publish the URL a moment before it serves it, so a 404 is retried for
// a while.
func fetchManifest(ctx context.Context, url string, caPEM []byte) ([]byte, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("ConfigMap %s/%s key %s holds no PEM certificate", namespace, hubserver.CAConfigMapName, hubserver.CAKey)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err := get(ctx, hc, url)
		if err == nil || time.Now().After(deadline) {
			return body, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func get(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, errors.New("status.registration.manifestURL is not a URL")
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The error names the URL, which must not be printed.
		if uerr, ok := errors.AsType[*neturl.Error](err); ok {
			err = uerr.Err
		}
		return nil, fmt.Errorf("fetch the registration manifest: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch the registration manifest: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the registration manifest: %s", resp.Status)
	}
	return body, nil
}
