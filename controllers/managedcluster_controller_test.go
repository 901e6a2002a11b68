package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
)

const timeout = 30 * time.Second

func targetClient(t *testing.T, cp *controlplane.ControlPlane) client.Client {
	t.Helper()
	c, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// register stores a kubeconfig Secret and creates a ManagedCluster for it.
func register(t *testing.T, name string, kubeconfig []byte, mutate ...func(*v1alpha1.ManagedCluster)) *v1alpha1.ManagedCluster {
	t.Helper()
	ctx := context.Background()
	putSecret(t, name+"-kubeconfig", map[string][]byte{"value": kubeconfig})
	mc := &v1alpha1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"env": "test"}},
		Spec: v1alpha1.ManagedClusterSpec{
			Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: name + "-kubeconfig"}},
		},
	}
	for _, m := range mutate {
		m(mc)
	}
	if err := hubc.Create(ctx, mc); err != nil {
		t.Fatal(err)
	}
	return mc
}

func putSecret(t *testing.T, name string, data map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	err := hubc.Get(ctx, client.ObjectKeyFromObject(s), s)
	switch {
	case apierrors.IsNotFound(err):
		s.Data = data
		err = hubc.Create(ctx, s)
	case err == nil:
		s.Data = data
		err = hubc.Update(ctx, s)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// deleteAndWait deletes a ManagedCluster and waits until it is gone.
func deleteAndWait(t *testing.T, name string) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
	g.Expect(client.IgnoreNotFound(hubc.Delete(ctx, mc))).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(hubc.Get(ctx, client.ObjectKeyFromObject(mc), mc))
	}, timeout, 100*time.Millisecond).Should(BeTrue(), "ManagedCluster %s was never deleted", name)
}

func getCluster(g Gomega, name string) *v1alpha1.ManagedCluster {
	mc := &v1alpha1.ManagedCluster{}
	g.Expect(hubc.Get(context.Background(), client.ObjectKey{Name: name}, mc)).To(Succeed())
	return mc
}

func expectCondition(g Gomega, mc *v1alpha1.ManagedCluster, typ string, status metav1.ConditionStatus, reason string) {
	c := conditions.Get(mc, typ)
	g.Expect(c).NotTo(BeNil(), "no %s condition yet", typ)
	g.Expect(c.Status).To(Equal(status), "%s: %s %s", typ, c.Reason, c.Message)
	if reason != "" {
		g.Expect(c.Reason).To(Equal(reason), "%s: %s", typ, c.Message)
	}
}

func createNode(t *testing.T, c client.Client, name string, ready bool, cpu string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	if err := c.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	n.Status = corev1.NodeStatus{
		Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("8Gi")},
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("7Gi")},
		Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &corev1.Node{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(n), cur); err != nil {
			return err
		}
		cur.Status = n.Status
		return c.Status().Update(ctx, cur)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRegisterToReady registers a target with two nodes, runs the agent against it,
