package tunnel

import (
	"context"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Peer discovery: with several replicas, each advertises the URL of its tunnel
// endpoint in a Lease (drover-hub-peer-<id>, label app.kubernetes.io/component=
// hub-peer) and connects to every other replica whose Lease is current. A replica
// that does not hold a cluster's tunnel then dials through the one that does
// (remotedialer's peer sessions). It runs only with leader election, that is, when
// there may be more than one replica; a single manager writes nothing for it.
const (
	peerLeasePrefix   = "drover-hub-peer-"
	peerComponent     = "hub-peer"
	peerURLAnnotation = "management.drover.io/peer-url"
	peerLeaseDuration = 30 * time.Second
	peerRenewInterval = 10 * time.Second
	// peerSyncInterval: how often the peer Leases are read, so that a new
	// replica is reached within seconds.
	peerSyncInterval = 2 * time.Second
)

// PeerOptions say how this replica is found by the others.
type PeerOptions struct {
	// ID is unique per replica (the pod name and a random suffix).
	ID string
	// URL is where the other replicas reach this one's tunnel endpoint, e.g.
	// wss://10.0.0.5:9443/v1/tunnel.
	URL string
	// Reader reads the Leases straight from the API server (no informer for them);
	// Writer writes this replica's.
	Reader client.Reader
	Writer client.Writer
}

// RunPeers advertises this replica and keeps its peer connections current until ctx
// is done. Start must be running.
func (s *Server) RunPeers(ctx context.Context, o PeerOptions) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return
	}
	log := ctrl.Log.WithName("tunnel").WithValues("peer", o.ID)
	s.rd.PeerID = o.ID
	token := s.signer.Load().peerToken
	key := client.ObjectKey{Namespace: s.opts.Namespace, Name: peerLeasePrefix + o.ID}
	log.Info("Advertising this replica to its peers", "url", o.URL)
	t := time.NewTicker(peerSyncInterval)
	defer t.Stop()
	var renewed time.Time
	for {
		if time.Since(renewed) >= peerRenewInterval {
			if err := s.renewPeerLease(ctx, o, key); err != nil && ctx.Err() == nil {
				log.Error(err, "Cannot renew the peer Lease", "lease", key.String())
			} else {
				renewed = time.Now()
			}
		}
		s.syncPeers(ctx, o, token)
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = o.Writer.Delete(dctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}})
			cancel()
			// Stop dialling the peers: remotedialer keeps reconnecting to a peer
			// until it is removed, which would outlive this replica's manager
			// (in tests, several run in one process and stop one at a time).
			s.mu.Lock()
			peers := s.peers
			s.peers = nil
			s.mu.Unlock()
			for id := range peers {
				s.rd.RemovePeer(id)
			}
			return
		case <-t.C:
		}
	}
}

func (s *Server) renewPeerLease(ctx context.Context, o PeerOptions, key client.ObjectKey) error {
	now := metav1.NewMicroTime(time.Now())
	secs := int32(peerLeaseDuration / time.Second)
	var l coordinationv1.Lease
	err := o.Reader.Get(ctx, key, &l)
	if apierrors.IsNotFound(err) {
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": peerComponent},
			Annotations: map[string]string{peerURLAnnotation: o.URL}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &o.ID, LeaseDurationSeconds: &secs, RenewTime: &now}}
		return o.Writer.Create(ctx, &l)
	}
	if err != nil {
		return err
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[peerURLAnnotation] = o.URL
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &o.ID, &secs, &now
	return o.Writer.Update(ctx, &l)
}

// syncPeers connects to every replica with a current Lease and drops the others.
func (s *Server) syncPeers(ctx context.Context, o PeerOptions, token string) {
	var leases coordinationv1.LeaseList
	if err := o.Reader.List(ctx, &leases, client.InNamespace(s.opts.Namespace),
		client.MatchingLabels{"app.kubernetes.io/component": peerComponent}); err != nil {
		return
	}
	want := map[string]string{}
	for _, l := range leases.Items {
		id, ok := strings.CutPrefix(l.Name, peerLeasePrefix)
		if !ok || id == "" || id == o.ID || l.Spec.RenewTime == nil || l.Annotations[peerURLAnnotation] == "" {
			continue
		}
		if time.Since(l.Spec.RenewTime.Time) > peerLeaseDuration {
			continue
		}
		want[id] = l.Annotations[peerURLAnnotation]
	}
	s.mu.Lock()
	have := s.peers
	s.peers = want
	s.mu.Unlock()
	for id, u := range want {
		if have[id] != u {
			ctrl.Log.WithName("tunnel").Info("Connecting to a peer replica", "peer", id, "url", u)
		}
		s.rd.AddPeer(u, id, token)
	}
	for id := range have {
		if _, ok := want[id]; !ok {
			ctrl.Log.WithName("tunnel").Info("Dropping a peer replica", "peer", id)
			s.rd.RemovePeer(id)
		}
	}
}
