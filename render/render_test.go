package render

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

func tmpl(name string, ctx v1alpha1.RoleTemplateContext, inherits []string, resources ...string) v1alpha1.RoleTemplate {
	t := v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RoleTemplateSpec{Context: ctx, Inherits: inherits}}
	for _, r := range resources {
		t.Spec.Rules = append(t.Spec.Rules, v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{r}, Verbs: []string{"get"}})
	}
	return t
}

func clusterBinding(name, template string, sel v1alpha1.ClusterSelection) v1alpha1.AccessBinding {
	return v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: template},
		Clusters: &sel,
	}}
}

func projectBinding(name, template, project string) v1alpha1.AccessBinding {
	return v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "devs"}, {Kind: v1alpha1.SubjectServiceAccount, Name: "ci", Namespace: "tools"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: template},
		Project:  project,
	}}
}

func project(name string, sel v1alpha1.ClusterSelection, namespaces ...string) v1alpha1.ClusterProject {
	p := v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterProjectSpec{Clusters: sel}}
	for _, n := range namespaces {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: n})
	}
	return p
}

func names(objs []client.Object) []string {
	var out []string
	for _, o := range objs {
		k := ""
		switch o.(type) {
		case *corev1.Namespace:
			k = "ns"
		case *rbacv1.ClusterRole:
			k = "cr"
		case *rbacv1.ClusterRoleBinding:
			k = "crb"
		case *rbacv1.RoleBinding:
			k = "rb"
		}
		if o.GetNamespace() != "" {
			out = append(out, k+":"+o.GetNamespace()+"/"+o.GetName())
		} else {
			out = append(out, k+":"+o.GetName())
		}
	}
	return out
}

var prod = Cluster{Name: "prod-1", Labels: map[string]string{"env": "prod"}}

func byLabel(env string) v1alpha1.ClusterSelection {
	return v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": env}}}
}

