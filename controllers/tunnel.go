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
	"github.com/drover-io/drover/registration"
	"github.com/drover-io/drover/remote"
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
		info := tunnel.ClusterInfo{Registered: true, UID: string(mc.UID), Deleting: !mc.DeletionTimestamp.IsZero(), ClusterID: mc.Status.ClusterID}
		ref, _ := tokenRef(mc)
		var secret corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &secret)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return tunnel.ClusterInfo{}, err
		default:
			if t := string(secret.Data[ref.Key]); len(t) >= registration.MinTokenLength {
				info.Token = t
			}
		}
		return info, nil
	}
}

// rejections remembers, per cluster, why the last agent was turned away, so that the
// ManagedCluster's Connected condition can say it.
type rejections struct {
	mu sync.Mutex
	m  map[string]rejection
}

type rejection struct {
	message string
	at      time.Time
}

// rejectionTTL: an older rejection is no longer news.
const rejectionTTL = 10 * time.Minute

// TunnelRejections returns the tunnel server's Reject callback: an event on the
// ManagedCluster, a note for its condition, and a reconcile. Agents naming clusters
// that do not exist leave no trace (nothing for a stranger to fill memory with).
func TunnelRejections(c client.Reader, recorder events.EventRecorder, rc func() *remote.Cache) func(cluster, reason, message string) {
	return func(cluster, reason, message string) {
		mc := &v1alpha1.ManagedCluster{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: cluster}, mc); err != nil || mc.Spec.Registration == nil {
			return
		}
		recorder.Eventf(mc, nil, corev1.EventTypeWarning, reason, "Register", "%s", message)
		tunnelRejections.mu.Lock()
		tunnelRejections.m[cluster] = rejection{message: message, at: time.Now()}
		tunnelRejections.mu.Unlock()
		if cache := rc(); cache != nil {
			cache.Notify(cluster)
		}
	}
}

var tunnelRejections = &rejections{m: map[string]rejection{}}

// rejection returns why the last agent of cluster was turned away, if recent.
func (r *ManagedClusterReconciler) rejection(cluster string) string {
	tunnelRejections.mu.Lock()
	defer tunnelRejections.mu.Unlock()
	rej, ok := tunnelRejections.m[cluster]
	if !ok || time.Since(rej.at) > rejectionTTL {
		delete(tunnelRejections.m, cluster)
		return ""
	}
	return rej.message
}

func forgetRejection(cluster string) {
	tunnelRejections.mu.Lock()
	delete(tunnelRejections.m, cluster)
	tunnelRejections.mu.Unlock()
}
