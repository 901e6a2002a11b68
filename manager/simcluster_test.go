package manager

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/bench/simcluster"
)

// TestSimulatedClusters runs the manager against three simulated clusters
// (bench/simcluster, what the scale benchmark runs a thousand of), registered
// through kubeconfig Secrets: they become Ready, an AccessBinding is allowed in each
// by its own authorizer, a binding deleted in a target is restored, and revoking
// the binding denies it again.
func TestSimulatedClusters(t *testing.T) {
	g := NewWithT(t)
	e := startHub(t, "simclusters")
	defer e.cancel()
	ctx := context.Background()
	srv, err := simcluster.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	var sims []*simcluster.Cluster
	for i := range 3 {
		name := fmt.Sprintf("sim-%d", i+1)
		sim, err := srv.AddCluster(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := sim.Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}); err != nil {
			t.Fatal(err)
		}
		sims = append(sims, sim)
		g.Expect(e.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: DefaultNamespace},
			Data: map[string][]byte{"value": sim.Kubeconfig()}})).To(Succeed())
		g.Expect(e.c.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"sim": "true"}},
			Spec: v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: name + "-kubeconfig"}}}})).To(Succeed())
	}
	g.Eventually(func(g Gomega) {
		var list v1alpha1.ManagedClusterList
		g.Expect(e.c.List(ctx, &list)).To(Succeed())
		g.Expect(list.Items).To(HaveLen(3))
		for i := range list.Items {
			g.Expect(conditions.IsTrue(&list.Items[i], v1alpha1.ReadyCondition)).To(BeTrue(), "%s: %v", list.Items[i].Name, list.Items[i].Status.Conditions)
			g.Expect(list.Items[i].Status.KubernetesVersion).To(Equal(simcluster.Version.GitVersion))
		}
	}, time.Minute, 200*time.Millisecond).Should(Succeed())

	rt := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "sim-secret-reader"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextCluster,
		Rules:   []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}}}}
	g.Expect(e.c.Create(ctx, rt)).To(Succeed())
	ab := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "sim-readers"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: rt.Name},
		Clusters: &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"sim": "true"}}}}}
	g.Expect(e.c.Create(ctx, ab)).To(Succeed())
	allowed := func(want bool) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			for _, sim := range sims {
				g.Expect(sim.Can("alice", nil, "list", "", "secrets", "")).To(Equal(want), sim.Name())
			}
		}, time.Minute, 50*time.Millisecond).Should(Succeed())
	}
	allowed(true)

	// Drift: the binding deleted in a target, through its API, comes back.
	tc, err := client.New(sims[1].RESTConfig(), client.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(tc.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:" + ab.Name}})).To(Succeed())
	allowed(true)
	g.Eventually(func(g Gomega) {
		var crb rbacv1.ClusterRoleBinding
		g.Expect(tc.Get(ctx, client.ObjectKey{Name: "drover:" + ab.Name}, &crb)).To(Succeed())
	}, time.Minute, 50*time.Millisecond).Should(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(e.c.Get(ctx, client.ObjectKeyFromObject(ab), ab)).To(Succeed())
		g.Expect(ab.Status.Synced).To(Equal("3/3"))
	}, time.Minute, 200*time.Millisecond).Should(Succeed())

	g.Expect(e.c.Delete(ctx, ab)).To(Succeed())
	allowed(false)
}
