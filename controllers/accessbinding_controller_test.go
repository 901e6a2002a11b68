package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// can asks a target's own authorizer, as `kubectl auth can-i --as` does.
func can(g Gomega, c client.Client, user, verb, group, resource, namespace string) bool {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Group: group, Resource: resource, Namespace: namespace,
		},
	}}
	g.Expect(c.Create(context.Background(), sar)).To(Succeed())
	return sar.Status.Allowed
}

// builtinTemplates creates the RoleTemplates shipped in config/roletemplates.
func builtinTemplates(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "config", "roletemplates", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no built-in RoleTemplates: %v", err)
	}
	var names []string
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rt v1alpha1.RoleTemplate
		if err := yaml.Unmarshal(b, &rt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		create(t, &rt)
		names = append(names, rt.Name)
	}
	return names
}

// create creates a hub object and deletes it when the test ends.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := hubc.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
	t.Cleanup(func() { _ = client.IgnoreNotFound(hubc.Delete(context.Background(), obj)) })
}

func binding(name string, role v1alpha1.RoleRef, mutate func(*v1alpha1.AccessBinding), subjects ...v1alpha1.Subject) *v1alpha1.AccessBinding {
	if len(subjects) == 0 {
		subjects = []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice@example.com"}}
	}
	b := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{Subjects: subjects, RoleRef: role}}
	mutate(b)
	return b
}

func getBinding(g Gomega, name string) *v1alpha1.AccessBinding {
	b := &v1alpha1.AccessBinding{}
	g.Expect(hubc.Get(context.Background(), client.ObjectKey{Name: name}, b)).To(Succeed())
	return b
}

func readyCluster(t *testing.T, name string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		expectCondition(g, getCluster(g, name), v1alpha1.ReadyCondition, metav1.ConditionTrue, "")
	}, timeout, 100*time.Millisecond).Should(Succeed())
}

func setLabel(t *testing.T, cluster, key, value string) {
	t.Helper()
	g := NewWithT(t)
	mc := getCluster(g, cluster)
	base := mc.DeepCopy()
	if value == "" {
		delete(mc.Labels, key)
	} else {
		mc.Labels[key] = value
	}
	g.Expect(hubc.Patch(context.Background(), mc, client.MergeFrom(base))).To(Succeed())
}

