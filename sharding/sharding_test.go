package sharding

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
		err  bool
	}{
		{in: "", want: Spec{}},
		{in: "0/1", want: Spec{Index: 0, Count: 1}},
		{in: "1/2", want: Spec{Index: 1, Count: 2}},
		{in: "63/64", want: Spec{Index: 63, Count: 64}},
		{in: "2/2", err: true},
		{in: "-1/2", err: true},
		{in: "0/0", err: true},
		{in: "0/65", err: true},
		{in: "1", err: true},
		{in: "a/b", err: true},
		{in: "1/2/3", err: true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && err.Error() == "" {
			t.Errorf("Parse(%q): empty error", tc.in)
		}
	}
}

func TestOf(t *testing.T) {
	// The assignment is documented (docs/sharding.md) and must never change: a
	// change moves clusters between running shards on upgrade.
	for name, want := range map[string]int{"prod-eu-1": Of("prod-eu-1", nil, 2)} {
		for range 3 {
			if got := Of(name, nil, 2); got != want {
				t.Fatalf("Of(%q) is not stable: %d then %d", name, want, got)
			}
		}
	}
	fixed := map[string][2]int{"a": {2, 0}, "b": {2, 1}, "prod-eu-1": {3, 1}}
	for name, nw := range fixed {
		if got := Of(name, nil, nw[0]); got != nw[1] {
			t.Errorf("Of(%q, %d) = %d, want %d (FNV-1a 32 of the name, modulo N)", name, nw[0], got, nw[1])
		}
	}
	if got := Of("a", map[string]string{Label: "1"}, 2); got != 1 {
		t.Errorf("the label does not pin the shard: got %d", got)
	}
	for _, v := range []string{"2", "-1", "x", ""} {
		if got := Of("a", map[string]string{Label: v}, 2); got != Of("a", nil, 2) {
			t.Errorf("label %q (not a shard of 2) should fall back to the hash, got %d", v, got)
		}
	}
	if got := Of("a", map[string]string{Label: "1"}, 1); got != 0 {
		t.Errorf("one shard holds everything, got %d", got)
	}
	// 1,000 clusters split roughly evenly.
	counts := make([]int, 2)
	for i := range 1000 {
		counts[Of(fmt.Sprintf("sim-%04d", i), nil, 2)]++
	}
	if counts[0] < 400 || counts[1] < 400 {
		t.Errorf("1,000 clusters split %v", counts)
	}
}

// replica is one replica's Shards, on a clock the test moves.
type replica struct {
	*Shards
	clock *time.Time
}

func newReplica(t *testing.T, c client.Client, spec string, id string, clock *time.Time) replica {
	t.Helper()
	sp, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Spec: sp, Namespace: "drover-system", Identity: id, Reader: c, Writer: c, LeaseDuration: 10 * time.Second})
	s.now = func() time.Time { return *clock }
	return replica{s, clock}
}

func (r replica) tickAll() {
	for k := range r.o.Spec.Count {
		r.tick(context.Background(), k)
	}
}

func TestLeases(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newReplica(t, c, "0/2", "a", &now)
	b := newReplica(t, c, "1/2", "b", &now)
	expect := func(r replica, want ...int) {
		t.Helper()
		if got := r.Held(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s holds %v, want %v", r.o.Identity, got, want)
		}
	}
	holder := func(k int) string {
		var l coordinationv1.Lease
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "drover-system", Name: LeaseName(k)}, &l); err != nil {
			t.Fatal(err)
		}
		return ptr.Deref(l.Spec.HolderIdentity, "")
	}

	// Only a: it holds its own shard at once, and leaves shard 1 (never held) to
	// its replica for a whole Lease duration.
	a.tickAll()
	expect(a, 0)
	now = now.Add(5 * time.Second)
	a.tickAll()
	expect(a, 0)

	// b starts in time and holds its own shard.
	b.tickAll()
	expect(b, 1)
	for range 10 {
		now = now.Add(2 * time.Second)
		a.tickAll()
		b.tickAll()
	}
	expect(a, 0)
	expect(b, 1)

	// b dies (stops renewing): a Lease duration after a last saw it renewed, by
	// a's own clock, a takes over.
	died := now
	for len(a.Held()) == 1 {
		if now.Sub(died) > time.Minute {
			t.Fatal("shard 1 was never taken over")
		}
		now = now.Add(2 * time.Second)
		a.tickAll()
	}
	if waited := now.Sub(died); waited <= 10*time.Second || waited > 14*time.Second {
		t.Fatalf("shard 1 was taken over %s after its last renewal; want a Lease duration (10s) and at most two looks more", waited)
	}
	expect(a, 0, 1)
	if holder(1) != "a" {
		t.Fatalf("shard 1's Lease is held by %q", holder(1))
	}

	// b's replica comes back (a new process): it claims its shard, a hands it over.
	b2 := newReplica(t, c, "1/2", "b2", &now)
	b2.tickAll()
	expect(b2)
	a.tickAll()
	expect(a, 0)
	if holder(1) != "b2" {
		t.Fatalf("shard 1 was handed to %q", holder(1))
	}
	b2.tickAll()
	expect(b2, 1)

	// A replica that stops releases its shards: another takes them once they
	// have stayed released for one look (its own replica, a rolling update's
	// new pod, goes first).
	b2.releaseAll()
	expect(b2)
	if holder(1) != "" {
		t.Fatalf("shard 1 still held by %q after release", holder(1))
	}
	a.tickAll()
	expect(a, 0)
	b3 := newReplica(t, c, "1/2", "b3", &now)
	b3.tickAll()
	expect(b3, 1)
	now = now.Add(2 * time.Second)
	a.tickAll()
	expect(a, 0)
	b3.releaseAll()
	a.tickAll()
	expect(a, 0)
	now = now.Add(2 * time.Second)
	a.tickAll()
	expect(a, 0, 1)

	// Two replicas of one shard: the second is a standby. It does not claim the
	// shard from a replica of the same shard, writes nothing, and takes over when
	// the first stops renewing.
	c2 := fake.NewClientBuilder().WithScheme(scheme).Build()
	first := newReplica(t, c2, "0/1", "first", &now)
	standby := newReplica(t, c2, "0/1", "standby", &now)
	first.tickAll()
	expect(first, 0)
	key := client.ObjectKey{Namespace: "drover-system", Name: LeaseName(0)}
	for range 5 {
		now = now.Add(2 * time.Second)
		standby.tickAll()
		first.tickAll()
	}
	expect(standby)
	var l2 coordinationv1.Lease
	_ = c2.Get(context.Background(), key, &l2)
	if l2.Annotations[ClaimAnnotation] != "" {
		t.Fatalf("the standby claimed its own shard from a replica of that shard: %v", l2.Annotations)
	}
	for range 7 {
		now = now.Add(2 * time.Second)
		standby.tickAll()
	}
	expect(standby, 0)

	// A holder that cannot renew gives its shard up before the Lease expires.
	broken := newReplica(t, fake.NewClientBuilder().WithScheme(scheme).Build(), "0/1", "x", &now)
	broken.tickAll()
	expect(broken, 0)
	broken.o.Reader = failing{}
	broken.o.Writer = failing{Client: broken.o.Writer}
	now = now.Add(7 * time.Second)
	broken.tickAll()
	expect(broken)
}

// failing fails every read and write.
type failing struct{ client.Client }

func (failing) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return fmt.Errorf("the hub is unreachable")
}
