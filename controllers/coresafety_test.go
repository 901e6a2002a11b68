package controllers_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/manager"
	"github.com/drover-io/drover/render"
)

// The core-safety tests: nothing Drover does destroys data it was not asked to
// destroy, and one hub or ManagedCluster never touches another's objects.

func project(name string, sel v1alpha1.ClusterSelection, mutate func(*v1alpha1.ClusterProject), namespaces ...string) *v1alpha1.ClusterProject {
	p := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterProjectSpec{Clusters: sel}}
	for _, n := range namespaces {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: n})
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func putConfigMap(t *testing.T, c client.Client, namespace, name string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: map[string]string{"data": "precious"}}
	if err := c.Create(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
}

// dataSurvives checks, for a while, that a namespace and a ConfigMap in it stay.
func dataSurvives(g Gomega, c client.Client, namespace, configMap string, d time.Duration) {
	g.Consistently(func(g Gomega) {
		var ns corev1.Namespace
		g.Expect(c.Get(context.Background(), client.ObjectKey{Name: namespace}, &ns)).To(Succeed())
		g.Expect(ns.DeletionTimestamp.IsZero()).To(BeTrue(), "namespace %s is being deleted", namespace)
		g.Expect(c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: configMap}, &corev1.ConfigMap{})).To(Succeed())
	}, d, 200*time.Millisecond).Should(Succeed())
}

func deleteNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	_ = client.IgnoreNotFound(c.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
}

// TestInvalidSelectorKeepsData: a project whose placement stops making sense keeps
// its namespaces and their data, and says so (Stalled), even with
// namespaceDeletionPolicy Delete.
func TestInvalidSelectorKeepsData(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	register(t, "safe-sel", targets[0].Kubeconfig())
	t.Cleanup(func() { deleteAndWait(t, "safe-sel") })
	readyCluster(t, "safe-sel")
	tc := targetClient(t, targets[0])

	p := project("keepme", v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "test"}}},
		func(p *v1alpha1.ClusterProject) { p.Spec.NamespaceDeletionPolicy = v1alpha1.NamespaceDelete }, "keep-data")
	create(t, p)
	t.Cleanup(func() { deleteNamespace(t, tc, "keep-data") })
	g.Eventually(func(g Gomega) {
		var ns corev1.Namespace
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "keep-data"}, &ns)).To(Succeed())
		g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "keepme"))
	}, timeout, 100*time.Millisecond).Should(Succeed())
	putConfigMap(t, tc, "keep-data", "data")

	t.Run("the schema rejects a lowercase operator", func(t *testing.T) {
		g := NewWithT(t)
		// A patch, so that no status write in between can make it a conflict.
		bad := getProject(g, "keepme")
		base := bad.DeepCopy()
		bad.Spec.Clusters.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: "in", Values: []string{"test"}}}}
		err := hubc.Patch(ctx, bad, client.MergeFrom(base))
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("operator must be one of In, NotIn, Exists, DoesNotExist"))
	})
	t.Run("a selector render cannot resolve keeps everything", func(t *testing.T) {
		g := NewWithT(t)
		// A label key the schema accepts but a selector cannot use.
		updateProject(t, "keepme", func(p *v1alpha1.ClusterProject) {
			p.Spec.Clusters.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"not a key!": "x"}}
		})
		g.Eventually(func(g Gomega) {
			p := getProject(g, "keepme")
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			expectIntentCondition(g, p.Status.Conditions, v1alpha1.StalledCondition, metav1.ConditionTrue, render.ReasonInvalidSelector)
			expectIntentCondition(g, p.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionFalse, render.ReasonInvalidSelector)
		}, timeout, 100*time.Millisecond).Should(Succeed())
		dataSurvives(g, tc, "keep-data", "data", 3*time.Second)
		var ns corev1.Namespace
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "keep-data"}, &ns)).To(Succeed())
		g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "keepme"), "the namespace must stay in the project as last applied")
	})
	t.Run("fixing it resumes", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "keepme", func(p *v1alpha1.ClusterProject) {
			p.Spec.Clusters.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"env": "test"}}
		})
		g.Eventually(func(g Gomega) {
			p := getProject(g, "keepme")
			expectIntentCondition(g, p.Status.Conditions, v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
			expectIntentCondition(g, p.Status.Conditions, v1alpha1.StalledCondition, metav1.ConditionFalse, "")
		}, timeout, 100*time.Millisecond).Should(Succeed())
		dataSurvives(g, tc, "keep-data", "data", time.Second)
	})
}

