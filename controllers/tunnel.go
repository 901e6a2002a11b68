package controllers

import (
	"context"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/tunnel"
)

// Tunnels is the hub side of the agent tunnels, as the controllers use it.
type Tunnels interface {
	// Dialer dials through a cluster's tunnel.
	Dialer(cluster string) func(ctx context.Context, network, address string) (net.Conn, error)
	// Close closes a cluster's tunnels: its ManagedCluster is gone.
	Close(cluster string)
}

// TunnelLookup tells the tunnel server what the hub knows of a cluster an agent
// claims to be, from the manager's cache.
func TunnelLookup(c client.Reader, namespace string) func(ctx context.Context, cluster string) (tunnel.ClusterInfo, error) {
	return func(ctx context.Context, cluster string) (tunnel.ClusterInfo, error) {
		mc := &v1alpha1.ManagedCluster{}
		if err := c.Get(ctx, client.ObjectKey{Name: cluster}, mc); err != nil {
			if apierrors.IsNotFound(err) {
				return tunnel.ClusterInfo{}, nil
			}
			return tunnel.ClusterInfo{}, err
		}
		if mc.Spec.Registration == nil {
			return tunnel.ClusterInfo{}, nil
		}
		token, err := bootstrapToken(ctx, c, namespace, mc)
		if err != nil {
			return tunnel.ClusterInfo{}, err
		}
		return tunnel.ClusterInfo{Registered: true, UID: string(mc.UID), Deleting: !mc.DeletionTimestamp.IsZero(),
			ClusterID: mc.Status.ClusterID, Token: token}, nil
	}
}

// TunnelRejections remembers, per cluster, why the last agent was turned away, so
// that the ManagedCluster's Connected condition can say it, and records an event.
type TunnelRejections struct {
	client   client.Reader
	recorder events.EventRecorder
	// notify reconciles a cluster.
	notify func(cluster string)

	mu sync.Mutex
	m  map[string]rejection
}

type rejection struct {
	message string
	at      time.Time
}

// rejectionTTL: an older rejection is no longer news.
const rejectionTTL = 10 * time.Minute

// NewTunnelRejections returns what the tunnel server reports rejected agents to.
// notify reconciles a cluster.
func NewTunnelRejections(c client.Reader, recorder events.EventRecorder, notify func(cluster string)) *TunnelRejections {
	return &TunnelRejections{client: c, recorder: recorder, notify: notify, m: map[string]rejection{}}
}

// Reject is the tunnel server's Reject callback: an event on the ManagedCluster, a
// note for its condition, and a reconcile. Agents naming clusters that do not exist
// leave no trace (nothing for a stranger to fill memory with).
func (t *TunnelRejections) Reject(cluster, reason, message string) {
	mc := &v1alpha1.ManagedCluster{}
	if err := t.client.Get(context.Background(), client.ObjectKey{Name: cluster}, mc); err != nil || mc.Spec.Registration == nil {
		return
	}
	t.recorder.Eventf(mc, nil, corev1.EventTypeWarning, reason, "Register", "%s", message)
	t.mu.Lock()
	t.m[cluster] = rejection{message: message, at: time.Now()}
	t.mu.Unlock()
	t.notify(cluster)
}

// last returns why the last agent of cluster was turned away, if recent.
func (t *TunnelRejections) last(cluster string) string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rej, ok := t.m[cluster]
	if !ok || time.Since(rej.at) > rejectionTTL {
		delete(t.m, cluster)
		return ""
	}
	return rej.message
}

// forget drops what is remembered of a cluster that is gone.
func (t *TunnelRejections) forget(cluster string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.m, cluster)
	t.mu.Unlock()
}
