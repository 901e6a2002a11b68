package admission

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func reader(t *testing.T, objs ...client.Object) client.Reader {
	return fake.NewClientBuilder().WithScheme(scheme(t)).WithObjects(objs...).Build()
}

func template(name string, inherits ...string) *v1alpha1.RoleTemplate {
	return &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RoleTemplateSpec{Context: v1alpha1.ContextProject, Inherits: inherits}}
}

func binding(name, template string) *v1alpha1.AccessBinding {
	return &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: template}, Project: "shop"}}
}

// failing is a reader whose every read fails.
type failing struct{ client.Reader }

func (failing) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache not synced")
}

func statusOf(t *testing.T, err error) metav1.Status {
	t.Helper()
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		t.Fatalf("%v is not an API status", err)
	}
	return se.Status()
}

// TestValidatorsConfirmOnTheAPIServer: a refusal that rests on the cache is made only
// if the API server agrees; the cache may be a few milliseconds behind.
func TestValidatorsConfirmOnTheAPIServer(t *testing.T) {
	ctx := as("admin", "system:masters")

	// read-only was created a moment ago: the cache has not seen it yet.
	v := RoleTemplateValidator{Readers: Readers{Cache: reader(t), Live: reader(t, template("read-only"))}}
	if _, err := v.ValidateCreate(ctx, template("project-member", "read-only")); err != nil {
		t.Fatalf("a parent the cache has not seen yet: %v", err)
	}
	// Neither knows it: refused, 422 with the field.
	v = RoleTemplateValidator{Readers: Readers{Cache: reader(t), Live: reader(t)}}
	_, err := v.ValidateCreate(ctx, template("project-member", "read-only"))
	st := statusOf(t, err)
	if st.Code != http.StatusUnprocessableEntity || st.Reason != metav1.StatusReasonInvalid ||
		st.Message != `RoleTemplate "project-member" is invalid: spec.inherits[0]: RoleTemplate "read-only" does not exist; create it first` ||
		len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != "spec.inherits[0]" || st.Details.Causes[0].Type != metav1.CauseTypeFieldValueNotFound {
		t.Fatalf("status: %+v", st)
	}
	// An update that adds nothing to spec.inherits reads nothing.
	v = RoleTemplateValidator{Readers: Readers{Cache: failing{}, Live: failing{}}}
	if _, err := v.ValidateUpdate(ctx, template("a", "gone"), template("a", "gone")); err != nil {
		t.Fatalf("update without new parents: %v", err)
	}
	// A read that fails refuses with 503, so that clients retry.
	_, err = v.ValidateCreate(ctx, template("a", "b"))
	if st := statusOf(t, err); st.Code != http.StatusServiceUnavailable {
		t.Fatalf("failed read: %+v", st)
	}

	// The binding was deleted a moment ago: the cache still has it.
	v = RoleTemplateValidator{Readers: Readers{Cache: reader(t, binding("devs", "project-member")), Live: reader(t)}}
	if _, err := v.ValidateDelete(ctx, template("project-member")); err != nil {
		t.Fatalf("a binding only the cache still has: %v", err)
	}
	// Still granted: refused, naming the bindings and the way out.
	both := []client.Object{binding("devs", "project-member"), binding("ops", "project-member"), binding("other", "read-only")}
	v = RoleTemplateValidator{Readers: Readers{Cache: reader(t, both...), Live: reader(t, both...)}}
	_, err = v.ValidateDelete(ctx, template("project-member"))
	if st := statusOf(t, err); st.Code != http.StatusForbidden || !strings.Contains(st.Message, "2 AccessBindings still grant it: devs, ops") ||
		!strings.Contains(st.Message, `management.drover.io/force-delete: "true"`) {
		t.Fatalf("delete of a granted template: %+v", st)
	}
	forced := template("project-member")
	forced.Annotations = map[string]string{ForceDeleteAnnotation: "true"}
	w, err := v.ValidateDelete(ctx, forced)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "2 AccessBindings still grant it") {
		t.Fatalf("forced delete: %v, warnings %q", err, w)
	}
	forced.Annotations[ForceDeleteAnnotation] = "yes"
	if _, err := v.ValidateDelete(ctx, forced); err == nil {
		t.Fatal("only \"true\" forces a delete")
	}

	// A namespace whose project was deleted a moment ago is free.
	p := ClusterProjectValidator{Namespace: "drover-system", Readers: Readers{Cache: reader(t, &v1alpha1.ClusterProject{
		ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: v1alpha1.ClusterProjectSpec{Namespaces: nss("shop")}}), Live: reader(t)}}
	newProject := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "new"}, Spec: v1alpha1.ClusterProjectSpec{Namespaces: nss("shop")}}
	if _, err := p.ValidateCreate(ctx, newProject); err != nil {
		t.Fatalf("a namespace only the cache still gives another project: %v", err)
	}
	// Never-managed namespaces need no reads.
	p = ClusterProjectValidator{Namespace: "ops", Readers: Readers{Cache: failing{}, Live: failing{}}}
	_, err = p.ValidateCreate(ctx, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.ClusterProjectSpec{Namespaces: nss("a", "ops")}})
	if st := statusOf(t, err); st.Code != http.StatusUnprocessableEntity || !strings.Contains(st.Message, `spec.namespaces[1].name: namespace "ops" is never managed by Drover`) {
		t.Fatalf("operator namespace: %+v", st)
	}
	// Metadata-only updates (labels, finalizers) are never refused, whatever the spec holds.
	bad := &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.ClusterProjectSpec{Namespaces: nss("ops")}}
	relabelled := bad.DeepCopy()
	relabelled.Labels = map[string]string{"team": "x"}
	if _, err := p.ValidateUpdate(ctx, bad, relabelled); err != nil {
		t.Fatalf("metadata-only update: %v", err)
	}
	anon := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "anon"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "system:unauthenticated"}}}}
	if _, err := (AccessBindingValidator{}).ValidateUpdate(ctx, anon, anon); err != nil {
		t.Fatalf("metadata-only update of a binding: %v", err)
	}
	_, err = AccessBindingValidator{}.ValidateCreate(ctx, anon)
	if st := statusOf(t, err); st.Code != http.StatusUnprocessableEntity || st.Details.Causes[0].Field != "spec.subjects[0]" {
		t.Fatalf("anonymous subject: %+v", st)
	}
}

// TestConfigManifests keeps config/webhook/manifests.yaml, which installs the webhook
// in a cluster, in step with the configuration the manager registers itself.
func TestConfigManifests(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var installed admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &installed); err != nil {
		t.Fatal(err)
	}
	want := Configuration(DefaultConfigurationName, func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: "drover-system", Name: ServiceName, Path: ptr.To(path), Port: ptr.To[int32](443)}}
	})
	if installed.Name != want.Name {
		t.Errorf("name %q, want %q", installed.Name, want.Name)
	}
	got, _ := yaml.Marshal(installed.Webhooks)
	exp, _ := yaml.Marshal(want.Webhooks)
	if string(got) != string(exp) {
		t.Errorf("config/webhook/manifests.yaml:\n%s\nadmission.Configuration:\n%s", got, exp)
	}
}