// TestClusterScopedBinding grants a RoleTemplate cluster-wide by label, and follows it
// through label changes, drift in the targets, a template edit and revocation, each
// checked with the targets' own authorizers.
func TestClusterScopedBinding(t *testing.T) {
	ctx := context.Background()
	ta, tb := targetClient(t, targets[0]), targetClient(t, targets[1])
	builtinTemplates(t)
	register(t, "rbac-a", targets[0].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Labels["env"] = "prod" })
	register(t, "rbac-b", targets[1].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Labels["env"] = "dev" })
	defer deleteAndWait(t, "rbac-a")
	defer deleteAndWait(t, "rbac-b")
	// A phase that fails while target b is stopped must not leave it stopped for the
	// phases and tests after it (this runs before the deletions above).
	stopped := false
	defer func() {
		if stopped {
			if err := targets[1].RestartAPIServer(); err != nil {
				t.Error(err)
			}
		}
	}()
	readyCluster(t, "rbac-a")
	readyCluster(t, "rbac-b")

	// An object someone else made is never touched, even if it looks like Drover's.
	foreign := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover:not-ours"}}
	NewWithT(t).Expect(tb.Create(ctx, foreign)).To(Succeed())
	defer func() { _ = tb.Delete(ctx, foreign) }()

	reader := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "secret-reader"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextCluster,
		Rules:   []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}}},
	}}
	create(t, reader)
	ab := binding("prod-secret-readers", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "secret-reader"}, func(b *v1alpha1.AccessBinding) {
		b.Spec.Clusters = &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}
	})
	create(t, ab)

	t.Run("granted where selected, and nowhere else", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, ta, "alice@example.com", "list", "", "secrets", "")).To(BeTrue())
		}, timeout, 50*time.Millisecond).Should(Succeed())
		g.Eventually(func(g Gomega) {
			b := getBinding(g, ab.Name)
			expectIntentReady(g, b, metav1.ConditionTrue, "")
			g.Expect(b.Status.Synced).To(Equal("1/1"))
			g.Expect(b.Status.ObservedGeneration).To(Equal(b.Generation))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// The binding is synced: what it does not grant stays ungranted.
		g.Consistently(func(g Gomega) {
			g.Expect(can(g, tb, "alice@example.com", "list", "", "secrets", "")).To(BeFalse(), "granted in an unselected cluster")
			g.Expect(can(g, ta, "alice@example.com", "delete", "", "secrets", "")).To(BeFalse(), "granted a verb the template lacks")
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
		var crb rbacv1.ClusterRoleBinding
		g.Expect(ta.Get(ctx, client.ObjectKey{Name: "drover:prod-secret-readers"}, &crb)).To(Succeed())
		g.Expect(crb.Labels).To(HaveKeyWithValue(render.ManagedByLabel, "drover"))
		g.Expect(crb.Labels).To(HaveKeyWithValue(render.AccessBindingLabel, ab.Name))
		g.Expect(crb.RoleRef.Name).To(Equal("drover:secret-reader"))
	})

	t.Run("every template is installed in every cluster, and says so", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			rt := &v1alpha1.RoleTemplate{}
			g.Expect(hubc.Get(ctx, client.ObjectKey{Name: "secret-reader"}, rt)).To(Succeed())
			g.Expect(rt.Status.Installed).To(Equal("2/2"))
			expectIntentReady(g, rt, metav1.ConditionTrue, "")
			expectCondition(g, getCluster(g, "rbac-a"), v1alpha1.SyncedCondition, metav1.ConditionTrue, v1alpha1.ReasonSucceeded)
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Expect(tb.Get(ctx, client.ObjectKey{Name: "drover:project-member"}, &rbacv1.ClusterRole{})).To(Succeed())
	})

	t.Run("an idle fleet writes nothing", func(t *testing.T) {
		expectQuiet(t, "rbac-a", 2*time.Second)
		expectBindingQuiet(t, ab.Name, 2*time.Second)
	})

	t.Run("label change moves the binding", func(t *testing.T) {
		// Labels drive selection: b joins, a leaves.
		g := NewWithT(t)
		setLabel(t, "rbac-b", "env", "prod")
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, tb, "alice@example.com", "list", "", "secrets", "")).To(BeTrue())
			g.Expect(getBinding(g, ab.Name).Status.Synced).To(Equal("2/2"))
		}, timeout, 50*time.Millisecond).Should(Succeed())
		setLabel(t, "rbac-a", "env", "")
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, ta, "alice@example.com", "list", "", "secrets", "")).To(BeFalse())
			g.Expect(getBinding(g, ab.Name).Status.Synced).To(Equal("1/1"))
			err := ta.Get(ctx, client.ObjectKey{Name: "drover:prod-secret-readers"}, &rbacv1.ClusterRoleBinding{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the binding is still in the cluster that left: %v", err)
		}, timeout, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("drift is repaired", func(t *testing.T) {
		// A deleted binding and an edited role come back at once.
		g := NewWithT(t)
		g.Expect(tb.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:prod-secret-readers"}})).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, tb, "alice@example.com", "list", "", "secrets", "")).To(BeTrue())
		}, timeout, 50*time.Millisecond).Should(Succeed())
		var role rbacv1.ClusterRole
		g.Expect(tb.Get(ctx, client.ObjectKey{Name: "drover:secret-reader"}, &role)).To(Succeed())
		role.Rules = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}
		g.Expect(tb.Update(ctx, &role)).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(tb.Get(ctx, client.ObjectKey{Name: "drover:secret-reader"}, &role)).To(Succeed())
			g.Expect(role.Rules).To(HaveLen(1))
			g.Expect(role.Rules[0].Resources).To(Equal([]string{"secrets"}))
			g.Expect(can(g, tb, "alice@example.com", "get", "", "secrets", "")).To(BeTrue())
		}, timeout, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("a template edit reaches every target", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func() error {
			rt := &v1alpha1.RoleTemplate{}
			g.Expect(hubc.Get(ctx, client.ObjectKey{Name: "secret-reader"}, rt)).To(Succeed())
			rt.Spec.Rules[0].Verbs = append(rt.Spec.Rules[0].Verbs, "watch")
			return hubc.Update(ctx, rt)
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, tb, "alice@example.com", "watch", "", "secrets", "")).To(BeTrue())
		}, timeout, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("a disconnected cluster is reported, and does not hold Ready back", func(t *testing.T) {
		// A Flux health check must not time out because one cluster is down.
		g := NewWithT(t)
		g.Expect(targets[1].StopAPIServer()).To(Succeed())
		stopped = true
		g.Eventually(func(g Gomega) {
			b := getBinding(g, ab.Name)
			g.Expect(b.Status.Synced).To(Equal("0/1"))
			g.Expect(b.Status.Failures).To(HaveLen(1))
			g.Expect(b.Status.Failures[0].Cluster).To(Equal("rbac-b"))
			g.Expect(b.Status.Failures[0].Reason).To(Equal(v1alpha1.ReasonDisconnected))
			expectIntentReady(g, b, metav1.ConditionTrue, v1alpha1.ReasonNoClustersConnected)
			g.Expect(conditions.GetMessage(b, v1alpha1.ReadyCondition)).To(ContainSubstring("rbac-b: Disconnected"))
			expectKstatus(g, b, kstatus.CurrentStatus)
			// Templates count the clusters that are connected too.
			rt := &v1alpha1.RoleTemplate{}
			g.Expect(hubc.Get(ctx, client.ObjectKey{Name: "secret-reader"}, rt)).To(Succeed())
			g.Expect(rt.Status.Installed).To(Equal("1/2"))
			expectIntentReady(g, rt, metav1.ConditionTrue, v1alpha1.ReasonSucceeded)
			expectKstatus(g, rt, kstatus.CurrentStatus)
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("revocation completes while the cluster is away, which is cleaned when it returns", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(hubc.Delete(ctx, ab)).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(hubc.Get(ctx, client.ObjectKeyFromObject(ab), &v1alpha1.AccessBinding{}))
		}, timeout, 100*time.Millisecond).Should(BeTrue())
		if stopped {
			g.Expect(targets[1].RestartAPIServer()).To(Succeed())
			stopped = false
		}
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, tb, "alice@example.com", "list", "", "secrets", "")).To(BeFalse())
			err := tb.Get(ctx, client.ObjectKey{Name: "drover:prod-secret-readers"}, &rbacv1.ClusterRoleBinding{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Expect(tb.Get(ctx, client.ObjectKey{Name: "drover:not-ours"}, &rbacv1.ClusterRole{})).To(Succeed())
	})

	t.Run("deleting a template removes its ClusterRole everywhere", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(hubc.Delete(ctx, reader)).To(Succeed())
		g.Eventually(func(g Gomega) {
			err := tb.Get(ctx, client.ObjectKey{Name: "drover:secret-reader"}, &rbacv1.ClusterRole{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// Drover's ClusterRoles were pruned; the foreign one was not.
		g.Expect(tb.Get(ctx, client.ObjectKey{Name: "drover:not-ours"}, &rbacv1.ClusterRole{})).To(Succeed())
	})
}

// TestProjectScopedBinding lands a binding only in the project's namespaces on the
// clusters the project is placed on, and follows the project's namespace list.
func TestProjectScopedBinding(t *testing.T) {
	ctx := context.Background()
	ta, tb := targetClient(t, targets[0]), targetClient(t, targets[1])
	builtinTemplates(t)
	register(t, "proj-a", targets[0].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Labels["tier"] = "apps" })
	register(t, "proj-b", targets[1].Kubeconfig())
	defer deleteAndWait(t, "proj-a")
	defer deleteAndWait(t, "proj-b")
	readyCluster(t, "proj-a")
	readyCluster(t, "proj-b")
	NewWithT(t).Expect(ta.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "outside"}})).To(Succeed())
	defer func() { _ = ta.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "outside"}}) }()

	proj := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters:                v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "apps"}}},
		Namespaces:              []v1alpha1.ProjectNamespace{{Name: "shop-api"}, {Name: "shop-db"}},
		NamespaceDeletionPolicy: v1alpha1.NamespaceDelete,
	}}
	create(t, proj)
	ab := binding("shop-devs", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "project-member"}, func(b *v1alpha1.AccessBinding) {
		b.Spec.Project = "shop"
	}, v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "shop-devs"})
	create(t, ab)

	canAs := func(g Gomega, c client.Client, verb, resource, ns string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "bob", Groups: []string{"shop-devs"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: "apps", Resource: resource, Namespace: ns},
		}}
		g.Expect(c.Create(ctx, sar)).To(Succeed())
		return sar.Status.Allowed
	}

	t.Run("granted in the project's namespaces only", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			g.Expect(canAs(g, ta, "create", "deployments", "shop-api")).To(BeTrue())
			g.Expect(canAs(g, ta, "create", "deployments", "shop-db")).To(BeTrue())
		}, timeout, 50*time.Millisecond).Should(Succeed())
		g.Eventually(func(g Gomega) {
			b := getBinding(g, ab.Name)
			g.Expect(b.Status.Synced).To(Equal("1/1"))
			expectIntentReady(g, b, metav1.ConditionTrue, "")
			g.Expect(b.Status.ObservedGeneration).To(Equal(b.Generation))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// The binding is synced: outside the project's namespaces and clusters,
		// nothing is granted.
		g.Consistently(func(g Gomega) {
			g.Expect(canAs(g, ta, "create", "deployments", "outside")).To(BeFalse(), "granted outside the project")
			g.Expect(canAs(g, ta, "create", "deployments", "")).To(BeFalse(), "granted cluster-wide")
			g.Expect(canAs(g, tb, "create", "deployments", "shop-api")).To(BeFalse(), "granted in a cluster the project is not placed on")
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
		// project-member inherits read-only: flattened into one ClusterRole.
		g.Expect(canAs(g, ta, "list", "replicasets", "shop-db")).To(BeTrue())
		var rb rbacv1.RoleBinding
		g.Expect(ta.Get(ctx, client.ObjectKey{Namespace: "shop-api", Name: "drover:shop-devs"}, &rb)).To(Succeed())
		g.Expect(rb.Labels).To(HaveKeyWithValue(render.ProjectLabel, "shop"))
	})

	t.Run("the binding leaves a namespace the project drops", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, proj.Name, func(p *v1alpha1.ClusterProject) { p.Spec.Namespaces = p.Spec.Namespaces[:1] })
		g.Eventually(func(g Gomega) {
			g.Expect(canAs(g, ta, "create", "deployments", "shop-db")).To(BeFalse())
		}, timeout, 50*time.Millisecond).Should(Succeed())
		g.Expect(canAs(g, ta, "create", "deployments", "shop-api")).To(BeTrue())
	})
}

