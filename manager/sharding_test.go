package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/sharding"
)

// shardReplica is one manager started with --shard.
type shardReplica struct {
	k      int
	rc     *remote.Cache
	shards *sharding.Shards
	stop   func()
}

// startShard runs a manager with --shard=k/2 and waits until it has built its
// connection cache.
func (e *hubEnv) startShard(t *testing.T, k int, addr string) *shardReplica {
	t.Helper()
	r := &shardReplica{k: k}
	ready := make(chan struct{})
	r.stop = e.startManagerWith(t, addr, func(o *Options) {
		o.started = func(rc *remote.Cache, s *sharding.Shards) {
			r.rc, r.shards = rc, s
			close(ready)
		}
	}, fmt.Sprintf("--shard=%d/2", k), "--shard-lease-duration=2s")
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("shard %d never started", k)
	}
	return r
}

// nameInShard returns the first of prefix-0, prefix-1, ... that FNV-1a puts into shard
// k of 2.
func nameInShard(prefix string, k int) string {
	for i := 0; ; i++ {
		n := fmt.Sprintf("%s-%d", prefix, i)
		if sharding.Of(n, nil, 2) == k {
			return n
		}
	}
}

// TestShards runs two managers, --shard=0/2 and --shard=1/2, against one hub and
// three targets: one pinned to shard 0 by label, one put into shard 1 by its name's
// hash, and one registered through an agent whose tunnel lands on shard 0's replica
// while shard 1 owns it. Each cluster is connected and synced by exactly one replica,
// the intents' status sums both shards, an idle hub writes nothing, and when shard 1
// stops, shard 0 takes its clusters over and keeps them synced, then hands them back
// when shard 1 returns.
func TestShards(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	cp, _, c := startBareHub(t, "shards-hub", DefaultNamespace)
	// Both replicas advertise the first one's address, as a Service would: agents,
	// their manifests and their tunnels all land on shard 0's replica.
	e := &hubEnv{cp: cp, c: c, addr: freeAddr(t)}
	replicas := []*shardReplica{e.startShard(t, 0, e.addr), e.startShard(t, 1, freeAddr(t))}
	e.ca = e.waitCA(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca)
	e.hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	pinned, hashed, edge := "pinned-0", nameInShard("hashed", 1), nameInShard("edge", 1)
	g.Expect(sharding.Of(pinned, map[string]string{sharding.Label: "0"}, 2)).To(Equal(0))
	targets := map[string]client.Client{}
	cps := map[string]*controlplane.ControlPlane{}
	for _, name := range []string{pinned, hashed, edge} {
		target, err := controlplane.Start(controlplane.Options{Name: "shards-" + name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = target.Stop() })
		scheme, _ := Scheme()
		tc, err := client.New(target.Config, client.Options{Scheme: scheme})
		g.Expect(err).NotTo(HaveOccurred())
		targets[name], cps[name] = tc, target
	}
	registerDirect(g, c, pinned, cps[pinned])
	mc := getMC(g, c, pinned)
	g.Expect(update(c, mc, func() { mc.Labels = map[string]string{sharding.Label: "0"} })).To(Succeed())
	registerDirect(g, c, hashed, cps[hashed])
	// The manifest is fetched from shard 0's replica, which does not own the cluster.
	stopAgent := registerTunnel(t, e, edge, targets[edge], cps[edge])
	t.Cleanup(stopAgent)
	owner := map[string]int{pinned: 0, hashed: 1, edge: 1}
	all := []string{pinned, hashed, edge}
	for _, name := range all {
		waitReady(g, c, name)
	}

	// The intents: one of each kind over all three clusters, and a binding that no
	// target can hold, whose failures come from both shards.
	g.Expect(c.Create(ctx, &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextCluster, Rules: []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}}}})).To(Succeed())
	viewers := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewers"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "pod-reader"},
		Clusters: &v1alpha1.ClusterSelection{Names: all}}}
	g.Expect(c.Create(ctx, viewers)).To(Succeed())
	g.Expect(c.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "bob@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "no-such-role"},
		Clusters: &v1alpha1.ClusterSelection{Names: all}}})).To(Succeed())
	g.Expect(c.Create(ctx, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "payments"}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters: v1alpha1.ClusterSelection{Names: all}, Namespaces: []v1alpha1.ProjectNamespace{{Name: "payments-api"}}}})).To(Succeed())

	// holders says which replicas hold a connection to a cluster.
	holders := func(name string) []int {
		var out []int
		for _, r := range replicas {
			if r != nil && r.rc.Get(name) != nil {
				out = append(out, r.k)
			}
		}
		return out
	}
	expectSynced := func(g Gomega, user string) {
		for _, name := range all {
			g.Expect(can(g, targets[name], user, "list", "pods")).To(BeTrue(), "%s in %s", user, name)
		}
	}
	expectStatus := func(g Gomega, gen int64) {
		var ab v1alpha1.AccessBinding
		g.Expect(c.Get(ctx, client.ObjectKey{Name: "viewers"}, &ab)).To(Succeed())
		g.Expect(ab.Generation).To(Equal(gen))
		g.Expect(ab.Status.ObservedGeneration).To(Equal(gen))
		g.Expect(ab.Status.Synced).To(Equal("3/3"))
		g.Expect(findCond(ab.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
		g.Expect(ab.Status.Failures).To(BeEmpty())

		var broken v1alpha1.AccessBinding
		g.Expect(c.Get(ctx, client.ObjectKey{Name: "broken"}, &broken)).To(Succeed())
		g.Expect(broken.Status.Synced).To(Equal("0/3"))
		g.Expect(findCond(broken.Status.Conditions, v1alpha1.StalledCondition)).To(HaveField("Status", metav1.ConditionTrue))
		g.Expect(broken.Status.Failures).To(ConsistOf(
			HaveField("Cluster", pinned), HaveField("Cluster", hashed), HaveField("Cluster", edge)))

		var rt v1alpha1.RoleTemplate
		g.Expect(c.Get(ctx, client.ObjectKey{Name: "pod-reader"}, &rt)).To(Succeed())
		g.Expect(rt.Status.Installed).To(Equal("3/3"))
		g.Expect(findCond(rt.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))

		var p v1alpha1.ClusterProject
		g.Expect(c.Get(ctx, client.ObjectKey{Name: "payments"}, &p)).To(Succeed())
		g.Expect(p.Status.Synced).To(Equal("3/3"))
		g.Expect(p.Status.Clusters).To(HaveLen(3))
		for _, cs := range p.Status.Clusters {
			g.Expect(cs.Synced).To(BeTrue(), "%s: %s", cs.Cluster, cs.Message)
		}
	}

	t.Run("each cluster is connected and synced by its shard's replica only", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			for _, name := range all {
				g.Expect(holders(name)).To(Equal([]int{owner[name]}), name)
			}
			expectSynced(g, "alice@example.com")
			expectStatus(g, 1)
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		var ab v1alpha1.AccessBinding
		g.Expect(c.Get(ctx, client.ObjectKey{Name: "viewers"}, &ab)).To(Succeed())
		g.Expect(ab.Status.Shards).To(ConsistOf(
			And(HaveField("Shard", int32(0)), HaveField("Clusters", int32(1)), HaveField("Synced", int32(1))),
			And(HaveField("Shard", int32(1)), HaveField("Clusters", int32(2)), HaveField("Synced", int32(2)))))
	})

	// quiet expects no write to the intents and the ManagedClusters for a while.
	quiet := func(t *testing.T) {
		g := NewWithT(t)
		objs := []client.Object{&v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewers"}},
			&v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "broken"}},
			&v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"}},
			&v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "payments"}}}
		for _, name := range all {
			objs = append(objs, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
		versions := func(g Gomega) map[string]string {
			out := map[string]string{}
			for _, o := range objs {
				g.Expect(c.Get(ctx, client.ObjectKeyFromObject(o), o)).To(Succeed())
				out[fmt.Sprintf("%T %s", o, o.GetName())] = o.GetResourceVersion()
			}
			return out
		}
		// What the last change started may still be landing (quota usage, say):
		// wait for one quiet second, which a write ping-pong never gives, then
		// expect nothing more.
		var before map[string]string
		g.Eventually(func(g Gomega) {
			before = versions(g)
			time.Sleep(time.Second)
			g.Expect(versions(g)).To(Equal(before))
		}, 30*time.Second, 10*time.Millisecond).Should(Succeed())
		g.Consistently(func(g Gomega) {
			g.Expect(versions(g)).To(Equal(before))
		}, 3*time.Second, 200*time.Millisecond).Should(Succeed())
	}
	t.Run("an idle sharded hub writes nothing", quiet)

	t.Run("a stopped shard is taken over and its clusters stay synced", func(t *testing.T) {
		g := NewWithT(t)
		replicas[1].stop()
		replicas[1] = nil
		g.Eventually(func(g Gomega) {
			g.Expect(replicas[0].shards.Held()).To(Equal([]int{0, 1}))
			for _, name := range all {
				g.Expect(holders(name)).To(Equal([]int{0}), name)
			}
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		var events eventsv1.EventList
		g.Eventually(func(g Gomega) {
			g.Expect(c.List(ctx, &events, client.InNamespace(DefaultNamespace))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(And(HaveField("Reason", sharding.ReasonTakenOver),
				HaveField("Regarding.Name", sharding.LeaseName(1)))))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

		// A change reaches every cluster, the taken-over ones included, and status
		// says so.
		g.Expect(update(c, viewers, func() {
			viewers.Spec.Subjects = append(viewers.Spec.Subjects, v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: "carol@example.com"})
		})).To(Succeed())
		g.Eventually(func(g Gomega) {
			expectSynced(g, "carol@example.com")
			expectStatus(g, 2)
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
	})
	t.Run("an idle hub with one replica for two shards writes nothing", quiet)

	t.Run("a returning shard gets its clusters back", func(t *testing.T) {
		g := NewWithT(t)
		replicas[1] = e.startShard(t, 1, freeAddr(t))
		g.Eventually(func(g Gomega) {
			g.Expect(replicas[0].shards.Held()).To(Equal([]int{0}))
			g.Expect(replicas[1].shards.Held()).To(Equal([]int{1}))
			for _, name := range all {
				g.Expect(holders(name)).To(Equal([]int{owner[name]}), name)
			}
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
		var l coordinationv1.Lease
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: sharding.LeaseName(1)}, &l)).To(Succeed())
		g.Expect(l.Annotations).NotTo(HaveKey(sharding.ClaimAnnotation))
		g.Expect(ptr.Deref(l.Spec.HolderIdentity, "")).NotTo(BeEmpty())

		g.Expect(update(c, viewers, func() {
			viewers.Spec.Subjects = append(viewers.Spec.Subjects, v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: "dave@example.com"})
		})).To(Succeed())
		g.Eventually(func(g Gomega) {
			expectSynced(g, "dave@example.com")
			expectStatus(g, 3)
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
	})
	t.Run("an idle hub writes nothing after the handover", quiet)
}