// and follows the cluster to Ready with its facts, then changes a node.
func TestRegisterToReady(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tc := targetClient(t, targets[0])
	createNode(t, tc, "node-a", true, "4")
	createNode(t, tc, "node-b", false, "2")
	defer func() {
		_ = tc.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
		_ = tc.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}})
	}()

	register(t, "ready-1", targets[0].Kubeconfig())
	defer deleteAndWait(t, "ready-1")

	t.Run("becomes Ready with the target's facts", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "ready-1")
			expectCondition(g, mc, v1alpha1.ConnectedCondition, metav1.ConditionTrue, v1alpha1.ReasonConnected)
			expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
			g.Expect(mc.Status.KubernetesVersion).To(Equal("v1.36.3"))
			g.Expect(mc.Status.APIEndpoint).To(Equal(strings.TrimSuffix(targets[0].Endpoint(), "/")))
			g.Expect(mc.Status.NodesReady).To(Equal("1/2"))
			g.Expect(mc.Status.Distribution).To(Equal(v1alpha1.DistributionUnknown))
			cpu := mc.Status.Capacity[corev1.ResourceCPU]
			g.Expect(cpu.String()).To(Equal("6"))
			g.Expect(mc.Finalizers).To(ContainElement(controllers.ManagedClusterFinalizer))
			g.Expect(mc.Status.ObservedGeneration).To(Equal(mc.Generation))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("the agent is installed with server-side apply, owned by field manager drover", func(t *testing.T) {
		g := NewWithT(t)
		var dep appsv1.Deployment
		g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: controllers.AgentNamespace, Name: controllers.AgentName}, &dep)).To(Succeed())
		g.Expect(dep.Spec.Template.Spec.Containers[0].Image).To(Equal("drover:test"))
		g.Expect(dep.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--cluster-name=ready-1"))
		g.Expect(dep.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "drover"))
		g.Expect(dep.ManagedFields).NotTo(BeEmpty())
		g.Expect(dep.ManagedFields[0].Manager).To(Equal("drover"))
		var role rbacv1.ClusterRole
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: controllers.AgentRoleName}, &role)).To(Succeed())
	})

	t.Run("without a running agent, AgentReady is False", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "ready-1")
			expectCondition(g, mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonLeaseNotFound)
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	// Run the agent as a process would, against its target.
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(agentCtx, targets[0].Config, agent.Options{
			ClusterName: "ready-1", Namespace: controllers.AgentNamespace, LeaseName: controllers.AgentName,
			RenewInterval: 300 * time.Millisecond, LeaseDuration: 2 * time.Second, Version: "v0.0.0-test",
		})
	}()

	t.Run("a running agent is reported, and an idle cluster writes nothing", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "ready-1")
			expectCondition(g, mc, v1alpha1.AgentReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonAgentReporting)
			g.Expect(mc.Status.Agent).NotTo(BeNil())
			g.Expect(mc.Status.Agent.Version).To(Equal("v0.0.0-test"))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// The agent renews its Lease several times a second, yet an idle, healthy
		// cluster writes nothing to the hub.
		expectQuiet(t, "ready-1", 3*time.Second)
	})

	t.Run("a deleted agent Deployment is reinstalled", func(t *testing.T) {
		g := NewWithT(t)
		var old appsv1.Deployment
		g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: controllers.AgentNamespace, Name: controllers.AgentName}, &old)).To(Succeed())
		g.Expect(tc.Delete(ctx, &old)).To(Succeed())
		g.Eventually(func(g Gomega) {
			var d appsv1.Deployment
			g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: controllers.AgentNamespace, Name: controllers.AgentName}, &d)).To(Succeed())
			g.Expect(d.UID).NotTo(Equal(old.UID), "the deleted Deployment is still there")
			g.Expect(d.DeletionTimestamp.IsZero()).To(BeTrue())
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("a stopped agent's Lease goes stale and AgentReady turns False", func(t *testing.T) {
		g := NewWithT(t)
		stopAgent()
		g.Expect(<-agentDone).To(Succeed())
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "ready-1")
			expectCondition(g, mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonLeaseExpired)
			expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("facts follow the target's nodes through the watch", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var nb corev1.Node
			if err := tc.Get(ctx, client.ObjectKey{Name: "node-b"}, &nb); err != nil {
				return err
			}
			nb.Status.Conditions[0].Status = corev1.ConditionTrue
			return tc.Status().Update(ctx, &nb)
		})).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(getCluster(g, "ready-1").Status.NodesReady).To(Equal("2/2"))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})
}