func TestRender(t *testing.T) {
	cases := []struct {
		name string
		in   Intents
		want []string
	}{
		{
			name: "every template becomes a ClusterRole, even unbound",
			in:   Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("b", v1alpha1.ContextCluster, nil, "pods"), tmpl("a", v1alpha1.ContextProject, nil, "pods")}},
			want: []string{"cr:drover:a", "cr:drover:b"},
		},
		{
			name: "cluster binding selected by label",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("owner", v1alpha1.ContextCluster, nil, "pods")},
				AccessBindings: []v1alpha1.AccessBinding{clusterBinding("ops", "owner", byLabel("prod"))}},
			want: []string{"cr:drover:owner", "crb:drover:ops"},
		},
		{
			name: "cluster binding selected by name",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("owner", v1alpha1.ContextCluster, nil, "pods")},
				AccessBindings: []v1alpha1.AccessBinding{clusterBinding("ops", "owner", v1alpha1.ClusterSelection{Names: []string{"prod-1"}})}},
			want: []string{"cr:drover:owner", "crb:drover:ops"},
		},
		{
			name: "cluster binding not selected",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("owner", v1alpha1.ContextCluster, nil, "pods")},
				AccessBindings: []v1alpha1.AccessBinding{clusterBinding("ops", "owner", byLabel("dev")), clusterBinding("x", "owner", v1alpha1.ClusterSelection{Names: []string{"other"}})}},
			want: []string{"cr:drover:owner"},
		},
		{
			name: "empty selector selects every cluster",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("owner", v1alpha1.ContextCluster, nil, "pods")},
				AccessBindings: []v1alpha1.AccessBinding{clusterBinding("all", "owner", v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{}})}},
			want: []string{"cr:drover:owner", "crb:drover:all"},
		},
		{
			name: "project binding lands in each namespace of a placed project",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("member", v1alpha1.ContextProject, nil, "pods")},
				Projects:       []v1alpha1.ClusterProject{project("shop", byLabel("prod"), "shop-db", "shop-api"), project("elsewhere", byLabel("dev"), "dev-ns")},
				AccessBindings: []v1alpha1.AccessBinding{projectBinding("devs", "member", "shop"), projectBinding("others", "member", "elsewhere")}},
			want: []string{"ns:shop-api", "ns:shop-db", "cr:drover:member", "rb:shop-db/drover:devs", "rb:shop-api/drover:devs"},
		},
		{
			name: "context mismatch renders no binding",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("member", v1alpha1.ContextProject, nil, "pods"), tmpl("owner", v1alpha1.ContextCluster, nil, "pods")},
				Projects:       []v1alpha1.ClusterProject{project("shop", byLabel("prod"), "shop-api")},
				AccessBindings: []v1alpha1.AccessBinding{clusterBinding("wrong1", "member", byLabel("prod")), projectBinding("wrong2", "owner", "shop")}},
			want: []string{"ns:shop-api", "cr:drover:member", "cr:drover:owner"},
		},
		{
			name: "missing template or project renders no binding",
			in: Intents{AccessBindings: []v1alpha1.AccessBinding{clusterBinding("b1", "nope", byLabel("prod")), projectBinding("b2", "nope", "nope")},
				RoleTemplates: []v1alpha1.RoleTemplate{tmpl("member", v1alpha1.ContextProject, nil, "pods")}},
			want: []string{"cr:drover:member"},
		},
		{
			name: "a cycle renders neither the templates in it nor their bindings",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("a", v1alpha1.ContextCluster, []string{"b"}), tmpl("b", v1alpha1.ContextCluster, []string{"a"}), tmpl("c", v1alpha1.ContextCluster, nil, "pods")},
				AccessBindings: []v1alpha1.AccessBinding{clusterBinding("ab", "a", byLabel("prod"))}},
			want: []string{"cr:drover:c"},
		},
		{
			name: "ClusterRole roleRef binds the named role",
			in: Intents{AccessBindings: []v1alpha1.AccessBinding{func() v1alpha1.AccessBinding {
				b := clusterBinding("viewers", "view", byLabel("prod"))
				b.Spec.RoleRef.Kind = v1alpha1.RoleRefClusterRole
				return b
			}()}},
			want: []string{"crb:drover:viewers"},
		},
		{
			name: "objects being deleted are not rendered",
			in: Intents{RoleTemplates: []v1alpha1.RoleTemplate{func() v1alpha1.RoleTemplate {
				t := tmpl("gone", v1alpha1.ContextCluster, nil, "pods")
				t.DeletionTimestamp = &metav1.Time{}
				t.DeletionTimestamp = ptrTime()
				return t
			}()}},
			want: nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := Render(prod, tc.in)
			if got := names(res.Objects); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
			for _, o := range res.Objects {
				if o.GetLabels()[ManagedByLabel] != ManagedByValue {
					t.Errorf("%s lacks the ownership label", o.GetName())
				}
				if _, ns := o.(*corev1.Namespace); !ns && !strings.HasPrefix(o.GetName(), NamePrefix) {
					t.Errorf("%s is not named drover:...", o.GetName())
				}
			}
		})
	}
}

func ptrTime() *metav1.Time {
	t := metav1.Now()
	return &t
}

