package builtins

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
)

func TestRoleTemplatesInheritedFirst(t *testing.T) {
	ts, err := RoleTemplates()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	pos := map[string]int{}
	for i, rt := range ts {
		names = append(names, rt.Name)
		pos[rt.Name] = i
	}
	want := []string{"cluster-member", "cluster-owner", "project-member", "project-owner", "read-only"}
	sorted := slices.Sorted(slices.Values(names))
	if !slices.Equal(sorted, want) {
		t.Fatalf("built-ins = %v, want %v", sorted, want)
	}
	for _, rt := range ts {
		for _, in := range rt.Spec.Inherits {
			if p, ok := pos[in]; ok && p > pos[rt.Name] {
				t.Errorf("%s comes before %s, which it inherits: %v", rt.Name, in, names)
			}
		}
	}
}

func TestInheritedFirstRefusesCycles(t *testing.T) {
	rt := func(name string, inherits ...string) v1alpha1.RoleTemplate {
		return v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RoleTemplateSpec{Inherits: inherits}}
	}
	if _, err := inheritedFirst([]v1alpha1.RoleTemplate{rt("a", "b"), rt("b", "a")}); err == nil {
		t.Error("a cycle was accepted")
	}
	got, err := inheritedFirst([]v1alpha1.RoleTemplate{rt("a", "b", "outside"), rt("b", "c"), rt("c")})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Name != "c" || got[1].Name != "b" || got[2].Name != "a" {
		t.Errorf("order = %s %s %s, want c b a", got[0].Name, got[1].Name, got[2].Name)
	}
}

// TestInstall runs Install against a real API server: it creates the built-ins once,
// leaves edited ones alone and never recreates a deleted one.
func TestInstall(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	hub, err := controlplane.Start(controlplane.Options{Name: "builtins", CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(hub.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "drover-system"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// A user applied their own read-only before the manager first ran.
	mine := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "read-only"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextProject,
		Rules:   []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}}}
	if err := c.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}

	created, err := Install(ctx, c, c, ns)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cluster-member", "cluster-owner", "project-member", "project-owner"}; !slices.Equal(slices.Sorted(slices.Values(created)), want) {
		t.Errorf("created %v, want %v", created, want)
	}
	var got v1alpha1.RoleTemplate
	if err := c.Get(ctx, client.ObjectKey{Name: "read-only"}, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.Rules) != 1 || got.Spec.Rules[0].Resources[0] != "pods" {
		t.Errorf("the user's read-only was changed: %+v", got.Spec.Rules)
	}
	var record corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: RecordName}, &record); err != nil {
		t.Fatal(err)
	}
	if len(record.Data) != 5 {
		t.Errorf("record = %v, want all five built-ins", record.Data)
	}

	// The user deletes one and edits another; a manager that starts again changes nothing.
	owner := &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "cluster-owner"}}
	if err := c.Delete(ctx, owner); err != nil {
		t.Fatal(err)
	}
	var member v1alpha1.RoleTemplate
	if err := c.Get(ctx, client.ObjectKey{Name: "project-member"}, &member); err != nil {
		t.Fatal(err)
	}
	member.Spec.DisplayName = "Developers"
	if err := c.Update(ctx, &member); err != nil {
		t.Fatal(err)
	}
	created, err = Install(ctx, c, c, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 0 {
		t.Errorf("second run created %v, want nothing", created)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "cluster-owner"}, owner); err == nil {
		t.Error("the deleted cluster-owner was created again")
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "project-member"}, &member); err != nil {
		t.Fatal(err)
	}
	if member.Spec.DisplayName != "Developers" {
		t.Errorf("the edited project-member was changed back to %q", member.Spec.DisplayName)
	}

	// Removing a key from the record asks for that built-in again.
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: RecordName}, &record); err != nil {
		t.Fatal(err)
	}
	delete(record.Data, "cluster-owner")
	if err := c.Update(ctx, &record); err != nil {
		t.Fatal(err)
	}
	if created, err = Install(ctx, c, c, ns); err != nil || !slices.Equal(created, []string{"cluster-owner"}) {
		t.Errorf("after removing its key: created %v, %v; want [cluster-owner]", created, err)
	}
}