func expectIntentCondition(g Gomega, conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) {
	var c *metav1.Condition
	for i := range conds {
		if conds[i].Type == typ {
			c = &conds[i]
		}
	}
	g.Expect(c).NotTo(BeNil(), "no %s condition", typ)
	g.Expect(c.Status).To(Equal(status), "%s: %s %s", typ, c.Reason, c.Message)
	if reason != "" {
		g.Expect(c.Reason).To(Equal(reason), "%s: %s", typ, c.Message)
	}
}

// TestAdoptedNamespaceSurvives: a namespace Drover adopted is released, never
// deleted, when it leaves its project, even with namespaceDeletionPolicy Delete.
func TestAdoptedNamespaceSurvives(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	tc := targetClient(t, targets[0])
	g.Expect(tc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cert-stuff"}})).To(Succeed())
	t.Cleanup(func() { deleteNamespace(t, tc, "cert-stuff") })
	putConfigMap(t, tc, "cert-stuff", "ca")
	register(t, "safe-adopt", targets[0].Kubeconfig())
	t.Cleanup(func() { deleteAndWait(t, "safe-adopt") })
	readyCluster(t, "safe-adopt")

	p := project("adopter", v1alpha1.ClusterSelection{Names: []string{"safe-adopt"}}, func(p *v1alpha1.ClusterProject) {
		p.Spec.NamespaceDeletionPolicy = v1alpha1.NamespaceDelete
		p.Spec.Namespaces = []v1alpha1.ProjectNamespace{{Name: "cert-stuff", Adopt: true}, {Name: "adopter-own"}}
	})
	create(t, p)
	t.Cleanup(func() { deleteNamespace(t, tc, "adopter-own") })
	g.Eventually(func(g Gomega) {
		var ns corev1.Namespace
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "cert-stuff"}, &ns)).To(Succeed())
		g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "adopter"))
		g.Expect(ns.Annotations).To(HaveKeyWithValue(render.AdoptedAnnotation, "true"))
	}, timeout, 100*time.Millisecond).Should(Succeed())

	updateProject(t, "adopter", func(p *v1alpha1.ClusterProject) {
		p.Spec.Namespaces = []v1alpha1.ProjectNamespace{{Name: "adopter-own"}}
	})
	g.Eventually(func(g Gomega) {
		var ns corev1.Namespace
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "cert-stuff"}, &ns)).To(Succeed())
		g.Expect(ns.Labels).NotTo(HaveKey(render.ProjectLabel), "released")
		g.Expect(ns.Labels).NotTo(HaveKey(render.ManagedByLabel), "released")
	}, timeout, 100*time.Millisecond).Should(Succeed())
	dataSurvives(g, tc, "cert-stuff", "ca", 2*time.Second)

	// A namespace Drover created goes, as the project says.
	g.Expect(hubc.Delete(ctx, getProject(g, "adopter"))).To(Succeed())
	g.Eventually(func() bool {
		var ns corev1.Namespace
		err := tc.Get(ctx, client.ObjectKey{Name: "adopter-own"}, &ns)
		return apierrors.IsNotFound(err) || !ns.DeletionTimestamp.IsZero()
	}, timeout, 100*time.Millisecond).Should(BeTrue(), "a namespace Drover created goes under Delete")
	dataSurvives(g, tc, "cert-stuff", "ca", time.Second)
}