// expectQuiet waits for a ManagedCluster to settle, then fails if it is written again
// within window.
func expectQuiet(t *testing.T, name string, window time.Duration) {
	t.Helper()
	g := NewWithT(t)
	var rv string
	var settled *v1alpha1.ManagedCluster
	g.Eventually(func() bool {
		prev := rv
		settled = getCluster(g, name)
		rv = settled.ResourceVersion
		return prev == rv
	}, 10*time.Second, 500*time.Millisecond).Should(BeTrue(), "%s never settles", name)
	var last *v1alpha1.ManagedCluster
	g.Consistently(func() string {
		last = getCluster(g, name)
		return last.ResourceVersion
	}, window, 250*time.Millisecond).Should(Equal(rv), func() string {
		return fmt.Sprintf("%s keeps being written while nothing changes:\nbefore: %+v\nafter:  %+v", name, settled.Status, last.Status)
	})
}

// TestBadInput gives each kind of bad input its own reason and a message naming the
// Secret and key, and never puts Secret content into events.
func TestBadInput(t *testing.T) {
	const token = "s3cr3t-token-never-logged"
	otherCA := func(c *clientcmdapi.Config) {
		other, _ := clientcmdLoad(targets[1].Kubeconfig())
		for name := range c.Clusters {
			for _, oc := range other.Clusters {
				c.Clusters[name].CertificateAuthorityData = oc.CertificateAuthorityData
			}
		}
	}
	badToken := func(c *clientcmdapi.Config) {
		for name := range c.AuthInfos {
			c.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
		}
	}
	server := func(url string) func(c *clientcmdapi.Config) {
		return func(c *clientcmdapi.Config) {
			for name := range c.Clusters {
				c.Clusters[name].Server = url
			}
		}
	}
	unreachable := func(c *clientcmdapi.Config) {
		for name := range c.Clusters {
			c.Clusters[name].Server = "https://127.0.0.1:1"
		}
	}
	cases := []struct {
		name    string
		setup   func(t *testing.T, name string)
		reason  string
		message []string
	}{
		{"missing-secret", func(t *testing.T, name string) {
			mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ManagedClusterSpec{
				Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: "does-not-exist"}}}}
			NewWithT(t).Expect(hubc.Create(context.Background(), mc)).To(Succeed())
		}, v1alpha1.ReasonSecretNotFound, []string{"secret drover-system/does-not-exist does not exist", "key 'value'"}},
		{"missing-key", func(t *testing.T, name string) {
			register(t, name, targets[0].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Spec.Kubeconfig.SecretRef.Key = "kubeconfig" })
		}, v1alpha1.ReasonSecretKeyNotFound, []string{"secret drover-system/missing-key-kubeconfig has no key 'kubeconfig'", "it has: value"}},
		{"malformed", func(t *testing.T, name string) {
			register(t, name, []byte("apiVersion: v1\nkind: Config\nclusters: [\n  token: "+token))
		}, v1alpha1.ReasonInvalidKubeconfig, []string{"secret drover-system/malformed-kubeconfig key 'value' does not hold a usable kubeconfig"}},
		{"wrong-ca", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], otherCA))
		}, v1alpha1.ReasonCertificateInvalid, []string{"not signed by the CA in secret drover-system/wrong-ca-kubeconfig key 'value'"}},
		{"unreachable", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], unreachable))
		}, v1alpha1.ReasonUnreachable, []string{"cannot reach https://127.0.0.1:1: connection refused"}},
		{"bad-credentials", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], badToken))
		}, v1alpha1.ReasonUnauthorized, []string{"rejected the credentials in secret drover-system/bad-credentials-kubeconfig key 'value'"}},
		{"registration-without-hub-server", func(t *testing.T, name string) {
			mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ManagedClusterSpec{
				Registration: &v1alpha1.RegistrationSource{}}}
			NewWithT(t).Expect(hubc.Create(context.Background(), mc)).To(Succeed())
		}, v1alpha1.ReasonHubServerDisabled, []string{"--hub-bind-address"}},
		{"plain-http", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], server("http://127.0.0.1:6443")))
		}, v1alpha1.ReasonInvalidKubeconfig, []string{"https", "--allow-insecure-http-clusters"}},
		{"password-in-url", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], server("https://admin:"+token+"@127.0.0.1:6443")))
		}, v1alpha1.ReasonInvalidKubeconfig, []string{"credentials"}},
		{"metadata-address", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], server("https://169.254.169.254")))
		}, v1alpha1.ReasonInvalidKubeconfig, []string{"--allow-link-local-clusters"}},
		{"auth-provider", func(t *testing.T, name string) {
			register(t, name, kubeconfigFor(t, targets[0], func(c *clientcmdapi.Config) {
				for n := range c.AuthInfos {
					c.AuthInfos[n] = &clientcmdapi.AuthInfo{AuthProvider: &clientcmdapi.AuthProviderConfig{Name: "oidc", Config: map[string]string{"id-token": token}}}
				}
			}))
		}, v1alpha1.ReasonInvalidKubeconfig, []string{"auth-provider"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			tc.setup(t, tc.name)
			defer deleteAndWait(t, tc.name)
			g.Eventually(func(g Gomega) {
				mc := getCluster(g, tc.name)
				expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, tc.reason)
				expectCondition(g, mc, v1alpha1.ConnectedCondition, metav1.ConditionFalse, tc.reason)
				for _, m := range tc.message {
					g.Expect(conditions.GetMessage(mc, v1alpha1.ReadyCondition)).To(ContainSubstring(m))
				}
				// Only an unreachable cluster may come back by itself; everything
				// else here needs a person, and kstatus (Flux) fails fast on it.
				want := kstatus.FailedStatus
				if tc.reason == v1alpha1.ReasonUnreachable {
					want = kstatus.InProgressStatus
				}
				expectKstatus(g, mc, want)
			}, timeout, 100*time.Millisecond).Should(Succeed())
			// The state is stable: no write storm while the problem lasts. The patch
			// helper writes metadata, conditions and the rest of status in separate
			// requests, so let one reconcile finish before watching for more writes.
			expectQuiet(t, tc.name, 2*time.Second)
			mc := getCluster(g, tc.name)
			g.Expect(mc.Status.APIEndpoint).NotTo(ContainSubstring(token))
			for _, c := range mc.Status.Conditions {
				g.Expect(c.Message).NotTo(ContainSubstring(token))
			}
		})
	}
	t.Run("insecure-skip-tls-verify", func(t *testing.T) {
		// Accepted, and shown as a Warning condition and event.
		g := NewWithT(t)
		register(t, "insecure-tls", kubeconfigFor(t, targets[0], func(c *clientcmdapi.Config) {
			for name := range c.Clusters {
				c.Clusters[name].CertificateAuthorityData = nil
				c.Clusters[name].InsecureSkipTLSVerify = true
			}
		}))
		defer deleteAndWait(t, "insecure-tls")
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "insecure-tls")
			expectCondition(g, mc, v1alpha1.ConnectedCondition, metav1.ConditionTrue, "")
			expectCondition(g, mc, v1alpha1.WarningCondition, metav1.ConditionTrue, "InsecureSkipTLSVerify")
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Eventually(func(g Gomega) { g.Expect(eventReasons(g, "insecure-tls")).To(ContainElement("InsecureSkipTLSVerify")) },
			timeout, 100*time.Millisecond).Should(Succeed())
	})
	// No Secret content in any event.
	var evs eventsv1.EventList
	g := NewWithT(t)
	g.Expect(hubc.List(context.Background(), &evs)).To(Succeed())
	g.Expect(evs.Items).NotTo(BeEmpty())
	for _, e := range evs.Items {
		g.Expect(e.Note).NotTo(ContainSubstring(token))
		g.Expect(strings.Contains(e.Note, "BEGIN CERTIFICATE")).To(BeFalse())
	}
}

