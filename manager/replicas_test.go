package manager

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/render"
)

// TestTunnelThroughPeer runs two manager replicas with leader election. The agent
// holds its tunnel to the replica that is not the leader; the leader, which does all
// the reconciling, reaches the cluster through that replica.
func TestTunnelThroughPeer(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub := startHub(t, "replicas-hub", "--leader-elect")
	// The first replica leads before the second starts.
	g.Eventually(func(g Gomega) {
		var l coordinationv1.Lease
		g.Expect(hub.c.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: "drover-manager.management.drover.io"}, &l)).To(Succeed())
		g.Expect(l.Spec.HolderIdentity).NotTo(BeNil())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	follower := freeAddr(t)
	hub.startManager(t, follower, "--leader-elect")

	target, err := controlplane.Start(controlplane.Options{Name: "replicas-target", ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Stop() })
	scheme, _ := Scheme()
	tc, err := client.New(target.Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())

	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "edge-7"},
		Spec: v1alpha1.ManagedClusterSpec{Registration: &v1alpha1.RegistrationSource{}}}
	g.Expect(hub.c.Create(ctx, mc)).To(Succeed())
	url := waitManifestURL(t, hub.c, "", time.Now().Add(30*time.Second))
	code, manifest := fetch(t, hub.hc, url)
	g.Expect(code).To(Equal(http.StatusOK))
	applyManifest(t, tc, manifest)
	// Point the agent at the follower.
	var hubSecret corev1.Secret
	g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: render.AgentNamespace, Name: "drover-agent-hub"}, &hubSecret)).To(Succeed())
	hubSecret.Data["url"] = []byte("https://" + follower)
	g.Expect(tc.Update(ctx, &hubSecret)).To(Succeed())

	stopAgent := runAgent(t, target)
	g.Eventually(func(g Gomega) {
		cur := getMC(g, hub.c, "edge-7")
		g.Expect(findCond(cur.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())

	grantView(g, hub.c, tc, "edge-7")

	// The authentication proxy answers on both replicas: the leader reaches the
	// cluster through its controllers' connection (through the follower's tunnel), the
	// follower with a connection of its own.
	// A cluster registered with a kubeconfig is reached the same way.
	direct, err := controlplane.Start(controlplane.Options{Name: "replicas-direct", ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Stop() })
	dc, err := client.New(direct.Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	registerDirect(g, hub.c, "direct-1", direct)
	waitReady(g, hub.c, "direct-1")
	g.Expect(hub.c.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "direct-viewers"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"direct-1"}}}})).To(Succeed())
	g.Eventually(func(g Gomega) { g.Expect(can(g, dc, "alice@example.com", "list", "pods")).To(BeTrue()) }, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	aliceKubeconfig, err := hub.cp.AddUser("alice@example.com")
	g.Expect(err).NotTo(HaveOccurred())
	for _, addr := range []string{hub.addr, follower} {
		cfg := proxyConfig(g, hub, aliceKubeconfig, "")
		cfg.Host = "https://" + addr
		for _, cluster := range []string{"edge-7", "direct-1"} {
			g.Eventually(func(g Gomega) {
				_, err := clientFor(g, cfg, cluster).CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
				g.Expect(err).NotTo(HaveOccurred())
			}, 20*time.Second, 200*time.Millisecond).Should(Succeed(), "%s through the replica at %s", cluster, addr)
		}
	}

	// The tunnel closing at the follower is seen by the leader.
	stopAgent()
	start := time.Now()
	waitTunnelDisconnected(g, hub.c, "edge-7")
	t.Logf("tunnel loss at the follower seen by the leader in %s", time.Since(start).Round(time.Millisecond))
}
