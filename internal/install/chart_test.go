package install

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// helm runs the Helm binary that make test builds (HELM), in the repository root.
func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		t.Skip("HELM is not set; make test builds helm into bin/ and sets it")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + string(ee.Stderr)
		}
		t.Fatalf("helm %s: %s", strings.Join(args, " "), msg)
	}
	return out
}

// TestChartInstalls installs charts/drover into a fresh API server as a user does:
// `helm install --dry-run=server` first, which checks every object against the server,
// then `helm install` (CRDs from crds/ first, then the templates, in one command),
// and finds every object that `helm template` renders with the same values. After
// `helm uninstall` the CRDs, and so everyone's objects, are still there.
func TestChartInstalls(t *testing.T) {
	helm(t, "version") // skips without HELM before starting an API server
	cp := startControlPlane(t, "chart")
	ctx := context.Background()
	const ns = "drover-system"
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, cp.Kubeconfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig, _ = filepath.Abs(kubeconfig)
	out := helm(t, "install", "drover", "charts/drover", "--namespace", ns, "--create-namespace",
		"--dry-run=server", "--kubeconfig", kubeconfig)
	if !strings.Contains(string(out), "STATUS: pending-install") {
		t.Errorf("helm install --dry-run=server printed:\n%s", out)
	}

	values := "replicaCount=2,hub.url=https://drover.example.com,hub.service.type=LoadBalancer,hub.tlsSecretName=hub-tls"
	out = helm(t, "install", "drover", "charts/drover", "--namespace", ns, "--create-namespace",
		"--set", values, "--kubeconfig", kubeconfig)
	if !strings.Contains(string(out), "STATUS: deployed") {
		t.Errorf("helm install printed:\n%s", out)
	}
	objs, err := Decode(helm(t, "template", "drover", "charts/drover", "--namespace", ns, "--include-crds", "--set", values))
	if err != nil {
		t.Fatal(err)
	}
	got := kinds(objs)
	for kind, want := range map[string]int{"CustomResourceDefinition": 5, "Deployment": 1, "ValidatingWebhookConfiguration": 1, "Service": 3, "ClusterRole": 1} {
		if got[kind] != want {
			t.Errorf("the chart renders %d %s, want %d", got[kind], kind, want)
		}
	}
	a, err := NewApplier(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	requireExist(ctx, t, a, objs)
	waitEstablished(ctx, t, a, objs)

	helm(t, "uninstall", "drover", "--namespace", ns, "--kubeconfig", kubeconfig)
	mapper, err := a.Mapper()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		_, err := a.Get(ctx, mapper, o)
		switch kept := o.GetKind() == "CustomResourceDefinition"; {
		case kept && err != nil:
			t.Errorf("helm uninstall deleted CRD %s: %v", o.GetName(), err)
		case !kept && !apierrors.IsNotFound(err):
			t.Errorf("%s %s is still there after helm uninstall (%v)", o.GetKind(), name(o), err)
		}
	}
}