// TestDuplicateCluster: a second ManagedCluster for a target already managed is
// Stalled and writes nothing there, and deleting it removes nothing.
func TestDuplicateCluster(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	tc := targetClient(t, targets[0])
	register(t, "dup-first", targets[0].Kubeconfig())
	t.Cleanup(func() { deleteAndWait(t, "dup-first") })
	readyCluster(t, "dup-first")
	create(t, binding("dup-ops", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		func(b *v1alpha1.AccessBinding) {
			b.Spec.Clusters = &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}}
		}))
	var crb rbacv1.ClusterRoleBinding
	g.Eventually(func() error { return tc.Get(ctx, client.ObjectKey{Name: "drover:dup-ops"}, &crb) }, timeout, 100*time.Millisecond).Should(Succeed())
	first := getCluster(g, "dup-first")
	g.Expect(first.Status.ClusterID).NotTo(BeEmpty())

	register(t, "dup-second", targets[0].Kubeconfig())
	g.Eventually(func(g Gomega) {
		mc := getCluster(g, "dup-second")
		expectCondition(g, mc, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.ReasonDuplicateCluster)
		expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonDuplicateCluster)
		g.Expect(mc.Status.ClusterID).To(Equal(first.Status.ClusterID))
	}, timeout, 100*time.Millisecond).Should(Succeed())
	// It never wrote: no finalizer (added just before a first write), no object
	// carries its name, and the first cluster's binding is untouched.
	g.Consistently(func(g Gomega) {
		g.Expect(getCluster(g, "dup-second").Finalizers).To(BeEmpty())
		var list rbacv1.ClusterRoleBindingList
		g.Expect(tc.List(ctx, &list, client.MatchingLabels{render.ClusterLabel: "dup-second"})).To(Succeed())
		g.Expect(list.Items).To(BeEmpty())
		var cur rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:dup-ops"}, &cur)).To(Succeed())
		g.Expect(cur.UID).To(Equal(crb.UID))
		g.Expect(cur.ResourceVersion).To(Equal(crb.ResourceVersion))
	}, 3*time.Second, 200*time.Millisecond).Should(Succeed())
	deleteAndWait(t, "dup-second")
	g.Consistently(func(g Gomega) {
		var cur rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:dup-ops"}, &cur)).To(Succeed())
		g.Expect(cur.UID).To(Equal(crb.UID))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestTwoHubs: a second hub registering a target already managed by the first keeps
// the first hub's objects, reports the agent conflict, and its deletion removes only
// its own objects.
func TestTwoHubs(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	tc := targetClient(t, targets[0])
	register(t, "hub-a-view", targets[0].Kubeconfig())
	t.Cleanup(func() { deleteAndWait(t, "hub-a-view") })
	readyCluster(t, "hub-a-view")
	create(t, binding("hub-a-ops", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		func(b *v1alpha1.AccessBinding) {
			b.Spec.Clusters = &v1alpha1.ClusterSelection{Names: []string{"hub-a-view"}}
		}))
	var mine rbacv1.ClusterRoleBinding
	g.Eventually(func() error { return tc.Get(ctx, client.ObjectKey{Name: "drover:hub-a-ops"}, &mine) }, timeout, 100*time.Millisecond).Should(Succeed())
	sharedRole := func() *v1alpha1.RoleTemplate {
		return &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "two-hubs-role"}, Spec: v1alpha1.RoleTemplateSpec{
			Context: v1alpha1.ContextCluster, Rules: []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}}
	}
	create(t, sharedRole())
	g.Eventually(func() error {
		return tc.Get(ctx, client.ObjectKey{Name: "drover:two-hubs-role"}, &rbacv1.ClusterRole{})
	}, timeout, 100*time.Millisecond).Should(Succeed())

	other := startSecondHub(t, "hub-b")
	// Hub B has a template of the same name: its ClusterRole is hub A's, so hub B
	// must not bind anybody to it.
	g.Expect(other.Create(ctx, sharedRole())).To(Succeed())
	g.Expect(other.Create(ctx, binding("hub-b-shared", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "two-hubs-role"},
		func(b *v1alpha1.AccessBinding) {
			b.Spec.Clusters = &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}}
		}))).To(Succeed())
	ob := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "t0-kubeconfig"}, Data: map[string][]byte{"value": targets[0].Kubeconfig()}}
	g.Expect(other.Create(ctx, ob)).To(Succeed())
	g.Expect(other.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "t0"}, Spec: v1alpha1.ManagedClusterSpec{
		Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: "t0-kubeconfig"}}}})).To(Succeed())
	g.Expect(other.Create(ctx, binding("hub-b-ops", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		func(b *v1alpha1.AccessBinding) {
			b.Spec.Clusters = &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}}
		}))).To(Succeed())

	// Hub B applies its own binding, reports the agent conflict, and leaves hub A's
	// objects alone.
	g.Eventually(func(g Gomega) {
		var theirs rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:hub-b-ops"}, &theirs)).To(Succeed())
		g.Expect(theirs.Labels).To(HaveKeyWithValue(render.HubLabel, "hub-b"))
		mc := &v1alpha1.ManagedCluster{}
		g.Expect(other.Get(ctx, client.ObjectKey{Name: "t0"}, mc)).To(Succeed())
		expectCondition(g, mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonOwnedByAnotherHub)
	}, timeout, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		b := &v1alpha1.AccessBinding{}
		g.Expect(other.Get(ctx, client.ObjectKey{Name: "hub-b-shared"}, b)).To(Succeed())
		g.Expect(b.Status.Failures).To(ContainElement(HaveField("Reason", "Conflict")))
	}, timeout, 100*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) {
		var cur rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:hub-a-ops"}, &cur)).To(Succeed())
		g.Expect(cur.UID).To(Equal(mine.UID))
		g.Expect(cur.Labels[render.HubLabel]).NotTo(Equal("hub-b"))
		g.Expect(apierrors.IsNotFound(tc.Get(ctx, client.ObjectKey{Name: "drover:hub-b-shared"}, &rbacv1.ClusterRoleBinding{}))).
			To(BeTrue(), "hub B bound somebody to hub A's ClusterRole")
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	// Deleting the cluster on hub B removes hub B's objects only.
	g.Expect(other.Delete(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "t0"}})).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(other.Get(ctx, client.ObjectKey{Name: "t0"}, &v1alpha1.ManagedCluster{}))
	}, timeout, 100*time.Millisecond).Should(BeTrue())
	g.Expect(apierrors.IsNotFound(tc.Get(ctx, client.ObjectKey{Name: "drover:hub-b-ops"}, &rbacv1.ClusterRoleBinding{}))).To(BeTrue())
	var cur rbacv1.ClusterRoleBinding
	g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:hub-a-ops"}, &cur)).To(Succeed())
	g.Expect(cur.UID).To(Equal(mine.UID))
	g.Expect(tc.Get(ctx, client.ObjectKey{Namespace: controllers.AgentNamespace, Name: controllers.AgentName}, &corev1.ServiceAccount{})).To(Succeed(), "hub A's agent stays")
	readyCluster(t, "hub-a-view")
}

