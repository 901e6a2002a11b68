package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/admission"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// Sizes of the hub the admission benchmark checks against.
const (
	admProjects = 20
	admBindings = 400
	admRequests = 300
)

// BenchmarkAdmission measures the admission webhook's latency per request, as the
// hub's API server sees it (an AdmissionReview POSTed over TLS to the manager's
// webhook listener), on a hub holding admProjects ClusterProjects and admBindings
// AccessBindings, for each path a request can take:
//
//   - masters: a system:masters requester, checked for nothing but validity;
//   - holder: a project owner granting project-member in their project, allowed
//     from the cache (the holding path, no SubjectAccessReview);
//   - bind: a user with bind granting cluster-owner on a selector, allowed by one
//     SubjectAccessReview;
//   - denied: a user with neither, refused after the holding check, a
//     SubjectAccessReview and the confirming reads of the API server (the slowest
//     path);
//   - template: a RoleTemplate edit that adds a rule, by a user without escalate who
//     holds nothing, refused after checking every binding of the template (and of
//     the template inheriting it), a SubjectAccessReview and the confirming reads.
//
// Target: p99 well under the webhook's 5 s timeout, and low enough that it is no
// noticeable part of a kubectl apply (a few milliseconds).
func BenchmarkAdmission(b *testing.B) {
	e := setup(b, 0)
	ctx := context.Background()
	p := e.startManager(b)

	// The hub: projects, each owned by one user, and bindings that make the
	// holding path search a realistic list.
	var objs []client.Object
	for i := range admProjects {
		name := fmt.Sprintf("adm-p%d", i)
		objs = append(objs, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterProjectSpec{
			Clusters: v1alpha1.ClusterSelection{Names: []string{"adm-c1", "adm-c2"}}, Namespaces: []v1alpha1.ProjectNamespace{{Name: name + "-a"}}}})
	}
	objs = append(objs, &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "adm-member"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextProject,
		Rules:   []v1alpha1.PolicyRule{{APIGroups: []string{"", "apps"}, Resources: []string{"pods", "deployments", "services"}, Verbs: []string{"*"}}}}})
	objs = append(objs, &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "adm-owner"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextProject, Inherits: []string{"adm-member"},
		Rules: []v1alpha1.PolicyRule{{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"rolebindings"}, Verbs: []string{"*"}}}}})
	objs = append(objs, &v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: "adm-all"}, Spec: v1alpha1.RoleTemplateSpec{
		Context: v1alpha1.ContextCluster, Rules: []v1alpha1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}}})
	for i := range admBindings {
		role, project := "adm-member", fmt.Sprintf("adm-p%d", i%admProjects)
		subject := v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: fmt.Sprintf("dev-%d", i)}
		if i < admProjects {
			role, subject = "adm-owner", v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: fmt.Sprintf("owner-%d", i)}
		}
		objs = append(objs, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("adm-b%d", i)}, Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{subject}, RoleRef: v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: role}, Project: project}})
	}
	// binder may bind adm-all on the hub.
	objs = append(objs,
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "adm-bind-all"}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"roletemplates"}, ResourceNames: []string{"adm-all"}, Verbs: []string{"bind"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "adm-binder"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "adm-bind-all"},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "binder"}}})
	for _, o := range objs {
		if err := e.hubc.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for i := len(objs) - 1; i >= 0; i-- {
			_ = e.hubc.Delete(ctx, objs[i])
		}
	})

	post := webhookPoster(b, e, p)
	// Let the manager's cache see everything, then warm the connections up.
	time.Sleep(2 * time.Second)
	binding := func(name, role, project string, clusters *v1alpha1.ClusterSelection) *v1alpha1.AccessBinding {
		return &v1alpha1.AccessBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AccessBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.AccessBindingSpec{Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "newcomer"}},
				RoleRef: v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: role}, Project: project, Clusters: clusters}}
	}
	everywhere := &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}}
	owner := &v1alpha1.RoleTemplate{}
	if err := e.hubc.Get(ctx, client.ObjectKey{Name: "adm-member"}, owner); err != nil {
		b.Fatal(err)
	}
	widened := owner.DeepCopy()
	widened.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "RoleTemplate"}
	owner.TypeMeta = widened.TypeMeta
	widened.Spec.Rules = append(widened.Spec.Rules, v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}})

	cases := []struct {
		name    string
		path    string
		user    authenticationv1.UserInfo
		op      admissionv1.Operation
		obj     runtime.Object
		old     runtime.Object
		allowed bool
	}{
		{"masters", admission.AccessBindingPath, authenticationv1.UserInfo{Username: "admin", Groups: []string{"system:masters", "system:authenticated"}},
			admissionv1.Create, binding("adm-x", "adm-all", "", everywhere), nil, true},
		{"holder", admission.AccessBindingPath, authenticationv1.UserInfo{Username: "owner-7", Groups: []string{"system:authenticated"}},
			admissionv1.Create, binding("adm-x", "adm-member", "adm-p7", nil), nil, true},
		{"bind", admission.AccessBindingPath, authenticationv1.UserInfo{Username: "binder", Groups: []string{"system:authenticated"}},
			admissionv1.Create, binding("adm-x", "adm-all", "", everywhere), nil, true},
		{"denied", admission.AccessBindingPath, authenticationv1.UserInfo{Username: "dev-100", Groups: []string{"system:authenticated"}},
			admissionv1.Create, binding("adm-x", "adm-owner", "adm-p3", nil), nil, false},
		{"template", admission.RoleTemplatePath, authenticationv1.UserInfo{Username: "admin-ish", Groups: []string{"system:authenticated"}},
			admissionv1.Update, widened, owner, false},
	}
	b.ResetTimer()
	for _, c := range cases {
		for range 20 { // warm-up
			post(c.path, c.op, c.user, c.obj, c.old)
		}
		samples := make([]time.Duration, 0, admRequests)
		for range admRequests {
			start := time.Now()
			allowed, msg := post(c.path, c.op, c.user, c.obj, c.old)
			samples = append(samples, time.Since(start))
			if allowed != c.allowed {
				b.Fatalf("%s: allowed=%v (%s); want %v", c.name, allowed, msg, c.allowed)
			}
		}
		b.ReportMetric(ms(percentile(samples, 0.5)), c.name+"-p50-ms")
		b.ReportMetric(ms(percentile(samples, 0.99)), c.name+"-p99-ms")
		b.Logf("%-8s %d requests: p50 %.2f ms, p99 %.2f ms, max %.2f ms", c.name, len(samples),
			ms(percentile(samples, 0.5)), ms(percentile(samples, 0.99)), ms(percentile(samples, 1)))
	}
}

