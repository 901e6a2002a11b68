package sharding

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// ClaimAnnotation, on a shard's Lease held by another replica, names the replica of
// that shard's own number that wants it back. The holder hands the Lease over on its
// next renewal.
const ClaimAnnotation = "management.drover.io/claimed-by"

// HomeAnnotation, on a shard's Lease, is the shard of the replica that holds it (K of
// its --shard=K/N): a replica claims its own shard back only from a replica of
// another shard. Two replicas of one shard are holder and standby.
const HomeAnnotation = "management.drover.io/holder-shard"

// DefaultLeaseDuration is how long a shard's Lease lasts without renewal: a replica
// that dies without releasing its Lease is taken over after this (plus one renewal
// interval). A replica that stops releases its Leases, which are taken over within
// one renewal interval.
const DefaultLeaseDuration = 15 * time.Second

// Events on a shard's Lease, and the reasons they carry.
const (
	ReasonAcquired   = "ShardAcquired"
	ReasonTakenOver  = "ShardTakenOver"
	ReasonHandedBack = "ShardHandedBack"
	ReasonLost       = "ShardLost"
	ReasonClaimed    = "ShardClaimed"
)

var (
	heldGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_shard_held",
		Help: "1 for each shard whose Lease this replica holds (its own, and those it took over), else 0.",
	}, []string{"shard"})
	takeovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_shard_takeovers_total",
		Help: "Times this replica took over the Lease of another shard that nobody renewed.",
	}, []string{"shard"})
	handovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_shard_handovers_total",
		Help: "Times this replica handed a shard it had taken over back to that shard's own replica.",
	}, []string{"shard"})
)

func init() { metrics.Registry.MustRegister(heldGauge, takeovers, handovers) }

// Options configure a replica's shard Leases.
type Options struct {
	Spec      Spec
	Namespace string
	// Identity names this replica in the Leases' holderIdentity; unique per process.
	Identity string
	// Reader reads the Leases from the API server (not a cache).
	Reader client.Reader
	Writer client.Client
	// LeaseDuration defaults to DefaultLeaseDuration. Leases are renewed, and
	// other shards' Leases looked at, every fifth of it.
	LeaseDuration time.Duration
	Recorder      events.EventRecorder
}

// Shards holds this replica's shard Leases and answers which clusters it owns. It is
// a manager Runnable that runs on every replica.
type Shards struct {
	o Options

	mu   sync.Mutex
	held map[int]bool
	// renewed is when each held Lease was last written by this replica.
	renewed map[int]time.Time
	// seen is when each Lease was last seen to change (its resourceVersion), by
	// this replica's clock, so that clock skew between replicas does not matter
	// (as client-go's leader election does).
	seen      map[int]observation
	listeners []func()
	// changed is closed and replaced at each change of what is held (tests).
	changed chan struct{}
	// now is the clock (tests set their own).
	now func() time.Time
}

type observation struct {
	version string
	at      time.Time
}

// New returns the Leases of a replica started with o.Spec.
func New(o Options) *Shards {
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	return &Shards{o: o, held: map[int]bool{}, renewed: map[int]time.Time{}, seen: map[int]observation{}, changed: make(chan struct{}), now: time.Now}
}

// Spec returns this replica's --shard.
func (s *Shards) Spec() Spec { return s.o.Spec }

// Of returns the shard of a ManagedCluster.
func (s *Shards) Of(name string, labels map[string]string) int {
	return Of(name, labels, s.o.Spec.Count)
}

// Owns tells whether this replica holds the shard of a ManagedCluster.
func (s *Shards) Owns(name string, labels map[string]string) bool {
	return s.Holds(s.Of(name, labels))
}

// Holds tells whether this replica holds shard k.
func (s *Shards) Holds(k int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[k]
}

// Held lists the shards this replica holds, in order.
func (s *Shards) Held() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.held))
	for k, ok := range s.held {
		if ok {
			out = append(out, k)
		}
	}
	sort.Ints(out)
	return out
}

// OnChange registers f, called (without locks held) after each change of what this
// replica holds.
func (s *Shards) OnChange(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, f)
}

// Changed returns a channel that is closed at the next change of what is held.
func (s *Shards) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// NeedLeaderElection: every replica holds its shards.
func (s *Shards) NeedLeaderElection() bool { return false }

// Start holds the Leases until ctx is done, then releases those it holds so that
// other replicas take them over at once.
func (s *Shards) Start(ctx context.Context) error {
	log := ctrl.Log.WithName("sharding").WithValues("shard", s.o.Spec.String(), "identity", s.o.Identity)
	log.Info("Holding shard Leases", "namespace", s.o.Namespace, "leaseDuration", s.o.LeaseDuration)
	interval := s.o.LeaseDuration / 5
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for k := range s.o.Spec.Count {
			s.tick(ctx, k)
		}
		select {
		case <-ctx.Done():
			s.releaseAll()
			return nil
		case <-t.C:
		}
	}
}