// TestOutageAndRecovery stops one target's API server: its cluster goes Connected
// False and comes back by itself, while the other target stays connected throughout.
func TestOutageAndRecovery(t *testing.T) {
	g := NewWithT(t)
	register(t, "steady", targets[0].Kubeconfig())
	register(t, "flaky", targets[1].Kubeconfig())
	defer deleteAndWait(t, "steady")
	defer deleteAndWait(t, "flaky")
	for _, name := range []string{"steady", "flaky"} {
		g.Eventually(func(g Gomega) {
			expectCondition(g, getCluster(g, name), v1alpha1.ConnectedCondition, metav1.ConditionTrue, "")
		}, timeout, 100*time.Millisecond).Should(Succeed())
	}
	g.Expect(targets[1].StopAPIServer()).To(Succeed())
	stopped := time.Now()
	g.Eventually(func(g Gomega) {
		mc := getCluster(g, "flaky")
		expectCondition(g, mc, v1alpha1.ConnectedCondition, metav1.ConditionFalse, v1alpha1.ReasonUnreachable)
		expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonUnreachable)
		g.Expect(conditions.GetMessage(mc, v1alpha1.ReadyCondition)).To(ContainSubstring("cannot reach " + strings.TrimSuffix(targets[1].Endpoint(), "/")))
	}, timeout, 100*time.Millisecond).Should(Succeed())
	t.Logf("outage noticed after %s", time.Since(stopped).Round(time.Millisecond))
	expectCondition(g, getCluster(g, "steady"), v1alpha1.ConnectedCondition, metav1.ConditionTrue, "")

	g.Expect(targets[1].RestartAPIServer()).To(Succeed())
	g.Eventually(func(g Gomega) {
		mc := getCluster(g, "flaky")
		expectCondition(g, mc, v1alpha1.ConnectedCondition, metav1.ConditionTrue, v1alpha1.ReasonConnected)
		expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
	}, timeout, 100*time.Millisecond).Should(Succeed())
	expectCondition(g, getCluster(g, "steady"), v1alpha1.ConnectedCondition, metav1.ConditionTrue, "")
}