// TestChartMatchesInstallManifest keeps the chart and config/default (from which
// dist/install.yaml is built) in step: with its defaults the chart installs the same
// objects, plus the metrics Service, and runs the manager with the same flags.
func TestChartMatchesInstallManifest(t *testing.T) {
	chart, err := Decode(helm(t, "template", "drover", "charts/drover", "--namespace", "drover-system", "--include-crds"))
	if err != nil {
		t.Fatal(err)
	}
	dist := decodeFiles(t, filepath.Join(root, "dist", "install.yaml"))
	ids := func(objs []*unstructured.Unstructured) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.GetKind()+" "+name(o))
		}
		slices.Sort(out)
		return out
	}
	want := slices.DeleteFunc(ids(dist), func(s string) bool { return s == "Namespace drover-system" })
	want = append(want, "Service drover-system/drover-metrics")
	slices.Sort(want)
	if got := ids(chart); !slices.Equal(got, want) {
		t.Errorf("the chart installs\n  %v\ndist/install.yaml (config/default) installs\n  %v", got, want)
	}
	// Beyond names: every object but the Deployment is the same, metadata aside.
	byID := map[string]*unstructured.Unstructured{}
	for _, o := range dist {
		byID[o.GetKind()+" "+name(o)] = o
	}
	for _, c := range chart {
		d, ok := byID[c.GetKind()+" "+name(c)]
		if !ok || c.GetKind() == "Deployment" {
			continue
		}
		if got, want := comparable(c), comparable(d); !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("%s %s differs between the chart and config/:\n  chart:   %v\n  config/: %v", c.GetKind(), name(c), got, want)
		}
	}
	args := func(objs []*unstructured.Unstructured) []string {
		for _, o := range objs {
			if o.GetKind() == "Deployment" {
				a, _, _ := unstructuredArgs(o)
				// The image and the log level are set differently, the flags are not.
				return slices.DeleteFunc(a, func(s string) bool {
					return strings.HasPrefix(s, "--agent-image=") || strings.HasPrefix(s, "--zap-log-level=")
				})
			}
		}
		return nil
	}
	if got, want := args(chart), args(dist); !slices.Equal(got, want) {
		t.Errorf("the chart's manager runs with\n  %v\nconfig/manager's with\n  %v", got, want)
	}
	// Scraping: the chart's metrics Service and ServiceMonitor are config/prometheus's.
	withMonitor, err := Decode(helm(t, "template", "drover", "charts/drover", "--namespace", "drover-system",
		"--set", "metrics.serviceMonitor.enabled=true"))
	if err != nil {
		t.Fatal(err)
	}
	prom := decodeFiles(t, kustomizationFiles(t, filepath.Join(root, "config", "prometheus"))...)
	for _, p := range prom {
		found := false
		for _, c := range withMonitor {
			if c.GetKind() == p.GetKind() && name(c) == name(p) {
				found = true
				if got, want := comparable(c), comparable(p); !equality.Semantic.DeepEqual(got, want) {
					t.Errorf("%s %s differs between the chart and config/prometheus:\n  chart:   %v\n  config/: %v", c.GetKind(), name(c), got, want)
				}
			}
		}
		if !found {
			t.Errorf("the chart with metrics.serviceMonitor.enabled has no %s %s (config/prometheus has)", p.GetKind(), name(p))
		}
	}

	// cert-manager: the chart's Issuers and Certificates are config/certmanager's, and
	// the manager serves the certificate they issue.
	withCM, err := Decode(helm(t, "template", "drover", "charts/drover", "--namespace", "drover-system",
		"--set", "webhook.certManager.enabled=true"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range decodeFiles(t, filepath.Join(root, "config", "certmanager", "certificate.yaml")) {
		found := false
		for _, c := range withCM {
			if c.GetKind() == p.GetKind() && name(c) == name(p) {
				found = true
				if got, want := comparable(c), comparable(p); !equality.Semantic.DeepEqual(got, want) {
					t.Errorf("%s %s differs between the chart and config/certmanager:\n  chart:   %v\n  config/: %v", c.GetKind(), name(c), got, want)
				}
			}
		}
		if !found {
			t.Errorf("the chart with webhook.certManager.enabled has no %s %s (config/certmanager has)", p.GetKind(), name(p))
		}
	}
	for _, c := range withCM {
		if c.GetKind() != "Deployment" {
			continue
		}
		a, _, _ := unstructuredArgs(c)
		vols, _, _ := unstructured.NestedSlice(c.Object, "spec", "template", "spec", "volumes")
		if !slices.Contains(a, "--webhook-cert-dir=/etc/drover/webhook-certs") || len(vols) != 1 ||
			!strings.Contains(fmt.Sprint(vols[0]), "secretName:drover-webhook-cert") {
			t.Errorf("with cert-manager the manager does not serve Secret drover-webhook-cert: args %v, volumes %v", a, vols)
		}
	}

	// The copies in the chart are current.
	for copy, orig := range map[string]string{
		"charts/drover/files/role.yaml":    "config/rbac/role.yaml",
		"charts/drover/files/webhook.yaml": "config/webhook/manifests.yaml",
	} {
		a, errA := os.ReadFile(filepath.Join(root, copy))
		b, errB := os.ReadFile(filepath.Join(root, orig))
		if errA != nil || errB != nil || string(a) != string(b) {
			t.Errorf("%s is not a copy of %s: run make manifests", copy, orig)
		}
	}
}

// comparable is an object without its metadata, and without a Service's default type.
func comparable(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy().Object
	delete(c, "metadata")
	if o.GetKind() == "Service" {
		if typ, _, _ := unstructured.NestedString(c, "spec", "type"); typ == "ClusterIP" {
			unstructured.RemoveNestedField(c, "spec", "type")
		}
	}
	return c
}

// TestChartRefusesBadValues: values.schema.json catches a mistyped value name or a
// value the manager would reject, at helm install time rather than in a crash loop.
func TestChartRefusesBadValues(t *testing.T) {
	bin := os.Getenv("HELM")
	if bin == "" {
		t.Skip("HELM is not set; make test builds helm into bin/ and sets it")
	}
	for set, want := range map[string]string{
		"replicas=2":                                  "additional properties 'replicas' not allowed",
		"hub.url=http://drover.example.com":           "/hub/url",
		"replicaCount=0":                              "/replicaCount",
		"hub.service.type=External":                   "/hub/service/type",
		"replicaCount=2,leaderElection.enabled=false": "replicaCount > 1 needs leaderElection.enabled: true",
	} {
		cmd := exec.Command(bin, "template", "drover", "charts/drover", "--set", set)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("helm template --set %s: %v, want an error with %q:\n%s", set, err, want, out)
		}
	}
}

// TestChartShards renders the chart with sharding.shards=3: one Deployment of one
// replica per shard, each with --shard=K/3 and a selector of its own, none with
// leader election; the Services still reach every shard.
func TestChartShards(t *testing.T) {
	objs, err := Decode(helm(t, "template", "drover", "charts/drover", "--namespace", "drover-system", "--set", "sharding.shards=3"))
	if err != nil {
		t.Fatal(err)
	}
	var shards []string
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			args, _, _ := unstructuredArgs(o)
			replicas, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
			sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector", "matchLabels")
			labels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
			k := sel["management.drover.io/shard"]
			if replicas != 1 || k == "" || labels["management.drover.io/shard"] != k || o.GetName() != "drover-manager-shard-"+k ||
				!slices.Contains(args, "--shard="+k+"/3") || slices.Contains(args, "--leader-elect") {
				t.Errorf("Deployment %s: replicas %d, selector %v, args %v", o.GetName(), replicas, sel, args)
			}
			shards = append(shards, k)
		case "Service":
			sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector")
			if _, ok := sel["management.drover.io/shard"]; ok {
				t.Errorf("Service %s selects one shard: %v", o.GetName(), sel)
			}
		}
	}
	slices.Sort(shards)
	if !slices.Equal(shards, []string{"0", "1", "2"}) {
		t.Errorf("the chart runs shards %v, want 0, 1 and 2", shards)
	}
}
