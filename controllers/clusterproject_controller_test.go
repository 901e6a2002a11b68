package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

func getProject(g Gomega, name string) *v1alpha1.ClusterProject {
	p := &v1alpha1.ClusterProject{}
	g.Expect(hubc.Get(context.Background(), client.ObjectKey{Name: name}, p)).To(Succeed())
	return p
}

func updateProject(t *testing.T, name string, mutate func(*v1alpha1.ClusterProject)) {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func() error {
		p := getProject(g, name)
		mutate(p)
		return hubc.Update(context.Background(), p)
	}, timeout, 100*time.Millisecond).Should(Succeed())
}

func quantity(s string) resource.Quantity { return resource.MustParse(s) }

// TestClusterProject follows one project through placement by selector and by name,
// its quota, limits and isolation policy, usage reported from the targets' quota
// status, adoption, a conflict with another project, quota overflow, release under
// Retain and Delete, and project-scoped access following its namespaces.
func TestClusterProject(t *testing.T) {
	ctx := context.Background()
	ta, tb := targetClient(t, targets[0]), targetClient(t, targets[1])
	builtinTemplates(t)
	register(t, "cp-a", targets[0].Kubeconfig(), func(mc *v1alpha1.ManagedCluster) { mc.Labels["tier"] = "web" })
	register(t, "cp-b", targets[1].Kubeconfig())
	defer deleteAndWait(t, "cp-a")
	defer deleteAndWait(t, "cp-b")
	readyCluster(t, "cp-a")
	readyCluster(t, "cp-b")
	// A namespace that exists before the project and is not Drover's.
	NewWithT(t).Expect(ta.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web-legacy", Labels: map[string]string{"owner": "someone"}}})).To(Succeed())

	proj := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters:              v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}},
		Namespaces:            []v1alpha1.ProjectNamespace{{Name: "web-api"}, {Name: "web-db", Labels: map[string]string{"data": "true"}, Annotations: map[string]string{"team": "db"}}},
		ResourceQuota:         &v1alpha1.QuotaSpec{Hard: v1alpha1.ResourceList{"requests.cpu": quantity("4")}},
		NamespaceDefaultQuota: &v1alpha1.QuotaSpec{Hard: v1alpha1.ResourceList{"requests.cpu": quantity("1"), "configmaps": quantity("10")}},
		ContainerDefaults:     &v1alpha1.ContainerDefaults{Default: v1alpha1.ResourceList{"cpu": quantity("500m")}, DefaultRequest: v1alpha1.ResourceList{"cpu": quantity("100m")}},
		NetworkIsolation:      true,
	}}
	create(t, proj)
	create(t, binding("web-devs", v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: "project-member"}, func(b *v1alpha1.AccessBinding) {
		b.Spec.Project = "web"
	}, v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "web-devs"}))
	canDeploy := func(g Gomega, c client.Client, ns string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "carol", Groups: []string{"web-devs"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "create", Group: "apps", Resource: "deployments", Namespace: ns},
		}}
		g.Expect(c.Create(ctx, sar)).To(Succeed())
		return sar.Status.Allowed
	}

	t.Run("placement by selector reaches cluster a only, with every per-namespace object", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			p := getProject(g, "web")
			expectIntentReady(g, p, metav1.ConditionTrue, "")
			g.Expect(p.Status.Synced).To(Equal("1/1"))
			g.Expect(p.Status.NamespaceCount).To(Equal(int32(2)))
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		var ns corev1.Namespace
		g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-db"}, &ns)).To(Succeed())
		g.Expect(ns.Labels).To(HaveKeyWithValue("data", "true"))
		g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "web"))
		g.Expect(ns.Annotations).To(HaveKeyWithValue("team", "db"))
		var rq corev1.ResourceQuota
		g.Expect(ta.Get(ctx, client.ObjectKey{Namespace: "web-api", Name: render.ProjectQuotaName}, &rq)).To(Succeed())
		g.Expect(rq.Spec.Hard.Cpu().IsZero()).To(BeTrue()) // only requests.cpu and configmaps
		g.Expect(rq.Spec.Hard).To(HaveKey(corev1.ResourceName("requests.cpu")))
		var lr corev1.LimitRange
		g.Expect(ta.Get(ctx, client.ObjectKey{Namespace: "web-db", Name: render.ProjectQuotaName}, &lr)).To(Succeed())
		g.Expect(lr.Spec.Limits[0].Default.Cpu().String()).To(Equal("500m"))
		var np networkingv1.NetworkPolicy
		g.Expect(ta.Get(ctx, client.ObjectKey{Namespace: "web-api", Name: render.IsolationPolicyName}, &np)).To(Succeed())
		g.Expect(np.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values).To(Equal([]string{"web-api", "web-db"}))
		g.Eventually(func(g Gomega) { g.Expect(canDeploy(g, ta, "web-api")).To(BeTrue()) }, timeout, 50*time.Millisecond).Should(Succeed())
		// The project is synced: cluster b, not placed, never gets its namespaces.
		g.Consistently(func(g Gomega) {
			err := tb.Get(ctx, client.ObjectKey{Name: "web-api"}, &corev1.Namespace{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "web-api in a cluster the project is not placed on: %v", err)
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("usage comes from the targets' quota status", func(t *testing.T) {
		// kube-controller-manager publishes kube-root-ca.crt in each namespace: one
		// ConfigMap each.
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			p := getProject(g, "web")
			g.Expect(p.Status.Clusters).To(HaveLen(1))
			used := p.Status.Clusters[0].Used["configmaps"]
			hard := p.Status.Clusters[0].Hard["configmaps"]
			g.Expect(used.String()).To(Equal("2"))
			g.Expect(hard.String()).To(Equal("20"))
		}, timeout, 200*time.Millisecond).Should(Succeed())
	})

	t.Run("a label dropped from the spec is removed from the namespace", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) { p.Spec.Namespaces[1].Labels = nil })
		g.Eventually(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-db"}, &ns)).To(Succeed())
			g.Expect(ns.Labels).NotTo(HaveKey("data"))
			g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "web"))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("placement by name adds cluster b, which gets everything", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) { p.Spec.Clusters.Names = []string{"cp-b"} })
		g.Eventually(func(g Gomega) {
			g.Expect(getProject(g, "web").Status.Synced).To(Equal("2/2"))
			g.Expect(canDeploy(g, tb, "web-db")).To(BeTrue())
		}, timeout, 100*time.Millisecond).Should(Succeed())
		expectProjectQuiet(t, "web", 2*time.Second)
	})

	t.Run("an existing namespace is not taken without adopt", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) {
			p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: "web-legacy"})
		})
		g.Eventually(func(g Gomega) {
			p := getProject(g, "web")
			// A person must act (set adopt: true): Stalled, so that tools fail fast.
			expectIntentReady(g, p, metav1.ConditionFalse, v1alpha1.ReasonConflict)
			g.Expect(conditions.GetMessage(p, v1alpha1.ReadyCondition)).To(ContainSubstring("Namespace web-legacy exists and is not managed by this Drover hub for this cluster; set adopt: true"))
			g.Expect(conditions.IsTrue(p, v1alpha1.StalledCondition)).To(BeTrue())
			expectKstatus(g, p, kstatus.FailedStatus)
			g.Expect(p.Status.Synced).To(Equal("1/2"))
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// The refusal is reported: it holds.
		g.Consistently(func(g Gomega) {
			g.Expect(canDeploy(g, ta, "web-legacy")).To(BeFalse(), "granted in a namespace that was not adopted")
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-legacy"}, &ns)).To(Succeed())
			g.Expect(ns.Labels).NotTo(HaveKey(render.ProjectLabel))
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("adopt takes the namespace, and the binding follows", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) { p.Spec.Namespaces[2].Adopt = true })
		g.Eventually(func(g Gomega) {
			g.Expect(canDeploy(g, ta, "web-legacy")).To(BeTrue())
			expectIntentReady(g, getProject(g, "web"), metav1.ConditionTrue, "")
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-legacy"}, &ns)).To(Succeed())
			g.Expect(ns.Labels).To(HaveKeyWithValue("owner", "someone"))
			g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "web"))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("another project never takes a namespace that belongs to this one", func(t *testing.T) {
		// Both say so; the other project's own namespace is released, not deleted,
		// when it goes (Retain).
		g := NewWithT(t)
		create(t, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "intruder"}, Spec: v1alpha1.ClusterProjectSpec{
			Clusters: v1alpha1.ClusterSelection{Names: []string{"cp-a"}}, Namespaces: []v1alpha1.ProjectNamespace{{Name: "web-api"}, {Name: "intruder-own"}},
		}})
		g.Eventually(func(g Gomega) {
			p := getProject(g, "intruder")
			expectIntentReady(g, p, metav1.ConditionFalse, "")
			g.Expect(conditions.GetMessage(p, v1alpha1.ReadyCondition)).To(ContainSubstring("namespace web-api belongs to project web"))
			g.Expect(conditions.GetMessage(getProject(g, "web"), v1alpha1.ReadyCondition)).To(ContainSubstring("namespace web-api is also claimed by project intruder"))
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "intruder-own"}, &corev1.Namespace{})).To(Succeed())
		}, timeout, 100*time.Millisecond).Should(Succeed())
		g.Consistently(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-api"}, &ns)).To(Succeed())
			g.Expect(ns.Labels).To(HaveKeyWithValue(render.ProjectLabel, "web"))
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
		g.Expect(hubc.Delete(ctx, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "intruder"}})).To(Succeed())
		g.Eventually(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "intruder-own"}, &ns)).To(Succeed())
			g.Expect(ns.Labels).NotTo(HaveKey(render.ProjectLabel), "intruder-own is released, not deleted (Retain)")
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("namespace quotas that add up past the project quota stall the project", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) {
			p.Spec.NamespaceDefaultQuota.Hard["requests.cpu"] = quantity("2")
		})
		g.Eventually(func(g Gomega) {
			p := getProject(g, "web")
			expectIntentReady(g, p, metav1.ConditionFalse, render.ReasonQuotaOverflow)
			g.Expect(conditions.IsTrue(p, v1alpha1.StalledCondition)).To(BeTrue())
			g.Expect(conditions.GetMessage(p, v1alpha1.ReadyCondition)).To(ContainSubstring("requests.cpu: 3 namespaces x 2 = 6 > 4"))
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("turning isolation off removes the policy", func(t *testing.T) {
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) {
			p.Spec.NamespaceDefaultQuota.Hard["requests.cpu"] = quantity("1")
			p.Spec.NetworkIsolation = false
		})
		g.Eventually(func(g Gomega) {
			err := ta.Get(ctx, client.ObjectKey{Namespace: "web-api", Name: render.IsolationPolicyName}, &networkingv1.NetworkPolicy{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("Retain releases a leaving namespace with its data", func(t *testing.T) {
		// Drover's quota, limits and bindings go.
		g := NewWithT(t)
		g.Expect(ta.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "web-db", Name: "data"}})).To(Succeed())
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) {
			p.Spec.Namespaces = []v1alpha1.ProjectNamespace{{Name: "web-api"}, {Name: "web-legacy", Adopt: true}}
		})
		g.Eventually(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-db"}, &ns)).To(Succeed())
			g.Expect(ns.Labels).NotTo(HaveKey(render.ProjectLabel))
			g.Expect(ns.Labels).NotTo(HaveKey(render.ManagedByLabel))
			g.Expect(ns.DeletionTimestamp.IsZero()).To(BeTrue())
			g.Expect(canDeploy(g, ta, "web-db")).To(BeFalse())
			err := ta.Get(ctx, client.ObjectKey{Namespace: "web-db", Name: render.ProjectQuotaName}, &corev1.ResourceQuota{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// Released: the namespace and its data stay.
		g.Consistently(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-db"}, &ns)).To(Succeed())
			g.Expect(ns.DeletionTimestamp.IsZero()).To(BeTrue(), "a released namespace must not be deleted under Retain")
			g.Expect(ta.Get(ctx, client.ObjectKey{Namespace: "web-db", Name: "data"}, &corev1.ConfigMap{})).To(Succeed())
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("an adopted namespace is only released, even under Delete", func(t *testing.T) {
		// Delete: a namespace Drover created is deleted when it leaves the project;
		// web-legacy was adopted, it existed before Drover, so it is only ever
		// released, whatever the policy.
		g := NewWithT(t)
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) {
			p.Spec.NamespaceDeletionPolicy = v1alpha1.NamespaceDelete
		})
		g.Eventually(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-legacy"}, &ns)).To(Succeed())
			g.Expect(ns.Annotations).To(HaveKeyWithValue(render.NamespaceDeletionPolicyAnnotation, "Delete"))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		updateProject(t, "web", func(p *v1alpha1.ClusterProject) {
			p.Spec.Namespaces = p.Spec.Namespaces[:1]
		})
		g.Eventually(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-legacy"}, &ns)).To(Succeed())
			g.Expect(ns.DeletionTimestamp.IsZero()).To(BeTrue(), "an adopted namespace must never be deleted")
			g.Expect(ns.Labels).NotTo(HaveKey(render.ManagedByLabel))
		}, timeout, 100*time.Millisecond).Should(Succeed())
		// Released: it stays.
		g.Consistently(func(g Gomega) {
			var ns corev1.Namespace
			g.Expect(ta.Get(ctx, client.ObjectKey{Name: "web-legacy"}, &ns)).To(Succeed())
			g.Expect(ns.DeletionTimestamp.IsZero()).To(BeTrue(), "an adopted namespace must never be deleted")
		}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("deleting the project removes its namespaces everywhere", func(t *testing.T) {
		// Policy Delete.
		g := NewWithT(t)
		g.Expect(hubc.Delete(ctx, proj)).To(Succeed())
		g.Eventually(func(g Gomega) {
			for _, c := range []client.Client{ta, tb} {
				var ns corev1.Namespace
				err := c.Get(ctx, client.ObjectKey{Name: "web-api"}, &ns)
				g.Expect(apierrors.IsNotFound(err) || !ns.DeletionTimestamp.IsZero()).To(BeTrue(), "web-api is still there")
			}
		}, timeout, 100*time.Millisecond).Should(Succeed())
	})
}

func expectProjectQuiet(t *testing.T, name string, window time.Duration) {
	t.Helper()
	expectUnwritten(t, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name}}, window)
}