// TestCredentialRotation replaces a rejected kubeconfig with a good one in the same
// Secret; the connection is rebuilt and the cluster becomes Ready.
func TestCredentialRotation(t *testing.T) {
	g := NewWithT(t)
	register(t, "rotated", kubeconfigFor(t, targets[0], func(c *clientcmdapi.Config) {
		for name := range c.AuthInfos {
			c.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: "expired"}
		}
	}))
	defer deleteAndWait(t, "rotated")
	g.Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, "rotated"), v1alpha1.ConnectedCondition, metav1.ConditionFalse, v1alpha1.ReasonUnauthorized)
	}, timeout, 100*time.Millisecond).Should(Succeed())
	putSecret(t, "rotated-kubeconfig", map[string][]byte{"value": targets[0].Kubeconfig()})
	g.Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, "rotated"), v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
	}, timeout, 100*time.Millisecond).Should(Succeed())
}

// TestPaused: a paused cluster is left alone and says so.
func TestPaused(t *testing.T) {
	register(t, "paused", targets[0].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Spec.Paused = true })
	defer deleteAndWait(t, "paused")
	setPaused := func(g Gomega, p bool) {
		mc := getCluster(g, "paused")
		base := mc.DeepCopy()
		mc.Spec.Paused = p
		g.Expect(hubc.Patch(context.Background(), mc, client.MergeFrom(base))).To(Succeed())
	}

	t.Run("a paused cluster is never connected, and says so", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "paused")
			expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonPaused)
			g.Expect(conditions.Has(mc, v1alpha1.ConnectedCondition)).To(BeFalse())
			g.Expect(mc.Status.ObservedGeneration).To(Equal(mc.Generation))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// The pause has been reconciled: no connection is made while it lasts.
		g.Consistently(func(g Gomega) {
			g.Expect(rc.Get("paused")).To(BeNil(), "a paused cluster has no connection")
			g.Expect(conditions.Has(getCluster(g, "paused"), v1alpha1.ConnectedCondition)).To(BeFalse())
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("resumed, it connects", func(t *testing.T) {
		setPaused(NewWithT(t), false)
		readyCluster(t, "paused")
	})

	t.Run("paused again, it drops the connection and says so", func(t *testing.T) {
		g := NewWithT(t)
		setPaused(g, true)
		g.Eventually(func(g Gomega) {
			mc := getCluster(g, "paused")
			expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonPaused)
			expectCondition(g, mc, v1alpha1.ConnectedCondition, metav1.ConditionUnknown, v1alpha1.ReasonPaused)
			g.Expect(rc.Get("paused")).To(BeNil())
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// ...and does not reconnect while paused.
		g.Consistently(func(g Gomega) {
			g.Expect(rc.Get("paused")).To(BeNil(), "a paused cluster has no connection")
		}, time.Second, 100*time.Millisecond).Should(Succeed())
	})
}

// ownedInTarget lists what Drover left in a target.
func ownedInTarget(g Gomega, c client.Client) []string {
	var out []string
	sel := client.MatchingLabels{"app.kubernetes.io/managed-by": "drover"}
	var deps appsv1.DeploymentList
	g.Expect(c.List(context.Background(), &deps, sel)).To(Succeed())
	for _, d := range deps.Items {
		out = append(out, "Deployment "+d.Name)
	}
	var crs rbacv1.ClusterRoleList
	g.Expect(c.List(context.Background(), &crs, sel)).To(Succeed())
	for _, r := range crs.Items {
		out = append(out, "ClusterRole "+r.Name)
	}
	var crbs rbacv1.ClusterRoleBindingList
	g.Expect(c.List(context.Background(), &crbs, sel)).To(Succeed())
	for _, r := range crbs.Items {
		out = append(out, "ClusterRoleBinding "+r.Name)
	}
	return out
}

// TestDeletion covers the three ways a ManagedCluster goes: Delete cleans the target,
// Orphan leaves it, and an unreachable target is given up on after the timeout.
func TestDeletion(t *testing.T) {
	tc := targetClient(t, targets[1])
	ready := func(g Gomega, name string) {
		g.Eventually(func(g Gomega) {
			expectCondition(g, getCluster(g, name), v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
		}, timeout, 100*time.Millisecond).Should(Succeed())
	}
	t.Run("orphan", func(t *testing.T) {
		g := NewWithT(t)
		register(t, "orphaned", targets[1].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Spec.DeletionPolicy = v1alpha1.DeletionPolicyOrphan })
		ready(g, "orphaned")
		deleteAndWait(t, "orphaned")
		g.Expect(ownedInTarget(g, tc)).To(ContainElements("Deployment drover-agent", "ClusterRole drover:agent"))
	})
	t.Run("delete", func(t *testing.T) {
		g := NewWithT(t)
		register(t, "deleted", targets[1].Kubeconfig())
		ready(g, "deleted")
		g.Expect(ownedInTarget(g, tc)).NotTo(BeEmpty())
		deleteAndWait(t, "deleted")
		g.Expect(ownedInTarget(g, tc)).To(BeEmpty())
		var ns corev1.Namespace
		err := tc.Get(context.Background(), client.ObjectKey{Name: controllers.AgentNamespace}, &ns)
		g.Expect(apierrors.IsNotFound(err) || !ns.DeletionTimestamp.IsZero()).To(BeTrue(), "agent namespace still there")
	})
	t.Run("with its secret", func(t *testing.T) {
		// kubectl delete -f, or a GitOps prune, deletes the Secret with the cluster:
		// cleanup still happens, through the last kubeconfig the cluster used.
		g := NewWithT(t)
		register(t, "pruned", targets[1].Kubeconfig())
		ready(g, "pruned")
		g.Expect(ownedInTarget(g, tc)).NotTo(BeEmpty())
		g.Expect(hubc.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "pruned-kubeconfig"}})).To(Succeed())
		deleteAndWait(t, "pruned")
		g.Expect(ownedInTarget(g, tc)).To(BeEmpty())
		var evs eventsv1.EventList
		g.Expect(hubc.List(context.Background(), &evs)).To(Succeed())
		for _, e := range evs.Items {
			if e.Regarding.Name == "pruned" {
				g.Expect(e.Reason).NotTo(Equal("CleanupAbandoned"))
			}
		}
	})
	t.Run("never reached", func(t *testing.T) {
		// Nothing was ever written into the target, so there is nothing to clean
		// up: no finalizer, and deletion completes at once.
		g := NewWithT(t)
		register(t, "never", kubeconfigFor(t, targets[1], func(c *clientcmdapi.Config) {
			for name := range c.Clusters {
				c.Clusters[name].Server = "https://127.0.0.1:1"
			}
		}))
		g.Eventually(func(g Gomega) {
			expectCondition(g, getCluster(g, "never"), v1alpha1.ConnectedCondition, metav1.ConditionFalse, v1alpha1.ReasonUnreachable)
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Expect(getCluster(g, "never").Finalizers).To(BeEmpty())
		start := time.Now()
		deleteAndWait(t, "never")
		g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second), "deleting a never-reached cluster must not wait")
		g.Expect(eventReasons(g, "never")).NotTo(ContainElement("CleanupAbandoned"))
	})
	t.Run("unreachable after contact", func(t *testing.T) {
		// Reached once (so the agent was installed), then unreachable: deletion
		// waits out the deletion timeout, then completes and says what it left.
		g := NewWithT(t)
		register(t, "gone", targets[1].Kubeconfig())
		ready(g, "gone")
		g.Expect(getCluster(g, "gone").Finalizers).To(ContainElement(controllers.ManagedClusterFinalizer))
		putSecret(t, "gone-kubeconfig", map[string][]byte{"value": kubeconfigFor(t, targets[1], func(c *clientcmdapi.Config) {
			for name := range c.Clusters {
				c.Clusters[name].Server = "https://127.0.0.1:1"
			}
		})})
		g.Eventually(func(g Gomega) {
			expectCondition(g, getCluster(g, "gone"), v1alpha1.ConnectedCondition, metav1.ConditionFalse, v1alpha1.ReasonUnreachable)
		}, timeout, 100*time.Millisecond).Should(Succeed())
		start := time.Now()
		deleteAndWait(t, "gone")
		t.Logf("deletion of an unreachable cluster completed after %s", time.Since(start).Round(time.Millisecond))
		var evs eventsv1.EventList
		g.Expect(hubc.List(context.Background(), &evs)).To(Succeed())
		found := false
		for _, e := range evs.Items {
			if e.Regarding.Name == "gone" && e.Reason == "CleanupAbandoned" {
				found = true
				g.Expect(e.Type).To(Equal(corev1.EventTypeWarning))
				g.Expect(e.Note).To(ContainSubstring("left behind"))
			}
		}
		g.Expect(found).To(BeTrue(), "no CleanupAbandoned event")
		// What the deleted cluster left behind is cleaned by hand in this test, so
		// that the next test starts from an empty target.
		cleanTarget(t, tc)
	})
}

func eventReasons(g Gomega, regarding string) []string {
	var evs eventsv1.EventList
	g.Expect(hubc.List(context.Background(), &evs)).To(Succeed())
	var out []string
	for _, e := range evs.Items {
		if e.Regarding.Name == regarding {
			out = append(out, e.Reason)
		}
	}
	return out
}

// cleanTarget removes what a test left in a target outside any ManagedCluster: the
// agent's namespace and Drover's cluster-scoped objects.
func cleanTarget(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	sel := client.MatchingLabels{"app.kubernetes.io/managed-by": "drover"}
	for _, o := range []client.Object{&rbacv1.ClusterRole{}, &rbacv1.ClusterRoleBinding{}} {
		if err := c.DeleteAllOf(ctx, o, sel); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllers.AgentNamespace}}); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
}