func TestRenderObjects(t *testing.T) {
	in := Intents{
		RoleTemplates: []v1alpha1.RoleTemplate{tmpl("member", v1alpha1.ContextProject, []string{"read"}, "pods", "services"), tmpl("read", v1alpha1.ContextProject, nil, "pods", "configmaps")},
		Projects:      []v1alpha1.ClusterProject{project("shop", byLabel("prod"), "shop-api")},
		AccessBindings: []v1alpha1.AccessBinding{projectBinding("devs", "member", "shop"), func() v1alpha1.AccessBinding {
			b := clusterBinding("viewers", "view", byLabel("prod"))
			b.Spec.RoleRef.Kind = v1alpha1.RoleRefClusterRole
			return b
		}()},
	}
	in.Projects[0].Spec.Namespaces[0].Labels = map[string]string{"team": "shop"}
	in.Projects[0].Spec.Namespaces[0].Adopt = true
	res := Render(prod, in)
	var role *rbacv1.ClusterRole
	var rb *rbacv1.RoleBinding
	var crb *rbacv1.ClusterRoleBinding
	var ns *corev1.Namespace
	for _, o := range res.Objects {
		switch v := o.(type) {
		case *rbacv1.ClusterRole:
			if v.Name == "drover:member" {
				role = v
			}
		case *rbacv1.RoleBinding:
			rb = v
		case *rbacv1.ClusterRoleBinding:
			crb = v
		case *corev1.Namespace:
			ns = v
		}
	}
	// Flattened: own rules first, then inherited ones, duplicates dropped.
	var got []string
	for _, r := range role.Rules {
		got = append(got, r.Resources[0])
	}
	if want := []string{"pods", "services", "configmaps"}; !reflect.DeepEqual(got, want) {
		t.Errorf("rules %v, want %v", got, want)
	}
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "drover:member"}) {
		t.Errorf("roleRef %+v", rb.RoleRef)
	}
	wantSubjects := []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "devs"}, {Kind: "ServiceAccount", Name: "ci", Namespace: "tools"}}
	if !reflect.DeepEqual(rb.Subjects, wantSubjects) {
		t.Errorf("subjects %+v", rb.Subjects)
	}
	if rb.Labels[AccessBindingLabel] != "devs" || rb.Labels[ProjectLabel] != "shop" || rb.Labels[RoleTemplateLabel] != "member" {
		t.Errorf("labels %v", rb.Labels)
	}
	if crb.RoleRef.Name != "view" || res.ClusterRoleRefs["viewers"] != "view" {
		t.Errorf("ClusterRole ref: %+v %v", crb.RoleRef, res.ClusterRoleRefs)
	}
	if ns.Labels["team"] != "shop" || ns.Labels[ProjectLabel] != "shop" || ns.Annotations[NamespaceDeletionPolicyAnnotation] != "Retain" {
		t.Errorf("namespace %v %v", ns.Labels, ns.Annotations)
	}
	if !res.Adoptable["shop-api"] {
		t.Error("shop-api should be adoptable")
	}
	if !reflect.DeepEqual(res.Bindings, []string{"devs", "viewers"}) || !reflect.DeepEqual(res.Projects, []string{"shop"}) {
		t.Errorf("bindings %v projects %v", res.Bindings, res.Projects)
	}
}

func TestProblems(t *testing.T) {
	templates := ResolveTemplates([]v1alpha1.RoleTemplate{
		tmpl("a", v1alpha1.ContextCluster, []string{"b"}), tmpl("b", v1alpha1.ContextCluster, []string{"c"}), tmpl("c", v1alpha1.ContextCluster, []string{"a"}),
		tmpl("orphan", v1alpha1.ContextCluster, []string{"ghost"}), tmpl("indirect", v1alpha1.ContextCluster, []string{"orphan"}),
		tmpl("diamond", v1alpha1.ContextCluster, []string{"l", "r"}, "x"), tmpl("l", v1alpha1.ContextCluster, []string{"base"}, "l"),
		tmpl("r", v1alpha1.ContextCluster, []string{"base"}, "r"), tmpl("base", v1alpha1.ContextCluster, nil, "x"),
	})
	cases := []struct{ name, reason, msg string }{
		{"a", ReasonInheritanceCycle, "a -> b -> c -> a"},
		{"c", ReasonInheritanceCycle, "c -> a -> b -> c"},
		{"orphan", ReasonTemplateNotFound, `spec.inherits: RoleTemplate "ghost" does not exist`},
		{"indirect", ReasonTemplateNotFound, `"ghost" does not exist (via indirect -> orphan)`},
		{"diamond", "", ""},
	}
	for _, tc := range cases {
		p := templates[tc.name].Problem
		switch {
		case tc.reason == "" && p != nil:
			t.Errorf("%s: unexpected problem %v", tc.name, p)
		case tc.reason != "" && (p == nil || p.Reason != tc.reason || !strings.Contains(p.Message, tc.msg)):
			t.Errorf("%s: got %+v, want %s containing %q", tc.name, p, tc.reason, tc.msg)
		}
	}
	if got := len(templates["diamond"].Rules); got != 3 {
		t.Errorf("diamond: %d rules, want 3 (x, l, r)", got)
	}

	b := clusterBinding("bad-selector", "diamond", v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: "Bogus"}}}})
	if p := BindingProblem(&b, templates, nil); p == nil || p.Reason != ReasonInvalidSelector {
		t.Errorf("bad selector: %+v", p)
	}
	pb := projectBinding("p", "diamond", "shop")
	if p := BindingProblem(&pb, templates, nil); p == nil || p.Reason != ReasonContextMismatch {
		t.Errorf("context: %+v", p)
	}

	// Subjects no one may grant a role to hold the binding, whatever else it says.
	for _, s := range []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "system:unauthenticated"}, {Kind: v1alpha1.SubjectUser, Name: "system:anonymous"}} {
		fb := clusterBinding("anon", "diamond", byLabel("prod"))
		fb.Spec.Subjects = append(fb.Spec.Subjects, s)
		if p := BindingProblem(&fb, templates, nil); p == nil || p.Reason != ReasonForbiddenSubject || !strings.HasPrefix(p.Message, "spec.subjects[1]: ") {
			t.Errorf("%s %s: %+v", s.Kind, s.Name, p)
		}
		res := Render(prod, Intents{RoleTemplates: []v1alpha1.RoleTemplate{tmpl("diamond", v1alpha1.ContextCluster, nil, "x")}, AccessBindings: []v1alpha1.AccessBinding{fb}})
		if len(res.Bindings) != 0 || !res.Hold[HeldKey(AccessBindingLabel, "anon")] {
			t.Errorf("%s %s: rendered %v, hold %v", s.Kind, s.Name, res.Bindings, res.Hold)
		}
	}
	// Look-alikes are ordinary subjects.
	for _, s := range []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "system:unauthenticated"}, {Kind: v1alpha1.SubjectGroup, Name: "system:anonymous"},
		{Kind: v1alpha1.SubjectGroup, Name: "system:authenticated"}, {Kind: v1alpha1.SubjectServiceAccount, Name: "anonymous", Namespace: "system"}} {
		if why := ForbiddenSubject(s); why != "" {
			t.Errorf("%s %s: %s", s.Kind, s.Name, why)
		}
	}
}

