package manager

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/admission"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/render"
)

// opsNamespace is the operator namespace of TestAdmission: not drover-system, which
// the CRD's CEL rule already keeps out of projects, so that the webhook's own rule for
// the operator namespace is what refuses it.
const opsNamespace = "drover-ops"

// TestAdmission runs the manager with --webhook-url against a real hub, so that it
// registers its own ValidatingWebhookConfiguration, and drives the hub as kubectl
// does: as an admin in system:masters and as alice, who may only write Drover's
// kinds. Every rule refuses both alike, with a message that names the field; valid
// objects pass for both.
func TestAdmission(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub, scheme, admin := startBareHub(t, "admission-hub", opsNamespace)

	// alice may write Drover's kinds, and nothing else.
	g.Expect(admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover-editor"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"*"}, Verbs: []string{"*"}}}})).To(Succeed())
	g.Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-drover-editor"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "drover-editor"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "alice"}}})).To(Succeed())
	aliceKubeconfig, err := hub.AddUser("alice", "developers")
	g.Expect(err).NotTo(HaveOccurred())
	aliceConfig, err := clientcmd.RESTConfigFromKubeConfig(aliceKubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	alice, err := client.New(aliceConfig, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())

	// Before the webhook is there: a binding that grants a role to anonymous users.
	// The controllers must not trust the webhook to have seen it.
	g.Expect(admin.Create(ctx, anonBinding("anon-before-webhook", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: render.UnauthenticatedGroup}))).To(Succeed())

	e := &hubEnv{cp: hub, c: admin}
	webhookAddr := freeAddr(t)
	e.startManager(t, "", "--namespace="+opsNamespace, "--hub-bind-address=0",
		"--webhook-bind-address="+webhookAddr, "--webhook-url=https://"+webhookAddr)

	// The manager registers its configuration; wait until the API server calls it.
	probe := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "probe"}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters: v1alpha1.ClusterSelection{Names: []string{"none"}}, Namespaces: []v1alpha1.ProjectNamespace{{Name: opsNamespace}}}}
	g.Eventually(func() string {
		err := admin.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err == nil {
			return "allowed"
		}
		return err.Error()
	}, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring(`admission webhook "clusterprojects.management.drover.io" denied the request`))

	t.Run("configuration", func(t *testing.T) {
		g := NewWithT(t)
		var vwc admissionregistrationv1.ValidatingWebhookConfiguration
		g.Expect(admin.Get(ctx, client.ObjectKey{Name: admission.DefaultConfigurationName}, &vwc)).To(Succeed())
		var secret corev1.Secret
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: opsNamespace, Name: admission.TLSSecretName}, &secret)).To(Succeed())
		g.Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
		g.Expect(vwc.Webhooks).To(HaveLen(5)) // accessbindings, roletemplates, clusterprojects, clusternodes, managedclusters
		for _, w := range vwc.Webhooks {
			g.Expect(*w.FailurePolicy).To(Equal(admissionregistrationv1.Fail), w.Name)
			g.Expect(*w.TimeoutSeconds).To(Equal(admission.TimeoutSeconds), w.Name)
			g.Expect(*w.SideEffects).To(Equal(admissionregistrationv1.SideEffectClassNone), w.Name)
			g.Expect(*w.ClientConfig.URL).To(HavePrefix("https://"+webhookAddr+"/validate-"), w.Name)
			g.Expect(w.ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]), w.Name)
		}
		// The registered configuration equals what the manager wants: no update
		// loop. Then it is tampered with, and the manager repairs it at once.
		rv := vwc.ResourceVersion
		time.Sleep(time.Second)
		g.Expect(admin.Get(ctx, client.ObjectKey{Name: admission.DefaultConfigurationName}, &vwc)).To(Succeed())
		g.Expect(vwc.ResourceVersion).To(Equal(rv), "the manager keeps rewriting its configuration")
		vwc.Webhooks[0].ClientConfig.CABundle = nil
		g.Expect(admin.Update(ctx, &vwc)).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: admission.DefaultConfigurationName}, &vwc)).To(Succeed())
			g.Expect(bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"])).To(BeTrue())
		}, 10*time.Second, 50*time.Millisecond).Should(Succeed())
	})

	t.Run("controllers report what got past a webhook that was not there", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			var b v1alpha1.AccessBinding
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "anon-before-webhook"}, &b)).To(Succeed())
			c := findCond(b.Status.Conditions, v1alpha1.StalledCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(render.ReasonForbiddenSubject))
			g.Expect(c.Message).To(ContainSubstring(`spec.subjects[0]: group "system:unauthenticated"`))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		// Changing its metadata is not refused; changing its spec without fixing it is.
		b := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "anon-before-webhook"}}
		g.Expect(update(admin, b, func() { b.Labels = map[string]string{"team": "platform"} })).To(Succeed())
		expectRefused(t, update(admin, b, func() {
			b.Spec.Subjects = append(b.Spec.Subjects, v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: "bob"})
		}), `AccessBinding "anon-before-webhook" is invalid: spec.subjects[0]: group "system:unauthenticated"`)
		g.Expect(update(admin, b, func() { b.Spec.Subjects = []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "bob"}} })).To(Succeed())
	})

	// The same rules for everyone: system:masters is not above the validity of the
	// hub's intents, and a user without it is refused nothing more.
	for _, who := range []struct {
		name string
		c    client.Client
	}{{"masters", admin}, {"alice", alice}} {
		c, p := who.c, who.name+"-"
		t.Run(who.name, func(t *testing.T) {
			g := NewWithT(t)
			// Valid objects pass: a chain of templates, a project, a binding.
			g.Expect(c.Create(ctx, rt(p+"base", nil))).To(Succeed())
			g.Expect(c.Create(ctx, rt(p+"mid", []string{p + "base"}))).To(Succeed())
			g.Expect(c.Create(ctx, rt(p+"top", []string{p + "mid", p + "base"}))).To(Succeed())
			g.Expect(c.Create(ctx, cproj(p+"shop", p+"shop-a", p+"shop-b"))).To(Succeed())
			g.Expect(c.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: p + "devs"}, Spec: v1alpha1.AccessBindingSpec{
				Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "developers"}, {Kind: v1alpha1.SubjectGroup, Name: "system:authenticated"}},
				RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: p + "mid"}, Project: p + "shop"}})).To(Succeed())

			// Inheritance: a cycle, an unknown template, and (the schema's own rule,
			// which runs first) the template itself.
			base := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: p + "base"}}
			expectRefused(t, update(c, base, func() { base.Spec.Inherits = []string{p + "top"} }), `admission webhook "roletemplates.management.drover.io" denied the request`,
				`spec.inherits[0]: inheriting "`+p+`top" forms a cycle: `+p+`base -> `+p+`top -> `+p+`mid -> `+p+`base`)
			expectRefused(t, c.Create(ctx, rt(p+"orphan", []string{p + "base", "ghost"})), `spec.inherits[1]: RoleTemplate "ghost" does not exist`)
			expectRefused(t, c.Create(ctx, rt(p+"self", []string{p + "self"})), `spec.inherits: a RoleTemplate cannot inherit itself`)
			// Refused at dry run too (kubectl apply --dry-run=server).
			expectRefused(t, c.Create(ctx, rt(p+"orphan", []string{"ghost"}), client.DryRunAll), `RoleTemplate "ghost" does not exist`)

			// Namespaces: another project's, the operator namespace, and kube-system
			// (the schema's rule).
			expectRefused(t, c.Create(ctx, cproj(p+"shop2", p+"shop-c", p+"shop-b")),
				`ClusterProject "`+p+`shop2" is invalid: spec.namespaces[1].name: namespace "`+p+`shop-b" already belongs to ClusterProject "`+p+`shop"`)
			g.Expect(c.Create(ctx, cproj(p+"shop2", p+"shop-c"))).To(Succeed())
			shop2 := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: p + "shop2"}}
			expectRefused(t, update(c, shop2, func() {
				shop2.Spec.Namespaces = append(shop2.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: p + "shop-a"})
			}), `spec.namespaces[1].name: namespace "`+p+`shop-a" already belongs to ClusterProject "`+p+`shop"`)
			expectRefused(t, c.Create(ctx, cproj(p+"ops", "fine", opsNamespace)),
				`spec.namespaces[1].name: namespace "`+opsNamespace+`" is never managed by Drover: it is the operator namespace`)
			expectRefused(t, c.Create(ctx, cproj(p+"sys", "kube-system")), `namespace name is reserved`)

			// Subjects nobody may grant a role to.
			expectRefused(t, c.Create(ctx, anonBinding(p+"anon", v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: "developers"},
				v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: render.UnauthenticatedGroup})),
				`admission webhook "accessbindings.management.drover.io" denied the request`,
				`spec.subjects[1]: group "system:unauthenticated" is every anonymous request`)
			expectRefused(t, c.Create(ctx, anonBinding(p+"anon", v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: render.AnonymousUser})),
				`spec.subjects[0]: user "system:anonymous" is every anonymous request`)

			// A template that a binding grants is not deleted, unless forced.
			mid := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: p + "mid"}}
			err := c.Delete(ctx, mid)
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
			expectRefused(t, err, `AccessBinding `+p+`devs still grants it`, `management.drover.io/force-delete: "true"`)
			// A template that no binding grants goes.
			g.Expect(c.Delete(ctx, rt(p+"top", nil))).To(Succeed())
			g.Expect(update(c, mid, func() { mid.Annotations = map[string]string{admission.ForceDeleteAnnotation: "true"} })).To(Succeed())
			g.Expect(c.Delete(ctx, mid)).To(Succeed())
			// The binding it left behind is held, and says why.
			g.Eventually(func(g Gomega) {
				var b v1alpha1.AccessBinding
				g.Expect(c.Get(ctx, client.ObjectKey{Name: p + "devs"}, &b)).To(Succeed())
				cond := findCond(b.Status.Conditions, v1alpha1.StalledCondition)
				g.Expect(cond).NotTo(BeNil())
				g.Expect(cond.Reason).To(Equal(render.ReasonTemplateNotFound))
			}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		})
	}
}

