package install

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallManifestAppliesInOnePass applies dist/install.yaml to a fresh API server
// exactly as docs/install.md says, `kubectl apply --server-side -f dist/install.yaml`
// (with kubectl when it is installed, else with the Applier, which resolves kinds as
// kubectl does), and finds every object it holds.
func TestInstallManifestAppliesInOnePass(t *testing.T) {
	cp := startControlPlane(t, "install-yaml")
	ctx := context.Background()
	a, err := NewApplier(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeFiles(t, filepath.Join(root, "dist", "install.yaml"))
	got := kinds(objs)
	for kind, want := range map[string]int{"Namespace": 1, "CustomResourceDefinition": 5, "Deployment": 1, "ValidatingWebhookConfiguration": 1, "Service": 2} {
		if got[kind] != want {
			t.Errorf("dist/install.yaml holds %d %s, want %d (run make build-installer)", got[kind], kind, want)
		}
	}
	if got["RoleTemplate"] != 0 {
		t.Errorf("dist/install.yaml holds %d RoleTemplates: they cannot be applied in the same pass as their CRD", got["RoleTemplate"])
	}
	// With kubectl itself when this machine has it, else as kubectl does.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(kubeconfig, cp.Kubeconfig(), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(kubectl, "apply", "--server-side", "-f", filepath.Join(root, "dist", "install.yaml"),
			"--kubeconfig", kubeconfig).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl apply --server-side -f dist/install.yaml failed on a fresh API server: %v\n%s", err, out)
		}
		if n := strings.Count(string(out), "serverside-applied"); n != len(objs) {
			t.Errorf("kubectl applied %d objects, want %d:\n%s", n, len(objs), out)
		}
	} else if err := a.ApplyOnePass(ctx, objs); err != nil {
		t.Fatalf("kubectl apply --server-side -f dist/install.yaml failed on a fresh API server:\n%v", err)
	}
	requireExist(ctx, t, a, objs)
	waitEstablished(ctx, t, a, objs)
	// Applying it again, as an upgrade or a GitOps sync does, succeeds too.
	if err := a.ApplyOnePass(ctx, objs); err != nil {
		t.Fatalf("applying dist/install.yaml a second time: %v", err)
	}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		args, _, _ := unstructuredArgs(o)
		if !strings.Contains(strings.Join(args, " "), "--install-builtin-roletemplates") {
			t.Errorf("the manager in dist/install.yaml runs without --install-builtin-roletemplates: the built-ins would never be created (args %v)", args)
		}
	}
}