func TestEquivalent(t *testing.T) {
	desired := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover:x", Labels: map[string]string{ManagedByLabel: ManagedByValue}},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}}
	live := desired.DeepCopy()
	live.Labels["extra"] = "kept"
	live.Rules[0].ResourceNames = []string{}
	if !Equivalent(desired, live) {
		t.Error("extra labels and empty lists should not count as a difference")
	}
	edited := live.DeepCopy()
	edited.Rules[0].Verbs = []string{"get", "delete"}
	if Equivalent(desired, edited) {
		t.Error("edited rules must count as drift")
	}
	unlabelled := live.DeepCopy()
	delete(unlabelled.Labels, ManagedByLabel)
	if Equivalent(desired, unlabelled) {
		t.Error("a missing label must count as drift")
	}
	rb := &rbacv1.RoleBinding{RoleRef: rbacv1.RoleRef{Name: "a"}, Subjects: []rbacv1.Subject{{Kind: "User", Name: "x"}}}
	rb2 := rb.DeepCopy()
	rb2.Subjects = append(rb2.Subjects, rbacv1.Subject{Kind: "User", Name: "y"})
	if Equivalent(rb, rb2) {
		t.Error("an added subject must count as drift")
	}
	// The API server fills LimitRange defaults in (default from max, defaultRequest
	// from default): not drift.
	lr := &corev1.LimitRange{Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{Type: "Container",
		Default: corev1.ResourceList{"cpu": resource.MustParse("1")}, Max: corev1.ResourceList{"memory": resource.MustParse("1Gi")}}}}}
	lrLive := lr.DeepCopy()
	lrLive.Spec.Limits[0].Default["memory"] = resource.MustParse("1Gi")
	lrLive.Spec.Limits[0].DefaultRequest = corev1.ResourceList{"cpu": resource.MustParse("1000m"), "memory": resource.MustParse("1Gi")}
	if !Equivalent(lr, lrLive) {
		t.Error("server-filled LimitRange defaults must not count as drift")
	}
	lrEdited := lrLive.DeepCopy()
	lrEdited.Spec.Limits[0].Default["cpu"] = resource.MustParse("2")
	if Equivalent(lr, lrEdited) {
		t.Error("an edited LimitRange default must count as drift")
	}
	if Equivalent(rb, &rbacv1.ClusterRoleBinding{}) {
		t.Error("different kinds are never equivalent")
	}
}

