package authproxy

import (
	"context"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/tunnel"
)

// FollowerOptions let a replica that does not lead reach clusters itself: with the
// kubeconfig in a cluster's Secret, or through its agent's tunnel (held by this
// replica or reached through the replica that holds it).
type FollowerOptions struct {
	// Reader reads ManagedClusters and the Secrets in Namespace (the manager's cache).
	Reader    client.Reader
	Namespace string
	// Remote configures the connections as the controllers' (policy, timeouts).
	Remote remote.Options
	// Tunnels dials through a cluster's agent tunnel; nil without the hub's tunnel.
	Tunnels func(cluster string) func(ctx context.Context, network, address string) (net.Conn, error)
}

// follow returns this replica's own connection to a cluster, making it on first use
// from the ManagedCluster's spec. It waits for the first health probe (bounded by
// the probe timeout), so that a first request is not refused as "not probed yet".
func (c *Connections) follow(name string) (*remote.Cluster, error) {
	o := c.Follower
	if o.Reader == nil {
		return nil, fmt.Errorf("cluster %s is not connected on this replica, which does not lead", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var mc v1alpha1.ManagedCluster
	if err := o.Reader.Get(ctx, client.ObjectKey{Name: name}, &mc); err != nil {
		return nil, fmt.Errorf("cluster %s is not connected: %w", name, err)
	}
	c.mu.Lock()
	if c.own == nil {
		c.own = remote.New(o.Remote)
		c.ownNames = map[string]bool{}
	}
	rc := c.own
	c.ownNames[name] = true
	c.mu.Unlock()
	var cl *remote.Cluster
	var err error
	var ref *v1alpha1.SecretKeyReference
	switch {
	case mc.Spec.Kubeconfig != nil:
		ref = &mc.Spec.Kubeconfig.SecretRef
	case mc.Spec.Provisioning != nil:
		// The provisioning controller keeps the hub's kubeconfig for a cluster it builds.
		ref = &v1alpha1.SecretKeyReference{Name: controllers.ProvisionedKubeconfigSecretName(name)}
	}
	switch {
	case ref != nil:
		var secret corev1.Secret
		if err := o.Reader.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: ref.Name}, &secret); err != nil {
			return nil, fmt.Errorf("cluster %s is not connected: cannot read its kubeconfig Secret %s/%s", name, o.Namespace, ref.Name)
		}
		data, ok := secret.Data[ref.KeyOrDefault()]
		if !ok {
			return nil, fmt.Errorf("cluster %s is not connected: Secret %s/%s has no key %q", name, o.Namespace, ref.Name, ref.KeyOrDefault())
		}
		cl, err = rc.Connect(ctx, name, data, fmt.Sprintf("secret %s/%s", o.Namespace, ref.Name))
	case mc.Spec.Registration != nil && o.Tunnels != nil:
		cl, err = rc.ConnectTunnel(ctx, name, tunnel.APIServerHost, o.Tunnels(name), "the agent tunnel of "+name)
	default:
		return nil, fmt.Errorf("cluster %s is not connected on this replica, which does not lead", name)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s is not connected: %w", name, err)
	}
	for !cl.Health().Probed && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return cl, nil
}

// Start drops this replica's own connections to clusters that no longer exist, and
// all of them once it leads (the controllers' connections serve then). It is a
// manager Runnable on every replica.
func (c *Connections) Start(ctx context.Context) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.mu.Lock()
			own, names := c.own, c.ownNames
			c.ownNames = map[string]bool{}
			c.mu.Unlock()
			for n := range names {
				own.Forget(n)
			}
			return nil
		case <-t.C:
		}
		c.sweep(ctx)
	}
}

// NeedLeaderElection is false: followers need it most.
func (c *Connections) NeedLeaderElection() bool { return false }

func (c *Connections) sweep(ctx context.Context) {
	c.mu.Lock()
	own := c.own
	names := make([]string, 0, len(c.ownNames))
	for n := range c.ownNames {
		names = append(names, n)
	}
	c.mu.Unlock()
	if own == nil {
		return
	}
	for _, n := range names {
		if c.Controls != nil && !c.Controls(n) {
			var mc v1alpha1.ManagedCluster
			err := c.Follower.Reader.Get(ctx, client.ObjectKey{Name: n}, &mc)
			if err == nil || !apierrors.IsNotFound(err) {
				continue
			}
		}
		own.Forget(n)
		c.mu.Lock()
		delete(c.ownNames, n)
		c.mu.Unlock()
		ctrl.Log.WithName("proxy").V(1).Info("Closed this replica's own connection", "cluster", n)
	}
}