// startBareHub starts a hub API server with Drover's CRDs and the operator namespace,
// and no manager, and returns it with an admin client.
func startBareHub(t *testing.T, name, namespace string) (*controlplane.ControlPlane, *runtime.Scheme, client.Client) {
	t.Helper()
	hub, err := controlplane.Start(controlplane.Options{Name: name, CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(hub.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	return hub, scheme, admin
}

// update reads obj, changes it with change and writes it, again while the write
// conflicts with another (the controllers write status).
func update(c client.Client, obj client.Object, change func()) error {
	for {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change()
		if err := c.Update(context.Background(), obj); !apierrors.IsConflict(err) {
			return err
		}
	}
}

func expectRefused(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("allowed; want refused with %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refused with %q; want it to contain %q", err.Error(), w)
		}
	}
}

func rt(name string, inherits []string) *v1alpha1.RoleTemplate {
	return &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextProject, Inherits: inherits,
		Rules: []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}}
}

func cproj(name string, namespaces ...string) *v1alpha1.ClusterProject {
	p := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters: v1alpha1.ClusterSelection{Names: []string{"none"}}}}
	for _, n := range namespaces {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: n})
	}
	return p
}

func anonBinding(name string, subjects ...v1alpha1.Subject) *v1alpha1.AccessBinding {
	return &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: subjects, RoleRef: v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"none"}}}}
}