// tick looks at shard k's Lease once: renews it, takes it over, claims it back or
// hands it back.
func (s *Shards) tick(ctx context.Context, k int) {
	log := ctrl.Log.WithName("sharding").WithValues("lease", LeaseName(k))
	now := s.now()
	home := k == s.o.Spec.Index
	key := client.ObjectKey{Namespace: s.o.Namespace, Name: LeaseName(k)}
	var l coordinationv1.Lease
	err := s.o.Reader.Get(ctx, key, &l)
	switch {
	case apierrors.IsNotFound(err):
		// Nobody ever held it. Our own shard is created at once; another shard is
		// taken only once it has been missing for a whole Lease duration, so
		// that replicas starting together do not grab each other's shards.
		if !home && !s.expired(k, "", now) {
			return
		}
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "drover", "app.kubernetes.io/component": "shard"}}}
		s.fill(&l, now, true)
		if err := s.o.Writer.Create(ctx, &l); err != nil {
			if !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
				log.Error(err, "Cannot create the shard Lease")
			}
			return
		}
		s.gained(k, &l, home, now)
		return
	case err != nil:
		if ctx.Err() == nil {
			log.Error(err, "Cannot read the shard Lease")
		}
		s.checkDeadline(k, now)
		return
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	claim := l.Annotations[ClaimAnnotation]
	switch {
	case holder == s.o.Identity && !home && claim != "" && claim != s.o.Identity:
		// Its own replica is back: hand the shard over. Stop owning first, then
		// write the claimant in, so that it starts at once.
		s.lost(k, &l, ReasonHandedBack, "handed back to "+claim)
		handovers.WithLabelValues(itoa(k)).Inc()
		delete(l.Annotations, ClaimAnnotation)
		l.Spec.HolderIdentity = ptr.To(claim)
		l.Annotations[HomeAnnotation] = strconv.Itoa(k)
		l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(now))
		l.Spec.AcquireTime = l.Spec.RenewTime
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
		if err := s.o.Writer.Update(ctx, &l); err != nil && ctx.Err() == nil {
			log.Error(err, "Cannot hand the shard back", "to", claim)
		}
	case holder == s.o.Identity:
		if home && claim != "" {
			delete(l.Annotations, ClaimAnnotation)
		}
		s.fill(&l, now, false)
		if err := s.o.Writer.Update(ctx, &l); err != nil {
			if apierrors.IsConflict(err) {
				// Someone else wrote it: look again at the next tick.
				return
			}
			if ctx.Err() == nil {
				log.Error(err, "Cannot renew the shard Lease")
			}
			s.checkDeadline(k, now)
			return
		}
		s.gained(k, &l, home, now)
	case (holder == "" && (home || s.releasedFor(k, l.ResourceVersion, now))) || (holder != "" && s.expired(k, l.ResourceVersion, now)):
		// Released by a replica that stopped, or not renewed for a whole Lease
		// duration: take it. A released shard is left to its own replica (a
		// rolling update's new pod, say) for one look before another takes it.
		if l.Annotations != nil {
			delete(l.Annotations, ClaimAnnotation)
		}
		s.fill(&l, now, true)
		if err := s.o.Writer.Update(ctx, &l); err != nil {
			if !apierrors.IsConflict(err) && ctx.Err() == nil {
				log.Error(err, "Cannot take the shard Lease")
			}
			return
		}
		s.gained(k, &l, home, now)
	default:
		// Held by another replica, which renews it.
		if s.Holds(k) {
			s.lost(k, &l, ReasonLost, "now held by "+holder)
		}
		if home && claim != s.o.Identity && l.Annotations[HomeAnnotation] != strconv.Itoa(k) {
			// Our own shard, taken over while we were away: ask for it back. (A
			// replica of the same shard holds it: this one is its standby, and
			// waits for the Lease to expire.)
			if l.Annotations == nil {
				l.Annotations = map[string]string{}
			}
			l.Annotations[ClaimAnnotation] = s.o.Identity
			if err := s.o.Writer.Update(ctx, &l); err == nil {
				s.observe(k, l.ResourceVersion, now)
				s.event(&l, eventNormal, ReasonClaimed, "Claim", "replica %s of shard %s asks %s to hand the shard back", s.o.Identity, s.o.Spec, holder)
			} else if !apierrors.IsConflict(err) && ctx.Err() == nil {
				log.Error(err, "Cannot claim the shard back", "holder", holder)
			}
		}
	}
}

