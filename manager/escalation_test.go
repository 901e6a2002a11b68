package manager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
)

// TestEscalation plays the attacks the admission webhook exists for against a real hub,
// with the shipped built-in RoleTemplates and persona ClusterRoles (config/personas):
//   - mallory may manage AccessBindings and nothing else: she cannot make herself
//     cluster-owner anywhere, nor bind ClusterRole cluster-admin to everyone, until
//     she is given bind on the role;
//   - carol owns project shop through an AccessBinding: she adds members to shop
//     without a hub administrator, and is refused project-owner in another project,
//     cluster-owner anywhere and roles for system:authenticated;
//   - ursula may write RoleTemplates but not escalate: she cannot widen a built-in
//     template, nor add '*' to a template that grants it to others, until given
//     escalate;
//   - an administrator in system:masters is never hindered.
func TestEscalation(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub, scheme, admin := startBareHub(t, "escalation-hub", "drover-system")

	// What a platform team installs: the built-in templates and the personas.
	for _, dir := range []string{"roletemplates", "personas"} {
		files, err := filepath.Glob(filepath.Join("..", "config", dir, "*.yaml"))
		g.Expect(err).NotTo(HaveOccurred())
		for _, f := range files {
			if strings.HasSuffix(f, "kustomization.yaml") {
				continue
			}
			data, err := os.ReadFile(f)
			g.Expect(err).NotTo(HaveOccurred())
			applyManifest(t, admin, string(data))
		}
	}
	personaOf := func(user, role string) {
		g.Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-" + role},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}}})).To(Succeed())
	}
	userClient := func(name string, groups ...string) client.Client {
		kc, err := hub.AddUser(name, groups...)
		g.Expect(err).NotTo(HaveOccurred())
		cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
		g.Expect(err).NotTo(HaveOccurred())
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		g.Expect(err).NotTo(HaveOccurred())
		return c
	}
	personaOf("mallory", "drover-access-manager")
	personaOf("carol", "drover-access-manager")
	personaOf("ursula", "drover-template-author")
	mallory, carol, ursula := userClient("mallory"), userClient("carol", "shop-team"), userClient("ursula")

	// Two clusters (never connected: the rules read the hub only) and two projects.
	for _, name := range []string{"eu-1", "us-1"} {
		g.Expect(admin.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"env": "prod"}},
			Spec: v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: name + "-kubeconfig"}}}})).To(Succeed())
	}
	for name, clusters := range map[string][]string{"shop": {"eu-1", "us-1"}, "ads": {"eu-1"}} {
		p := cproj(name, name+"-a")
		p.Spec.Clusters = v1alpha1.ClusterSelection{Names: clusters}
		g.Expect(admin.Create(ctx, p)).To(Succeed())
	}
	g.Expect(admin.Create(ctx, grantOf("carol-owns-shop", userSubject("carol"), "project-owner", "shop", nil))).To(Succeed())

	e := &hubEnv{cp: hub, c: admin}
	webhookAddr := freeAddr(t)
	e.startManager(t, "", "--hub-bind-address=0", "--webhook-bind-address="+webhookAddr, "--webhook-url=https://"+webhookAddr)
	everywhere := &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}}
	g.Eventually(func() string {
		err := mallory.Create(ctx, grantOf("probe", userSubject("mallory"), "cluster-owner", "", everywhere), client.DryRunAll)
		if err == nil {
			return "allowed"
		}
		return err.Error()
	}, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring(`admission webhook "accessbindings.management.drover.io" denied the request`))

	t.Run("a user who may only write AccessBindings", func(t *testing.T) {
		g := NewWithT(t)
		err := mallory.Create(ctx, grantOf("mallory-root", userSubject("mallory"), "cluster-owner", "", everywhere))
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		expectRefused(t, err, `granting RoleTemplate "cluster-owner" needs the hub permission "bind" on roletemplates.management.drover.io/cluster-owner, which mallory does not have`,
			`spec.clusters.selector selects every cluster that matches it, now and later`)
		// Named clusters: the message names the missing rule.
		expectRefused(t, mallory.Create(ctx, grantOf("mallory-root", userSubject("mallory"), "cluster-owner", "", &v1alpha1.ClusterSelection{Names: []string{"eu-1"}})),
			`cluster-wide in cluster "eu-1" you lack apiGroups=[*] resources=[*] verbs=[*]`)
		// The attack of the issue: cluster-admin for everyone, everywhere.
		ca := grantOf("everyone-admin", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "system:authenticated"}, "cluster-admin", "", everywhere)
		ca.Spec.RoleRef.Kind = v1alpha1.RoleRefClusterRole
		expectRefused(t, mallory.Create(ctx, ca), `"bind" on clusterroles.rbac.authorization.k8s.io/cluster-admin`,
			`spec.subjects[0]: group "system:authenticated" is every caller of its kind`)
		// kubectl apply --dry-run=server is refused alike.
		expectRefused(t, mallory.Create(ctx, grantOf("mallory-root", userSubject("mallory"), "cluster-owner", "", everywhere), client.DryRunAll), `"bind"`)

		// Given bind on cluster-owner (and nothing else), she may grant it.
		g.Expect(admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "bind-cluster-owner"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"roletemplates"},
				ResourceNames: []string{"cluster-owner"}, Verbs: []string{"bind"}}}})).To(Succeed())
		personaOf("mallory", "bind-cluster-owner")
		g.Eventually(func() error {
			return mallory.Create(ctx, grantOf("platform-root", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "platform"}, "cluster-owner", "", everywhere))
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		// ...and that alone: project-owner is still refused.
		expectRefused(t, mallory.Create(ctx, grantOf("mallory-po", userSubject("mallory"), "project-owner", "shop", nil)),
			`"bind" on roletemplates.management.drover.io/project-owner`)
	})

	t.Run("a project owner delegates within the project", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(carol.Create(ctx, grantOf("shop-devs", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "shop-devs"}, "project-member", "shop", nil))).To(Succeed())
		g.Expect(carol.Create(ctx, grantOf("shop-deputy", userSubject("dan"), "project-owner", "shop", nil))).To(Succeed())
		// She may change the bindings she made, within what she holds.
		b := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "shop-devs"}}
		g.Expect(update(carol, b, func() { b.Spec.Subjects = append(b.Spec.Subjects, userSubject("erin")) })).To(Succeed())
		expectRefused(t, carol.Create(ctx, grantOf("ads-devs", userSubject("dan"), "project-owner", "ads", nil)),
			`in the namespaces of project "ads" on cluster "eu-1" you lack`)
		expectRefused(t, carol.Create(ctx, grantOf("carol-root", userSubject("carol"), "cluster-owner", "", &v1alpha1.ClusterSelection{Names: []string{"eu-1"}})),
			`cluster-wide in cluster "eu-1" you lack apiGroups=[*] resources=[*] verbs=[*]`)
		expectRefused(t, carol.Create(ctx, grantOf("shop-all", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "system:authenticated"}, "read-only", "shop", nil)),
			`group "system:authenticated" is every caller of its kind`)
		expectRefused(t, carol.Create(ctx, grantOf("shop-sa", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "system:serviceaccounts"}, "read-only", "shop", nil)),
			`group "system:serviceaccounts" is every caller of its kind`)
		// Moving her grant out of her project is a new grant, and refused.
		g.Expect(update(carol, b, func() { b.Spec.Project = "ads" })).To(MatchError(ContainSubstring(`project "ads"`)))
	})

	t.Run("a template author without escalate", func(t *testing.T) {
		g := NewWithT(t)
		ro := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "read-only"}}
		expectRefused(t, update(ursula, ro, func() {
			ro.Spec.Rules = append(ro.Spec.Rules, v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}})
		}), `changing the rules or inheritance of RoleTemplate "read-only" needs the hub permission "escalate" on roletemplates.management.drover.io/read-only, which ursula does not have (RoleTemplate "read-only" is built in)`)
		cm := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "cluster-member"}}
		expectRefused(t, update(ursula, cm, func() {
			cm.Spec.Rules = []v1alpha1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}
		}), `"escalate"`)
		// Her own template, unbound, is hers to shape; once an administrator binds it,
		// adding '*' is refused, naming the binding and the rule.
		support := rt("support", nil)
		g.Expect(ursula.Create(ctx, support)).To(Succeed())
		g.Expect(admin.Create(ctx, grantOf("shop-support", userSubject("sam"), "support", "shop", nil))).To(Succeed())
		star := v1alpha1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}
		expectRefused(t, update(ursula, support, func() { support.Spec.Rules = append(support.Spec.Rules, star) }),
			`AccessBinding "shop-support" grants it, and in the namespaces of project "shop" on cluster "eu-1" you lack apiGroups=[*] resources=[*] verbs=[*]`)
		expectRefused(t, update(ursula, support, func() { support.Spec.Inherits = []string{"project-owner"} }), `AccessBinding "shop-support" grants it`)
		// Metadata, display names and removing rules are never refused.
		g.Expect(update(ursula, support, func() { support.Spec.DisplayName = "Support" })).To(Succeed())
		g.Expect(update(ursula, support, func() { support.Spec.Rules = nil })).To(Succeed())
		// With escalate, she may.
		g.Expect(admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "escalate-roletemplates"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"roletemplates"}, Verbs: []string{"escalate"}}}})).To(Succeed())
		personaOf("ursula", "escalate-roletemplates")
		g.Eventually(func() error {
			return update(ursula, support, func() { support.Spec.Rules = []v1alpha1.PolicyRule{star} })
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	t.Run("system:masters is never hindered", func(t *testing.T) {
		g := NewWithT(t)
		ca := grantOf("root-everywhere", userSubject("root"), "cluster-admin", "", everywhere)
		ca.Spec.RoleRef.Kind = v1alpha1.RoleRefClusterRole
		g.Expect(admin.Create(ctx, ca)).To(Succeed())
		ro := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "read-only"}}
		g.Expect(update(admin, ro, func() { ro.Spec.DisplayName = "Read Only (audited)"; ro.Spec.Rules = ro.Spec.Rules[:1] })).To(Succeed())
	})

	// The personas documented in docs/admission.md are the shipped files.
	t.Run("docs show the shipped personas", func(t *testing.T) {
		doc, err := os.ReadFile(filepath.Join("..", "docs", "admission.md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"platform-admin", "access-manager", "template-author", "viewer"} {
			data, err := os.ReadFile(filepath.Join("..", "config", "personas", f+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var cr rbacv1.ClusterRole
			if err := yaml.Unmarshal(data, &cr); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(doc), cr.Name) {
				t.Errorf("docs/admission.md does not mention persona %s", cr.Name)
			}
		}
	})
}

func userSubject(name string) v1alpha1.Subject {
	return v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: name}
}

// grantOf is an AccessBinding of role (a RoleTemplate) to subject, in project or on clusters.
func grantOf(name string, subject v1alpha1.Subject, role, project string, clusters *v1alpha1.ClusterSelection) *v1alpha1.AccessBinding {
	return &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{subject}, RoleRef: v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: role},
		Project: project, Clusters: clusters}}
}
