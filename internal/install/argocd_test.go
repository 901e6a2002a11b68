package install

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// TestArgoCDHealth evaluates the exact scripts in config/argocd/argocd-cm.yaml against
// objects of every kind that a real API server stored (so their JSON and status are
// what Argo CD reads), in each state kstatus knows.
func TestArgoCDHealth(t *testing.T) {
	cm := decodeFiles(t, filepath.Join(root, "config", "argocd", "argocd-cm.yaml"))[0]
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	specs := map[string]map[string]any{
		"ManagedCluster": {"registration": map[string]any{}},
		"RoleTemplate":   {"context": "Project", "rules": []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"pods"}, "verbs": []any{"get"}}}},
		"AccessBinding": {"subjects": []any{map[string]any{"kind": "Group", "name": "devs"}},
			"roleRef": map[string]any{"kind": "ClusterRole", "name": "view"}, "clusters": map[string]any{"names": []any{"prod-eu-1"}}},
		"ClusterProject": {"clusters": map[string]any{"names": []any{"prod-eu-1"}}, "namespaces": []any{map[string]any{"name": "payments-api"}}},
		"ClusterNode":    {"cluster": "edge-1", "roles": []any{"etcd"}, "address": "10.0.0.15"},
	}
	for kind := range specs {
		if data["resource.customizations.health.management.drover.io_"+kind] == "" {
			t.Errorf("argocd-cm.yaml has no health check for %s", kind)
		}
	}
	if len(data) != len(specs) {
		t.Errorf("argocd-cm.yaml has %d health checks, want one per kind (%d)", len(data), len(specs))
	}

	cp := startControlPlane(t, "argocd")
	ctx := context.Background()
	a, err := NewApplier(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	crds := decodeFiles(t, kustomizationFiles(t, filepath.Join(root, "config", "crd"))...)
	if err := a.ApplyOnePass(ctx, crds); err != nil {
		t.Fatal(err)
	}
	waitEstablished(ctx, t, a, crds)
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}

	cond := func(typ, status, reason, msg string, gen int64) map[string]any {
		return map[string]any{"type": typ, "status": status, "reason": reason, "message": msg,
			"lastTransitionTime": "2026-11-26T12:00:00Z", "observedGeneration": gen}
	}
	// Every object is created (generation 1), then has its spec changed once
	// (generation 2) before its status is written.
	cases := []struct {
		name        string
		status      map[string]any // nil: no status at all
		paused      bool
		wantStatus  string
		wantMessage string
	}{
		{name: "new, no status", wantStatus: "Progressing", wantMessage: "Waiting for Drover to report status"},
		{name: "ready", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "True", "Synced", "Applied in 1 of 1 selected clusters", 2),
			cond("Reconciling", "False", "Synced", "", 2), cond("Stalled", "False", "Synced", "", 2)}},
			wantStatus: "Healthy", wantMessage: "Applied in 1 of 1 selected clusters"},
		{name: "ready for the previous generation", status: map[string]any{"observedGeneration": int64(1), "conditions": []any{
			cond("Ready", "True", "Synced", "Applied", 1)}},
			wantStatus: "Progressing", wantMessage: "Waiting for Drover to observe generation 2"},
		{name: "Ready condition older than the status", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "True", "Synced", "Applied", 1)}},
			wantStatus: "Progressing", wantMessage: "Waiting for Drover to report Ready for generation 2"},
		{name: "reconciling", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "False", "Progressing", "Applying to 3 clusters", 2),
			cond("Reconciling", "True", "Progressing", "Applying to 3 clusters", 2)}},
			wantStatus: "Progressing", wantMessage: "Applying to 3 clusters"},
		{name: "not ready, nothing to do but wait", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "False", "Disconnected", "prod-eu-1 is not connected", 2)}},
			wantStatus: "Progressing", wantMessage: "prod-eu-1 is not connected"},
		{name: "stalled", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "False", "ClusterRoleNotFound", "ClusterRole view does not exist in prod-eu-1", 2),
			cond("Reconciling", "False", "ClusterRoleNotFound", "", 2),
			cond("Stalled", "True", "ClusterRoleNotFound", "ClusterRole view does not exist in prod-eu-1: create it or change spec.roleRef", 2)}},
			wantStatus: "Degraded", wantMessage: "ClusterRole view does not exist in prod-eu-1: create it or change spec.roleRef"},
		{name: "stalled with no message", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Stalled", "True", "InvalidSpec", "", 2)}},
			wantStatus: "Degraded", wantMessage: "InvalidSpec"},
		{name: "stalled for a generation since fixed", status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "True", "Synced", "Applied", 2), cond("Stalled", "True", "InvalidSpec", "bad", 1)}},
			wantStatus: "Healthy", wantMessage: "Applied"},
		{name: "paused cluster", paused: true, status: map[string]any{"observedGeneration": int64(2), "conditions": []any{
			cond("Ready", "False", "Paused", "Paused", 2)}},
			wantStatus: "Suspended", wantMessage: "Paused: Drover reconciles nothing for this cluster (spec.paused)"},
	}
	for kind, spec := range specs {
		gvr := schema.GroupVersionResource{Group: "management.drover.io", Version: "v1alpha1", Resource: strings.ToLower(kind) + "s"}
		script := data["resource.customizations.health.management.drover.io_"+kind]
		for i, tc := range cases {
			if tc.paused && kind != "ManagedCluster" {
				continue
			}
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				name := fmt.Sprintf("case-%d", i)
				if kind == "ClusterNode" { // named <cluster>-<hostname>
					spec = maps.Clone(spec)
					spec["hostname"] = name
					name = "edge-1-" + name
				}
				o := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "management.drover.io/v1alpha1", "kind": kind,
					"metadata": map[string]any{"name": name}, "spec": spec}}
				o, err := dyn.Resource(gvr).Create(ctx, o, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				var value any = "changed"
				change := []string{"spec", "displayName"}
				switch kind { // kinds without a displayName
				case "AccessBinding":
					change = []string{"spec", "roleRef", "name"}
				case "ClusterNode":
					value, change = []any{"etcd", "worker"}, []string{"spec", "roles"}
				}
				if err := unstructured.SetNestedField(o.Object, value, change...); err != nil {
					t.Fatal(err)
				}
				if tc.paused {
					_ = unstructured.SetNestedField(o.Object, true, "spec", "paused")
				}
				if o, err = dyn.Resource(gvr).Update(ctx, o, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
				if o.GetGeneration() != 2 {
					t.Fatalf("generation %d, want 2", o.GetGeneration())
				}
				if tc.status != nil {
					o.Object["status"] = tc.status
					if o, err = dyn.Resource(gvr).UpdateStatus(ctx, o, metav1.UpdateOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				// What Argo CD reads: the object as the API server serves it, as JSON.
				raw, err := dyn.Resource(gvr).Get(ctx, o.GetName(), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				js, err := raw.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				var obj map[string]any
				if err := json.Unmarshal(js, &obj); err != nil {
					t.Fatal(err)
				}
				got, err := ArgoHealth(script, obj)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != tc.wantStatus || got.Message != tc.wantMessage {
					t.Errorf("health = %s %q, want %s %q", got.Status, got.Message, tc.wantStatus, tc.wantMessage)
				}
			})
		}
	}
}