// webhookPoster returns a func that sends one AdmissionReview to the manager's
// webhook, as the hub's API server does, and returns its verdict.
func webhookPoster(b *testing.B, e *env, p *managerProc) func(path string, op admissionv1.Operation, user authenticationv1.UserInfo, obj, old runtime.Object) (bool, string) {
	b.Helper()
	var secret corev1.Secret
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.hubc.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: admission.TLSSecretName}, &secret)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("secret %s: %v", admission.TLSSecretName, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(secret.Data["ca.crt"])
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	raw := func(o runtime.Object) runtime.RawExtension {
		if o == nil {
			return runtime.RawExtension{}
		}
		data, err := json.Marshal(o)
		if err != nil {
			b.Fatal(err)
		}
		return runtime.RawExtension{Raw: data}
	}
	n := 0
	return func(path string, op admissionv1.Operation, user authenticationv1.UserInfo, obj, old runtime.Object) (bool, string) {
		n++
		review := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID: types.UID(fmt.Sprintf("bench-%d", n)), Operation: op, UserInfo: user,
				Kind:     metav1.GroupVersionKind{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Kind: obj.GetObjectKind().GroupVersionKind().Kind},
				Resource: metav1.GroupVersionResource{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version},
				Object:   raw(obj), OldObject: raw(old),
			},
		}
		body, err := json.Marshal(review)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := hc.Post("https://"+p.webhookAddr+path, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var out admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
			b.Fatalf("webhook answered %s: %v", resp.Status, err)
		}
		msg := ""
		if out.Response.Result != nil {
			msg = out.Response.Result.Message
		}
		return out.Response.Allowed, msg
	}
}