// startSecondHub starts another hub (API server, CRDs, manager with its own hub ID)
// for the length of the test and returns a client of it.
func startSecondHub(t *testing.T, id string) client.Client {
	t.Helper()
	cp, err := controlplane.Start(controlplane.Options{Name: id, CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	scheme, err := manager.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:      controllers.CacheOptions(namespace),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.HubID = id
	if _, err := controllers.SetupWithManager(ctx, mgr, opts); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second hub's manager: %v", err)
		}
	})
	return c
}

// TestDeadAgentIsQuiet: once an agent's death is reported, the hub writes nothing
// more for that cluster.
func TestDeadAgentIsQuiet(t *testing.T) {
	g := NewWithT(t)
	register(t, "dead-agent", targets[1].Kubeconfig())
	t.Cleanup(func() { deleteAndWait(t, "dead-agent") })
	stop := runAgent(t, targets[1], "dead-agent")
	g.Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, "dead-agent"), v1alpha1.AgentReadyCondition, metav1.ConditionTrue, "")
	}, timeout, 100*time.Millisecond).Should(Succeed())
	stop()
	g.Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, "dead-agent"), v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonLeaseExpired)
	}, timeout, 100*time.Millisecond).Should(Succeed())
	settled := getCluster(g, "dead-agent").ResourceVersion
	window := 20 * time.Second
	g.Consistently(func(g Gomega) {
		g.Expect(getCluster(g, "dead-agent").ResourceVersion).To(Equal(settled), "the hub wrote the ManagedCluster again")
	}, window, 500*time.Millisecond).Should(Succeed())
	t.Logf("no write to ManagedCluster dead-agent in %s after its agent was reported dead", window)
	// The agent comes back: the first renewal after the Lease went stale is noticed.
	runAgent(t, targets[1], "dead-agent")
	g.Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, "dead-agent"), v1alpha1.AgentReadyCondition, metav1.ConditionTrue, "")
	}, timeout, 100*time.Millisecond).Should(Succeed())
}