func TestHeldOwningIntentOnly(t *testing.T) {
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
		AccessBindingLabel: "b", RoleTemplateLabel: "t", ProjectLabel: "p"}}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ProjectLabel: "p"}}}
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{RoleTemplateLabel: "t"}}}
	cases := []struct {
		name string
		hold map[string]bool
		obj  client.Object
		want bool
	}{
		{"binding held", map[string]bool{HeldKey(AccessBindingLabel, "b"): true}, rb, true},
		{"only its template held: a deleted binding still goes", map[string]bool{HeldKey(RoleTemplateLabel, "t"): true}, rb, false},
		{"only its project held: a deleted binding still goes", map[string]bool{HeldKey(ProjectLabel, "p"): true}, rb, false},
		{"project namespace, project held", map[string]bool{HeldKey(ProjectLabel, "p"): true}, ns, true},
		{"template role, template held", map[string]bool{HeldKey(RoleTemplateLabel, "t"): true}, cr, true},
		{"nothing held", nil, cr, false},
	}
	for _, c := range cases {
		if got := Held(c.hold, c.obj); got != c.want {
			t.Errorf("%s: got %v", c.name, got)
		}
	}
}

// A project whose placement cannot be evaluated keeps its claims: a younger project
// listing the same namespace does not get it meanwhile.
func TestHeldProjectKeepsItsNamespaces(t *testing.T) {
	older := project("a", v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"not a key!": "x"}}}, "data")
	older.CreationTimestamp = metav1.NewTime(metav1.Now().Add(-time.Hour))
	younger := project("b", v1alpha1.ClusterSelection{Names: []string{"c1"}}, "data", "own")
	younger.CreationTimestamp = metav1.Now()
	res := Render(Cluster{Name: "c1"}, Intents{Projects: []v1alpha1.ClusterProject{older, younger}})
	if !res.Hold[HeldKey(ProjectLabel, "a")] {
		t.Fatal("project a is not held")
	}
	for _, o := range res.Objects {
		if o.GetName() == "data" {
			t.Fatalf("namespace data was given to project %s while project a is held", o.GetLabels()[ProjectLabel])
		}
	}
	if len(res.NamespacesLost["b"]) != 1 {
		t.Fatalf("project b should be told it does not get data: %v", res.NamespacesLost)
	}
}

func TestRulesEqual(t *testing.T) {
	base := rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"}, ResourceNames: []string{"a"}, NonResourceURLs: nil}
	with := func(f func(*rbacv1.PolicyRule)) []rbacv1.PolicyRule {
		r := *base.DeepCopy()
		f(&r)
		return []rbacv1.PolicyRule{r}
	}
	cases := []struct {
		name  string
		other []rbacv1.PolicyRule
		equal bool
	}{
		{"same", with(func(*rbacv1.PolicyRule) {}), true},
		{"empty for nil", with(func(r *rbacv1.PolicyRule) { r.NonResourceURLs = []string{} }), true},
		{"verbs", with(func(r *rbacv1.PolicyRule) { r.Verbs = []string{"list"} }), false},
		{"a verb added", with(func(r *rbacv1.PolicyRule) { r.Verbs = append(r.Verbs, "list") }), false},
		{"api groups", with(func(r *rbacv1.PolicyRule) { r.APIGroups = []string{"apps"} }), false},
		{"resources", with(func(r *rbacv1.PolicyRule) { r.Resources = []string{"secrets"} }), false},
		{"resource names dropped", with(func(r *rbacv1.PolicyRule) { r.ResourceNames = nil }), false},
		{"non-resource URLs", with(func(r *rbacv1.PolicyRule) { r.NonResourceURLs = []string{"/healthz"} }), false},
		{"a rule more", append(with(func(*rbacv1.PolicyRule) {}), base), false},
		{"no rules", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := rulesEqual([]rbacv1.PolicyRule{base}, tc.other); got != tc.equal {
				t.Errorf("rulesEqual = %v, want %v", got, tc.equal)
			}
		})
	}
}