// TestBindingProblems: what the schema cannot see is reported, never looped on.
func TestBindingProblems(t *testing.T) {
	ctx := context.Background()
	builtinTemplates(t)
	register(t, "problems", targets[0].Kubeconfig())
	defer deleteAndWait(t, "problems")
	readyCluster(t, "problems")
	ta := targetClient(t, targets[0])
	all := func(b *v1alpha1.AccessBinding) {
		b.Spec.Clusters = &v1alpha1.ClusterSelection{Names: []string{"problems"}}
	}

	// A Project template bound cluster-wide.
	create(t, binding("mismatch", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "project-member"}, all))
	// A template that does not exist.
	create(t, binding("missing", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "no-such-template"}, all))
	// An inheritance cycle.
	create(t, &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "cycle-a"}, Spec: v1alpha1.RoleTemplateSpec{Context: v1alpha1.ContextCluster, Inherits: []string{"cycle-b"}}})
	create(t, &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "cycle-b"}, Spec: v1alpha1.RoleTemplateSpec{Context: v1alpha1.ContextCluster, Inherits: []string{"cycle-a"}}})
	create(t, binding("cyclic", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "cycle-a"}, all))
	// A ClusterRole the target lacks, and one it has.
	create(t, binding("no-role", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "no-such-role"}, all))
	create(t, binding("viewers", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"}, all))
	// A typo in a cluster's name: a selection of nothing must not pass as Ready.
	create(t, binding("typo", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"}, func(b *v1alpha1.AccessBinding) {
		b.Spec.Clusters = &v1alpha1.ClusterSelection{Names: []string{"problemz"}}
	}))

	cases := []struct {
		name, reason, message string
		stalled               bool
	}{
		{"mismatch", render.ReasonContextMismatch, `RoleTemplate "project-member" has context Project, but this binding is cluster-scoped`, true},
		{"missing", render.ReasonTemplateNotFound, `spec.roleRef: RoleTemplate "no-such-template" does not exist`, true},
		{"cyclic", render.ReasonInheritanceCycle, "cycle-a -> cycle-b -> cycle-a", true},
		{"no-role", v1alpha1.ReasonClusterRoleNotFound, `ClusterRole "no-such-role" does not exist in this cluster`, true},
		{"typo", v1alpha1.ReasonClusterNotFound, `no ManagedCluster is named "problemz"; fix spec.clusters.names`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is reported and not looped on", func(t *testing.T) {
			g := NewWithT(t)
			g.Eventually(func(g Gomega) {
				b := getBinding(g, tc.name)
				expectIntentReady(g, b, metav1.ConditionFalse, tc.reason)
				g.Expect(conditions.GetMessage(b, v1alpha1.ReadyCondition)).To(ContainSubstring(tc.message))
				g.Expect(conditions.IsTrue(b, v1alpha1.StalledCondition)).To(Equal(tc.stalled))
				if tc.stalled {
					expectKstatus(g, b, kstatus.FailedStatus)
				}
			}, timeout, 100*time.Millisecond).Should(Succeed())
			expectBindingQuiet(t, tc.name, time.Second)
		})
	}

	t.Run("a missing ClusterRole is a per-cluster failure", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			g.Expect(getBinding(g, "no-role").Status.Failures).To(ConsistOf(HaveField("Reason", "ClusterRoleNotFound")))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("an inheritance cycle stalls the template", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			rt := &v1alpha1.RoleTemplate{}
			g.Expect(hubc.Get(ctx, client.ObjectKey{Name: "cycle-b"}, rt)).To(Succeed())
			g.Expect(conditions.IsTrue(rt, v1alpha1.StalledCondition)).To(BeTrue())
			g.Expect(conditions.GetReason(rt, v1alpha1.StalledCondition)).To(Equal(render.ReasonInheritanceCycle))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("the upstream view role works as a roleRef", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, ta, "alice@example.com", "list", "", "pods", "kube-system")).To(BeTrue())
			expectIntentReady(g, getBinding(g, "viewers"), metav1.ConditionTrue, "")
		}, timeout, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("changing roleRef replaces the binding in the target", func(t *testing.T) {
		// roleRef is immutable in RBAC.
		g := NewWithT(t)
		g.Eventually(func() error {
			b := getBinding(g, "viewers")
			b.Spec.RoleRef = v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "cluster-owner"}
			return hubc.Update(ctx, b)
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(can(g, ta, "alice@example.com", "delete", "apps", "deployments", "kube-system")).To(BeTrue())
			var crb rbacv1.ClusterRoleBinding
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "drover:viewers"}, &crb)).To(Succeed())
			g.Expect(crb.RoleRef.Name).To(Equal("drover:cluster-owner"))
			expectIntentReady(g, getBinding(g, "viewers"), metav1.ConditionTrue, "")
		}, timeout, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("nothing is rendered for the broken bindings", func(t *testing.T) {
		g := NewWithT(t)
		// The cluster has been synced with every binding: the target itself reported
		// no-role's missing ClusterRole at its current generation.
		g.Eventually(func(g Gomega) {
			b := getBinding(g, "no-role")
			g.Expect(b.Status.ObservedGeneration).To(Equal(b.Generation))
			g.Expect(b.Status.Failures).To(ConsistOf(HaveField("Reason", "ClusterRoleNotFound")))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Consistently(func(g Gomega) {
			for _, n := range []string{"mismatch", "missing", "cyclic"} {
				err := ta.Get(ctx, client.ObjectKey{Name: "drover:" + n}, &rbacv1.ClusterRoleBinding{})
				g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%s: %v", n, err)
			}
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	})
}

// expectKstatus checks what kstatus (Flux, `kubectl wait`) makes of obj.
func expectKstatus(g Gomega, obj client.Object, want kstatus.Status) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	g.Expect(err).NotTo(HaveOccurred())
	gvk, err := apiutil.GVKForObject(obj, hubc.Scheme())
	g.Expect(err).NotTo(HaveOccurred())
	uo := &unstructured.Unstructured{Object: u}
	uo.SetGroupVersionKind(gvk)
	res, err := kstatus.Compute(uo)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Status).To(Equal(want), "kstatus: %s", res.Message)
}

func expectIntentReady(g Gomega, obj conditions.Getter, status metav1.ConditionStatus, reason string) {
	c := conditions.Get(obj, v1alpha1.ReadyCondition)
	g.Expect(c).NotTo(BeNil(), "no Ready condition yet")
	g.Expect(c.Status).To(Equal(status), "Ready: %s %s", c.Reason, c.Message)
	if reason != "" {
		g.Expect(c.Reason).To(Equal(reason), "Ready: %s", c.Message)
	}
}

// expectUnwritten waits for a hub object to settle, then fails if it is written again
// within window: a reconcile that changes nothing must write nothing.
func expectUnwritten(t *testing.T, obj client.Object, window time.Duration) {
	t.Helper()
	g := NewWithT(t)
	key := client.ObjectKeyFromObject(obj)
	rv := func() string {
		o := obj.DeepCopyObject().(client.Object)
		g.Expect(hubc.Get(context.Background(), key, o)).To(Succeed())
		return o.GetResourceVersion()
	}
	var last string
	g.Eventually(func() bool {
		prev := last
		last = rv()
		return prev == last
	}, 10*time.Second, 500*time.Millisecond).Should(BeTrue(), "%s never settles", key.Name)
	g.Consistently(rv, window, 250*time.Millisecond).Should(Equal(last), "%s keeps being written while nothing changes", key.Name)
}

func expectBindingQuiet(t *testing.T, name string, window time.Duration) {
	t.Helper()
	expectUnwritten(t, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}}, window)
}
