package manager

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/builtins"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/internal/install"
)

// TestInstallManifest installs Drover from dist/install.yaml on a fresh hub in one
// pass, as `kubectl apply --server-side -f` does, then runs the manager as its
// Deployment does: with the Deployment's flags (only the listen addresses moved to
// free local ports, and the webhook reached by URL, since no pod runs here) and with
// the identity and RBAC of its ServiceAccount. The manager then creates the built-in
// RoleTemplates through its own admission webhook, and config/samples apply.
func TestInstallManifest(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub, err := controlplane.Start(controlplane.Options{Name: "install-hub"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	a, err := install.NewApplier(hub.Config)
	g.Expect(err).NotTo(HaveOccurred())
	data, err := os.ReadFile(filepath.Join("..", "dist", "install.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	objs, err := install.Decode(data)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(a.ApplyOnePass(ctx, objs)).To(Succeed(), "kubectl apply --server-side -f dist/install.yaml")

	var deployArgs []string
	env := map[string]string{"POD_NAMESPACE": DefaultNamespace}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		c := cs[0].(map[string]any)
		deployArgs, _, _ = unstructured.NestedStringSlice(c, "args")
		envs, _, _ := unstructured.NestedSlice(c, "env")
		for _, e := range envs {
			e := e.(map[string]any)
			if v, ok := e["value"].(string); ok {
				env[e["name"].(string)] = v
			}
		}
	}
	g.Expect(deployArgs).To(ContainElement("--install-builtin-roletemplates"))
	for i, arg := range deployArgs {
		for k, v := range env {
			arg = strings.ReplaceAll(arg, "$("+k+")", v)
		}
		deployArgs[i] = arg
	}

	// The manager's ServiceAccount, as the API server authenticates it in a pod.
	saKubeconfig, err := hub.AddUser("system:serviceaccount:"+DefaultNamespace+":drover-manager",
		"system:serviceaccounts", "system:serviceaccounts:"+DefaultNamespace)
	g.Expect(err).NotTo(HaveOccurred())
	saPath := filepath.Join(t.TempDir(), "sa.kubeconfig")
	g.Expect(os.WriteFile(saPath, saKubeconfig, 0o600)).To(Succeed())

	scheme, err := Scheme()
	g.Expect(err).NotTo(HaveOccurred())
	admin, err := client.New(hub.Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	e := &hubEnv{cp: hub, c: admin}
	hubAddr, webhookAddr := freeAddr(t), freeAddr(t)
	args := append(slices.Clip(deployArgs), "--kubeconfig="+saPath, "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--hub-bind-address="+hubAddr, "--hub-url=https://"+hubAddr,
		"--webhook-bind-address="+webhookAddr, "--webhook-url=https://"+webhookAddr, "--zap-log-level=error")
	e.startManager(t, hubAddr, args...)

	// The webhook's failurePolicy is Fail: a RoleTemplate is only created once the
	// hub's API server reaches the manager's webhook.
	want := []string{"cluster-member", "cluster-owner", "project-member", "project-owner", "read-only"}
	g.Eventually(func(g Gomega) {
		var l v1alpha1.RoleTemplateList
		g.Expect(admin.List(ctx, &l)).To(Succeed())
		var names []string
		for _, rt := range l.Items {
			names = append(names, rt.Name)
		}
		slices.Sort(names)
		g.Expect(names).To(Equal(want))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	// The installer writes its record after the templates.
	g.Eventually(func(g Gomega) {
		var record corev1.ConfigMap
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: builtins.RecordName}, &record)).To(Succeed())
		g.Expect(record.Data).To(HaveLen(len(want)))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	// The samples, through the webhook, as a GitOps tool syncs them.
	var samples []*unstructured.Unstructured
	for _, f := range []string{"managedcluster.yaml", "roletemplate.yaml", "clusterproject.yaml", "accessbinding-project.yaml",
		"accessbinding-cluster.yaml", "accessbinding-view-everywhere.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "config", "samples", f))
		g.Expect(err).NotTo(HaveOccurred())
		objs, err := install.Decode(data)
		g.Expect(err).NotTo(HaveOccurred())
		samples = append(samples, objs...)
	}
	g.Expect(a.ApplyOnePass(ctx, samples)).To(Succeed(), "applying config/samples")
	// The sample cluster joins by registration: the hub creates its token and
	// publishes the command to run in the cluster.
	g.Eventually(func(g Gomega) {
		var mc v1alpha1.ManagedCluster
		g.Expect(admin.Get(ctx, client.ObjectKey{Name: "prod-eu-1"}, &mc)).To(Succeed())
		g.Expect(mc.Status.Registration).NotTo(BeNil())
		g.Expect(mc.Status.Registration.Command).To(HavePrefix("kubectl apply -f https://" + hubAddr + "/v1/register/"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}
