package install

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/drover-io/drover/controlplane"
)

// root is the repository's top directory.
var root = filepath.Join("..", "..")

// startControlPlane starts a fresh API server, with no CRDs, for one test.
func startControlPlane(t *testing.T, name string) *controlplane.ControlPlane {
	t.Helper()
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	cp, err := controlplane.Start(controlplane.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	return cp
}

func decodeFiles(t *testing.T, paths ...string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, objs...)
	}
	return out
}

// kustomizationFiles lists the resources of a kustomization.yaml, as paths.
func kustomizationFiles(t *testing.T, dir string) []string {
	t.Helper()
	objs := decodeFiles(t, filepath.Join(dir, "kustomization.yaml"))
	res, _, _ := unstructured.NestedStringSlice(objs[0].Object, "resources")
	if len(res) == 0 {
		t.Fatalf("%s/kustomization.yaml lists no resources", dir)
	}
	paths := make([]string, len(res))
	for i, r := range res {
		paths[i] = filepath.Join(dir, r)
	}
	return paths
}

// requireExist fails unless every object exists on the API server.
func requireExist(ctx context.Context, t *testing.T, a *Applier, objs []*unstructured.Unstructured) {
	t.Helper()
	mapper, err := a.Mapper()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := a.Get(ctx, mapper, o); err != nil {
			t.Errorf("%s %s was not created: %v", o.GetKind(), name(o), err)
		}
	}
}

// waitEstablished waits until every CRD among objs is Established, as
// `kubectl wait --for=condition=Established` does.
func waitEstablished(ctx context.Context, t *testing.T, a *Applier, objs []*unstructured.Unstructured) {
	t.Helper()
	mapper, err := a.Mapper()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			cur, err := a.Get(ctx, mapper, o)
			if err == nil && established(cur) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s is not Established: %v", o.GetName(), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func established(u *unstructured.Unstructured) bool {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
		return false
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.GetKind()]++
	}
	return m
}

// unstructuredArgs returns the first container's args of a Deployment.
func unstructuredArgs(d *unstructured.Unstructured) ([]string, bool, error) {
	cs, ok, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if !ok || err != nil || len(cs) == 0 {
		return nil, ok, err
	}
	c, _ := cs[0].(map[string]any)
	return unstructured.NestedStringSlice(c, "args")
}
