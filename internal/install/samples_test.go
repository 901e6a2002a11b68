package install

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestSamples applies the CRDs, the built-in RoleTemplates and config/samples to a
// real API server, as a GitOps tool syncing them from Git does, and checks that the
// samples need nothing that is not in Git: the ManagedCluster joins by registration,
// so the hub creates its token and no Secret must be made by hand first.
//
// It first shows the failure that dist/install.yaml avoids: RoleTemplates in the same
// pass as their CRD are refused, as kubectl refuses them.
func TestSamples(t *testing.T) {
	cp := startControlPlane(t, "samples")
	ctx := context.Background()
	a, err := NewApplier(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	crds := decodeFiles(t, kustomizationFiles(t, filepath.Join(root, "config", "crd"))...)
	builtins := decodeFiles(t, kustomizationFiles(t, filepath.Join(root, "config", "roletemplates"))...)

	err = a.ApplyOnePass(ctx, append(append([]*unstructured.Unstructured{}, crds...), builtins...))
	if err == nil || !strings.Contains(err.Error(), `no matches for kind "RoleTemplate"`) {
		t.Fatalf("CRDs and RoleTemplates in one pass: got %v, want kubectl's 'no matches for kind \"RoleTemplate\"'", err)
	}
	waitEstablished(ctx, t, a, crds)

	samples := decodeFiles(t, kustomizationFiles(t, filepath.Join(root, "config", "samples"))...)
	if err := a.ApplyOnePass(ctx, append(builtins, samples...)); err != nil {
		t.Fatalf("applying the built-ins and config/samples: %v", err)
	}
	requireExist(ctx, t, a, samples)

	for _, s := range samples {
		if s.GetKind() != "ManagedCluster" {
			continue
		}
		if _, ok, _ := unstructured.NestedMap(s.Object, "spec", "kubeconfig"); ok {
			t.Errorf("sample ManagedCluster %s needs a kubeconfig Secret that is not in Git: it can never become Ready when synced as it is", s.GetName())
		}
		if _, ok, _ := unstructured.NestedMap(s.Object, "spec", "registration"); !ok {
			t.Errorf("sample ManagedCluster %s does not join by registration", s.GetName())
		}
	}
}