// runAgent runs the agent for cluster against target, as a process would, until the
// returned stop is called (or the test ends).
func runAgent(t *testing.T, target *controlplane.ControlPlane, cluster string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, target.Config, agent.Options{
			ClusterName: cluster, Namespace: controllers.AgentNamespace, LeaseName: controllers.AgentName,
			RenewInterval: 300 * time.Millisecond, LeaseDuration: 2 * time.Second, Version: "v0.0.0-test",
		})
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Logf("agent for %s stopped: %v", cluster, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestDuplicateTakesOver: when the ManagedCluster that managed a target goes (with
// deletionPolicy Orphan), the duplicate waiting behind it takes over at once.
func TestDuplicateTakesOver(t *testing.T) {
	g := NewWithT(t)
	register(t, "takeover-a", targets[1].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Spec.DeletionPolicy = v1alpha1.DeletionPolicyOrphan })
	readyCluster(t, "takeover-a")
	register(t, "takeover-b", targets[1].Kubeconfig())
	t.Cleanup(func() { deleteAndWait(t, "takeover-b") })
	g.Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, "takeover-b"), v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.ReasonDuplicateCluster)
	}, timeout, 100*time.Millisecond).Should(Succeed())
	deleteAndWait(t, "takeover-a")
	g.Eventually(func(g Gomega) {
		mc := getCluster(g, "takeover-b")
		expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
		expectCondition(g, mc, v1alpha1.SyncedCondition, metav1.ConditionTrue, "")
	}, timeout, 100*time.Millisecond).Should(Succeed())
	// The agent A left behind is B's now.
	var sa corev1.ServiceAccount
	g.Expect(targetClient(t, targets[1]).Get(context.Background(), client.ObjectKey{Namespace: controllers.AgentNamespace, Name: controllers.AgentName}, &sa)).To(Succeed())
	g.Expect(sa.Labels).To(HaveKeyWithValue(render.ClusterLabel, "takeover-b"))
}

// TestIdentityUnknown: credentials that reach the API server but cannot read
// namespace kube-system get a clear reason, and nothing is synced.
func TestIdentityUnknown(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	tc := targetClient(t, targets[0])
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "no-rights"}}
	g.Expect(client.IgnoreAlreadyExists(tc.Create(ctx, sa))).To(Succeed())
	tr := &authenticationv1.TokenRequest{}
	g.Expect(tc.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
	register(t, "no-identity", kubeconfigFor(t, targets[0], func(c *clientcmdapi.Config) {
		for n := range c.AuthInfos {
			c.AuthInfos[n] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
		}
	}))
	t.Cleanup(func() { deleteAndWait(t, "no-identity") })
	g.Eventually(func(g Gomega) {
		mc := getCluster(g, "no-identity")
		expectCondition(g, mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonIdentityUnknown)
		g.Expect(conditions.GetMessage(mc, v1alpha1.ReadyCondition)).To(ContainSubstring("get on namespaces"))
		g.Expect(conditions.GetMessage(mc, v1alpha1.ReadyCondition)).NotTo(ContainSubstring(tr.Status.Token))
		// The target refuses (403): a person must grant the rights.
		expectCondition(g, mc, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.ReasonIdentityUnknown)
		expectKstatus(g, mc, kstatus.FailedStatus)
	}, timeout, 100*time.Millisecond).Should(Succeed())
	g.Expect(getCluster(g, "no-identity").Finalizers).To(BeEmpty(), "nothing may be written before the cluster is identified")
}