// fill makes this replica the holder of l, renewed now.
func (s *Shards) fill(l *coordinationv1.Lease, now time.Time, acquire bool) {
	secs := int32(s.o.LeaseDuration / time.Second)
	if secs < 1 {
		secs = 1
	}
	t := metav1.NewMicroTime(now)
	if acquire || ptr.Deref(l.Spec.HolderIdentity, "") != s.o.Identity {
		l.Spec.AcquireTime = &t
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
	}
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = ptr.To(s.o.Identity), &secs, &t
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[HomeAnnotation] = strconv.Itoa(s.o.Spec.Index)
}

// expired tells whether shard k's Lease, now at version, has gone unchanged for a
// whole Lease duration by this replica's clock.
func (s *Shards) expired(k int, version string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.seen[k]
	if !ok || o.version != version {
		s.seen[k] = observation{version: version, at: now}
		return false
	}
	return now.Sub(o.at) > s.o.LeaseDuration
}

// releasedFor tells whether shard k's Lease, released at version, has stayed so for
// one renewal interval.
func (s *Shards) releasedFor(k int, version string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.seen[k]
	if !ok || o.version != version {
		s.seen[k] = observation{version: version, at: now}
		return false
	}
	return now.Sub(o.at) >= s.o.LeaseDuration/5
}

func (s *Shards) observe(k int, version string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[k] = observation{version: version, at: now}
}

// checkDeadline gives up a held shard that could not be renewed for two thirds of
// the Lease duration: another replica may take it over once it expires, and two
// replicas must not sync the same clusters.
func (s *Shards) checkDeadline(k int, now time.Time) {
	s.mu.Lock()
	last, held := s.renewed[k], s.held[k]
	s.mu.Unlock()
	if held && now.Sub(last) > s.o.LeaseDuration*2/3 {
		s.lost(k, nil, ReasonLost, "could not renew its Lease")
	}
}

// gained records that this replica holds shard k, renewed now.
func (s *Shards) gained(k int, l *coordinationv1.Lease, home bool, now time.Time) {
	s.mu.Lock()
	was := s.held[k]
	s.held[k] = true
	s.renewed[k] = now
	s.seen[k] = observation{version: l.ResourceVersion, at: now}
	s.mu.Unlock()
	if was {
		return
	}
	heldGauge.WithLabelValues(itoa(k)).Set(1)
	log := ctrl.Log.WithName("sharding").WithValues("lease", LeaseName(k))
	if home {
		log.Info("Holding this replica's own shard")
		s.event(l, eventNormal, ReasonAcquired, "Acquire", "replica %s holds shard %d", s.o.Identity, k)
	} else {
		takeovers.WithLabelValues(itoa(k)).Inc()
		log.Info("Took over a shard whose replica stopped renewing its Lease")
		s.event(l, eventWarning, ReasonTakenOver, "TakeOver", "replica %s (shard %s) took over shard %d, whose Lease nobody renewed", s.o.Identity, s.o.Spec, k)
	}
	s.notify()
}

// lost records that this replica no longer holds shard k.
func (s *Shards) lost(k int, l *coordinationv1.Lease, reason, why string) {
	s.mu.Lock()
	was := s.held[k]
	delete(s.held, k)
	delete(s.renewed, k)
	s.mu.Unlock()
	if !was {
		return
	}
	heldGauge.WithLabelValues(itoa(k)).Set(0)
	ctrl.Log.WithName("sharding").Info("No longer holding a shard", "lease", LeaseName(k), "reason", reason, "why", why)
	if l != nil {
		s.event(l, eventNormal, reason, "Release", "replica %s no longer holds shard %d: %s", s.o.Identity, k, why)
	}
	s.notify()
}

// releaseAll stops owning every shard, then clears holderIdentity in their Leases so
// that other replicas take them over at once.
func (s *Shards) releaseAll() {
	held := s.Held()
	for _, k := range held {
		s.lost(k, nil, ReasonLost, "stopping")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, k := range held {
		var l coordinationv1.Lease
		if err := s.o.Reader.Get(ctx, client.ObjectKey{Namespace: s.o.Namespace, Name: LeaseName(k)}, &l); err != nil {
			continue
		}
		if ptr.Deref(l.Spec.HolderIdentity, "") != s.o.Identity {
			continue
		}
		l.Spec.HolderIdentity = nil
		l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(s.now()))
		_ = s.o.Writer.Update(ctx, &l)
	}
}

func (s *Shards) notify() {
	s.mu.Lock()
	fs := append([]func(){}, s.listeners...)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

const (
	eventNormal  = corev1.EventTypeNormal
	eventWarning = corev1.EventTypeWarning
)

func (s *Shards) event(l *coordinationv1.Lease, typ, reason, action, note string, args ...any) {
	if s.o.Recorder == nil || l == nil || l.UID == "" {
		return
	}
	s.o.Recorder.Eventf(l, nil, typ, reason, action, note, args...)
}

func itoa(k int) string { return LeaseName(k)[len("drover-shard-"):] }
