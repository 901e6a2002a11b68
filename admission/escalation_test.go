package admission

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	cradmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// The hub of these tests: three clusters, two projects, the built-in-like templates.
//
//	prod-1, prod-2 {env: prod}; dev-1 {env: dev}
//	shop: namespaces shop-a, on prod-1 and dev-1; ads: on every prod cluster
var (
	everything = v1alpha1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}
	readPods   = v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}
	editPods   = v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"*"}}
	secrets    = v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}
	roleRBAC   = v1alpha1.PolicyRule{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"rolebindings"}, Verbs: []string{"create"}}
)

func tmpl(name string, ctx v1alpha1.RoleTemplateContext, rules []v1alpha1.PolicyRule, inherits ...string) v1alpha1.RoleTemplate {
	return v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.RoleTemplateSpec{Context: ctx, Rules: rules, Inherits: inherits}}
}

func cluster(name, env string) v1alpha1.ManagedCluster {
	return v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"env": env}}}
}

func project(name string, sel v1alpha1.ClusterSelection, namespaces ...string) v1alpha1.ClusterProject {
	p := v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ClusterProjectSpec{Clusters: sel}}
	for _, n := range namespaces {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: n})
	}
	return p
}

func grant(name string, subject v1alpha1.Subject, role string, scope func(*v1alpha1.AccessBindingSpec)) v1alpha1.AccessBinding {
	b := v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{subject}, RoleRef: v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: role}}}
	scope(&b.Spec)
	return b
}

func inProject(p string) func(*v1alpha1.AccessBindingSpec) {
	return func(s *v1alpha1.AccessBindingSpec) { s.Project = p }
}

func onClusters(names ...string) func(*v1alpha1.AccessBindingSpec) {
	return func(s *v1alpha1.AccessBindingSpec) { s.Clusters = &v1alpha1.ClusterSelection{Names: names} }
}

func onSelector(env string) func(*v1alpha1.AccessBindingSpec) {
	return func(s *v1alpha1.AccessBindingSpec) {
		s.Clusters = &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": env}}}
	}
}

var (
	user  = func(n string) v1alpha1.Subject { return v1alpha1.Subject{Kind: v1alpha1.SubjectUser, Name: n} }
	group = func(n string) v1alpha1.Subject { return v1alpha1.Subject{Kind: v1alpha1.SubjectGroup, Name: n} }
)

func hubObjects() ([]v1alpha1.RoleTemplate, []v1alpha1.AccessBinding, []v1alpha1.ClusterProject, []v1alpha1.ManagedCluster) {
	templates := []v1alpha1.RoleTemplate{
		tmpl("all-access", v1alpha1.ContextCluster, []v1alpha1.PolicyRule{everything}),
		tmpl("viewer", v1alpha1.ContextProject, []v1alpha1.PolicyRule{readPods}),
		tmpl("member", v1alpha1.ContextProject, []v1alpha1.PolicyRule{editPods}, "viewer"),
		tmpl("owner", v1alpha1.ContextProject, []v1alpha1.PolicyRule{roleRBAC}, "member"),
		tmpl("secret-reader", v1alpha1.ContextProject, []v1alpha1.PolicyRule{secrets}),
	}
	bindings := []v1alpha1.AccessBinding{
		grant("carol-owns-shop", user("carol"), "owner", inProject("shop")),
		grant("ops-own-prod-1", group("ops"), "all-access", onClusters("prod-1")),
		grant("dave-views-ads", user("dave"), "viewer", inProject("ads")),
		grant("erin-owns-prod", user("erin"), "all-access", onSelector("prod")),
		grant("root-owns-all", user("root"), "all-access", onClusters("prod-1", "prod-2", "dev-1")),
	}
	projects := []v1alpha1.ClusterProject{
		project("shop", v1alpha1.ClusterSelection{Names: []string{"prod-1", "dev-1"}}, "shop-a"),
		project("ads", v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}, "ads-a"),
		project("new", v1alpha1.ClusterSelection{Names: []string{"nowhere"}}, "new-a"),
	}
	clusters := []v1alpha1.ManagedCluster{cluster("prod-1", "prod"), cluster("prod-2", "prod"), cluster("dev-1", "dev")}
	return templates, bindings, projects, clusters
}

func TestTargetIdentity(t *testing.T) {
	for _, tc := range []struct {
		user   string
		groups []string
		want   Requester
	}{
		{"alice", []string{"devs", "system:authenticated", "system:masters"}, Requester{"alice", []string{"devs", "system:authenticated"}}},
		{"system:serviceaccount:ci:deployer", []string{"system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"},
			Requester{"drover:hub:system:serviceaccount:ci:deployer", []string{"system:authenticated"}}},
		{"bob", nil, Requester{User: "bob"}},
	} {
		if got := TargetIdentity(tc.user, tc.groups); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("TargetIdentity(%q, %q) = %+v; want %+v", tc.user, tc.groups, got, tc.want)
		}
	}
}

func TestScope(t *testing.T) {
	s := NewState(hubObjects())
	for _, tc := range []struct {
		name     string
		spec     v1alpha1.AccessBindingSpec
		want     []Place
		openEnds string
	}{
		{"project on named clusters", grant("x", user("u"), "viewer", inProject("shop")).Spec,
			[]Place{{"dev-1", "shop"}, {"prod-1", "shop"}}, ""},
		{"project on a selector: the clusters it selects now", grant("x", user("u"), "viewer", inProject("ads")).Spec,
			[]Place{{"prod-1", "ads"}, {"prod-2", "ads"}}, ""},
		{"project placed nowhere yet", grant("x", user("u"), "viewer", inProject("new")).Spec, []Place{{Project: "new"}}, ""},
		{"project that does not exist", grant("x", user("u"), "viewer", inProject("ghost")).Spec, nil, `ClusterProject "ghost" does not exist`},
		{"named clusters, one not registered yet", grant("x", user("u"), "viewer", onClusters("prod-1", "later")).Spec,
			[]Place{{Cluster: "prod-1"}, {Cluster: "later"}}, ""},
		{"a selector is open-ended", grant("x", user("u"), "viewer", onSelector("dev")).Spec, nil, "spec.clusters.selector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, open := s.Scope(tc.spec)
			if !reflect.DeepEqual(got, tc.want) || !strings.Contains(open, tc.openEnds) || (tc.openEnds == "") != (open == "") {
				t.Fatalf("Scope = %v, %q; want %v, %q", got, open, tc.want, tc.openEnds)
			}
		})
	}
}

func TestLacks(t *testing.T) {
	s := NewState(hubObjects())
	rules := func(name string) []rbacv1.PolicyRule { return s.Templates[name].Rules }
	ops := Requester{User: "olga", Groups: []string{"ops"}}
	for _, tc := range []struct {
		name   string
		who    Requester
		places []Place
		want   []rbacv1.PolicyRule
		// lacking lists the places where something is missing.
		lacking []Place
	}{
		{"a project owner holds member in its project, everywhere it is placed",
			Requester{User: "carol"}, []Place{{"prod-1", "shop"}, {"dev-1", "shop"}}, rules("member"), nil},
		{"a project owner holds owner itself (inherited rules included)",
			Requester{User: "carol"}, []Place{{"prod-1", "shop"}}, rules("owner"), nil},
		{"but nothing in another project",
			Requester{User: "carol"}, []Place{{"prod-1", "ads"}}, rules("viewer"), []Place{{"prod-1", "ads"}}},
		{"nor cluster-wide",
			Requester{User: "carol"}, []Place{{Cluster: "prod-1"}}, rules("viewer"), []Place{{Cluster: "prod-1"}}},
		{"nor what it was not given",
			Requester{User: "carol"}, []Place{{"prod-1", "shop"}}, rules("secret-reader"), []Place{{"prod-1", "shop"}}},
		{"a project's own bindings follow it where it is not placed yet",
			Requester{User: "carol"}, []Place{{Project: "shop"}}, rules("viewer"), nil},
		{"a cluster owner (through a group) holds everything there, in every project",
			ops, []Place{{Cluster: "prod-1"}, {"prod-1", "ads"}}, rules("all-access"), nil},
		{"but not on another cluster",
			ops, []Place{{Cluster: "prod-1"}, {Cluster: "prod-2"}, {"prod-2", "ads"}}, rules("viewer"), []Place{{Cluster: "prod-2"}, {"prod-2", "ads"}}},
		{"a selector-bound owner holds everything in the clusters it selects now",
			Requester{User: "erin"}, []Place{{Cluster: "prod-2"}}, rules("all-access"), nil},
		{"but not in a cluster that is not registered yet (its labels are not known)",
			Requester{User: "erin"}, []Place{{Cluster: "later"}}, rules("viewer"), []Place{{Cluster: "later"}}},
		{"a stranger holds nothing",
			Requester{User: "mallory", Groups: []string{"system:authenticated"}}, []Place{{"prod-1", "shop"}}, rules("viewer"), []Place{{"prod-1", "shop"}}},
		{"nothing wanted, nothing lacking",
			Requester{User: "mallory"}, []Place{{Cluster: "prod-1"}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Place
			for _, sf := range s.Lacks(tc.who, tc.places, tc.want) {
				if len(sf.Missing) == 0 {
					t.Errorf("a shortfall at %s names no rule", sf.Place)
				}
				got = append(got, sf.Place)
			}
			if !reflect.DeepEqual(got, tc.lacking) {
				t.Fatalf("lacking at %v; want %v", got, tc.lacking)
			}
		})
	}
}

// A ServiceAccount subject is the target's; a ClusterRole's rules are the target's:
// neither counts as holding anything at the hub.
func TestLacksCountsOnlyWhatTheHubKnows(t *testing.T) {
	templates, bindings, projects, clusters := hubObjects()
	b := grant("sa-owns", v1alpha1.Subject{Kind: v1alpha1.SubjectServiceAccount, Namespace: "ci", Name: "deployer"}, "all-access", onClusters("prod-1"))
	cr := grant("frank-admin", user("frank"), "cluster-admin", onClusters("prod-1"))
	cr.Spec.RoleRef.Kind = v1alpha1.RoleRefClusterRole
	s := NewState(templates, append(bindings, b, cr), projects, clusters)
	sa := TargetIdentity("system:serviceaccount:ci:deployer", nil)
	if sf := s.Lacks(sa, []Place{{Cluster: "prod-1"}}, s.Templates["viewer"].Rules); len(sf) != 1 {
		t.Errorf("a hub ServiceAccount holds what a target's ServiceAccount of the same name holds: %v", sf)
	}
	if sf := s.Lacks(Requester{User: "frank"}, []Place{{Cluster: "prod-1"}}, s.Templates["viewer"].Rules); len(sf) != 1 {
		t.Errorf("a ClusterRole binding counted as holding rules: %v", sf)
	}
}

func TestAddedAndInheritors(t *testing.T) {
	pods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}
	all := rbacv1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}
	if got := Added([]rbacv1.PolicyRule{all}, []rbacv1.PolicyRule{pods}); len(got) != 0 {
		t.Errorf("narrowing added %v", got)
	}
	if got := Added([]rbacv1.PolicyRule{pods}, []rbacv1.PolicyRule{pods, all}); !reflect.DeepEqual(got, []rbacv1.PolicyRule{all}) {
		t.Errorf("Added = %v", got)
	}
	if got := Added(nil, []rbacv1.PolicyRule{pods}); !reflect.DeepEqual(got, []rbacv1.PolicyRule{pods}) {
		t.Errorf("Added from nothing = %v", got)
	}
	got := Inheritors("base", map[string][]string{"base": nil, "mid": {"base"}, "top": {"mid"}, "other": {"x"}, "loop": {"loop"}})
	if want := map[string]bool{"base": true, "mid": true, "top": true}; !reflect.DeepEqual(got, want) {
		t.Errorf("Inheritors = %v; want %v", got, want)
	}
}

func TestFormatRule(t *testing.T) {
	for _, tc := range []struct {
		r    rbacv1.PolicyRule
		want string
	}{
		{rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}, `apiGroups=[""] resources=[secrets] verbs=[get]`},
		{rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{"web"}, Verbs: []string{"patch"}},
			`apiGroups=[apps] resources=[deployments] resourceNames=[web] verbs=[patch]`},
		{rbacv1.PolicyRule{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}, `nonResourceURLs=[/metrics] verbs=[get]`},
	} {
		if got := FormatRule(tc.r); got != tc.want {
			t.Errorf("FormatRule = %s; want %s", got, tc.want)
		}
	}
}

// authz answers as the hub would for the permissions it lists ("verb resource/name").
type authz struct {
	allowed map[string]bool
	asked   []string
	err     error
}

func (a *authz) Allowed(_ context.Context, _ authenticationv1.UserInfo, attrs authorizationv1.ResourceAttributes) (bool, error) {
	key := attrs.Verb + " " + attrs.Resource + "/" + attrs.Name
	a.asked = append(a.asked, key)
	return a.allowed[key], a.err
}

// as returns ctx carrying an admission request made by user in groups.
func as(user string, groups ...string) context.Context {
	return cradmission.NewContextWithRequest(context.Background(), cradmission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UserInfo: authenticationv1.UserInfo{Username: user, Groups: append(groups, "system:authenticated")}}})
}

func hubReader(t *testing.T, extra ...client.Object) client.Reader {
	templates, bindings, projects, clusters := hubObjects()
	var objs []client.Object
	for i := range templates {
		objs = append(objs, &templates[i])
	}
	for i := range bindings {
		objs = append(objs, &bindings[i])
	}
	for i := range projects {
		objs = append(objs, &projects[i])
	}
	for i := range clusters {
		objs = append(objs, &clusters[i])
	}
	return reader(t, append(objs, extra...)...)
}

func TestAccessBindingEscalation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		binding v1alpha1.AccessBinding
		allowed map[string]bool
		// refused is empty when allowed, else what the message must say.
		refused []string
		// asked: whether the hub was asked about bind.
		asked bool
	}{
		{name: "system:masters is never hindered, nor asked about",
			ctx: as("admin", "system:masters"), binding: grant("x", user("mallory"), "all-access", onSelector("prod"))},
		{name: "a user without bind or holdings is refused all-access, with the missing rule",
			ctx: as("mallory"), binding: grant("x", user("mallory"), "all-access", onClusters("prod-1")), asked: true,
			refused: []string{`granting RoleTemplate "all-access" needs the hub permission "bind" on roletemplates.management.drover.io/all-access, which mallory does not have`,
				`cluster-wide in cluster "prod-1" you lack apiGroups=[*] resources=[*] verbs=[*]`, "docs/admission.md"}},
		{name: "and allowed with bind on it", allowed: map[string]bool{"bind roletemplates/all-access": true},
			ctx: as("mallory"), binding: grant("x", user("mallory"), "all-access", onSelector("prod")), asked: true},
		{name: "a project owner grants member in its project without asking the hub",
			ctx: as("carol"), binding: grant("x", user("newbie"), "member", inProject("shop"))},
		{name: "but not owner's superset elsewhere: another project",
			ctx: as("carol"), binding: grant("x", user("newbie"), "member", inProject("ads")), asked: true,
			refused: []string{`in the namespaces of project "ads" on cluster "prod-1" you lack apiGroups=[""] resources=[pods] verbs=[*]`}},
		{name: "nor all-access anywhere",
			ctx: as("carol"), binding: grant("x", user("newbie"), "all-access", onClusters("dev-1")), asked: true,
			refused: []string{`cluster-wide in cluster "dev-1" you lack`}},
		{name: "nor a rule it does not hold, in its own project",
			ctx: as("carol"), binding: grant("x", user("newbie"), "secret-reader", inProject("shop")), asked: true,
			refused: []string{`you lack apiGroups=[""] resources=[secrets] verbs=[get]`}},
		{name: "a cluster owner (through its group) grants anything on its cluster",
			ctx: as("olga", "ops"), binding: grant("x", user("newbie"), "all-access", onClusters("prod-1"))},
		{name: "but not on a cluster it does not own, named in the same binding",
			ctx: as("olga", "ops"), binding: grant("x", user("newbie"), "viewer", onClusters("prod-1", "prod-2")), asked: true,
			refused: []string{`cluster-wide in cluster "prod-2" you lack`}},
		{name: "a selector needs bind, whatever one holds",
			ctx: as("erin"), binding: grant("x", user("newbie"), "viewer", onSelector("prod")), asked: true,
			refused: []string{"spec.clusters.selector selects every cluster that matches it, now and later"}},
		{name: "system:authenticated needs bind, even for what one holds",
			ctx: as("carol"), binding: grant("x", group("system:authenticated"), "viewer", inProject("shop")), asked: true,
			refused: []string{`spec.subjects[0]: group "system:authenticated" is every caller of its kind`}},
		{name: "system:serviceaccounts too; with bind it passes", allowed: map[string]bool{"bind roletemplates/viewer": true},
			ctx: as("carol"), binding: grant("x", group("system:serviceaccounts:ci"), "viewer", inProject("shop")), asked: true},
		{name: "a ClusterRole needs bind on the ClusterRole",
			ctx: as("olga", "ops"), binding: func() v1alpha1.AccessBinding {
				b := grant("x", user("newbie"), "cluster-admin", onClusters("prod-1"))
				b.Spec.RoleRef.Kind = v1alpha1.RoleRefClusterRole
				return b
			}(), asked: true,
			refused: []string{`"bind" on clusterroles.rbac.authorization.k8s.io/cluster-admin`, `ClusterRole "cluster-admin" is defined in each target`}},
		{name: "a template that does not exist yet needs bind",
			ctx: as("olga", "ops"), binding: grant("x", user("newbie"), "later", onClusters("prod-1")), asked: true,
			refused: []string{`RoleTemplate "later" does not exist yet`}},
		{name: "a project that does not exist yet needs bind",
			ctx: as("carol"), binding: grant("x", user("newbie"), "viewer", inProject("ghost")), asked: true,
			refused: []string{`ClusterProject "ghost" does not exist`}},
		{name: "a hub ServiceAccount holds nothing by the name of a target's",
			ctx:     as("system:serviceaccount:ci:deployer", "system:serviceaccounts"),
			binding: grant("x", user("newbie"), "viewer", inProject("shop")), asked: true, refused: []string{"you lack"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &authz{allowed: tc.allowed}
			v := AccessBindingValidator{Readers: Readers{Cache: hubReader(t), Live: hubReader(t)}, Authorizer: a}
			_, err := v.ValidateCreate(tc.ctx, &tc.binding)
			expectVerdict(t, a, err, tc.asked, tc.refused)
		})
	}
}

// An update is checked as a create when the spec changes (adding a subject is a
// grant); a change to metadata alone is not checked at all.
func TestAccessBindingEscalationOnUpdate(t *testing.T) {
	a := &authz{}
	v := AccessBindingValidator{Readers: Readers{Cache: hubReader(t)}, Authorizer: a}
	old := grant("x", user("newbie"), "all-access", onClusters("prod-1"))
	labelled := *old.DeepCopy()
	labelled.Labels = map[string]string{"team": "a"}
	if _, err := v.ValidateUpdate(as("mallory"), &old, &labelled); err != nil || len(a.asked) > 0 {
		t.Fatalf("a metadata change: %v, asked %v", err, a.asked)
	}
	more := *old.DeepCopy()
	more.Spec.Subjects = append(more.Spec.Subjects, user("mallory"))
	if _, err := v.ValidateUpdate(as("mallory"), &old, &more); err == nil {
		t.Fatal("adding oneself to a all-access binding was allowed")
	}
}

// The webhook fails closed: when the hub cannot answer, the request is refused with a
// status that clients retry on, never allowed.
func TestEscalationFailsClosed(t *testing.T) {
	a := &authz{err: errors.New("connection refused")}
	v := AccessBindingValidator{Readers: Readers{Cache: hubReader(t)}, Authorizer: a}
	b := grant("x", user("newbie"), "all-access", onClusters("prod-1"))
	_, err := v.ValidateCreate(as("mallory"), &b)
	if st := statusOf(t, err); st.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %+v; want 503", st)
	}
	v = AccessBindingValidator{Readers: Readers{Cache: failing{}}, Authorizer: &authz{}}
	if _, err := v.ValidateCreate(as("carol"), &b); statusOf(t, err).Code != http.StatusServiceUnavailable {
		t.Fatalf("with no cache: %v", err)
	}
	if _, err := v.ValidateCreate(context.Background(), &b); err == nil {
		t.Fatal("a request without its requester was allowed")
	}
}

func TestRoleTemplateEscalation(t *testing.T) {
	withRules := func(t v1alpha1.RoleTemplate, rules ...v1alpha1.PolicyRule) *v1alpha1.RoleTemplate {
		t.Spec.Rules = rules
		return &t
	}
	templates, _, _, _ := hubObjects()
	byName := map[string]v1alpha1.RoleTemplate{}
	for _, t := range templates {
		byName[t.Name] = t
	}
	builtIn := tmpl("read-only", v1alpha1.ContextProject, []v1alpha1.PolicyRule{readPods})
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		old, new *v1alpha1.RoleTemplate
		allowed  map[string]bool
		refused  []string
		asked    bool
	}{
		{name: "system:masters is never hindered",
			ctx: as("admin", "system:masters"), old: &builtIn, new: withRules(builtIn, everything)},
		{name: "a built-in template needs escalate, to add anything",
			ctx: as("olga", "ops"), old: &builtIn, new: withRules(builtIn, readPods, secrets), asked: true,
			refused: []string{`changing the rules or inheritance of RoleTemplate "read-only" needs the hub permission "escalate" on roletemplates.management.drover.io/read-only`, `is built in`}},
		{name: "and passes with it", allowed: map[string]bool{"escalate roletemplates/read-only": true},
			ctx: as("olga", "ops"), old: &builtIn, new: withRules(builtIn, everything), asked: true},
		{name: "metadata and displayName alone are never checked",
			ctx: as("mallory"), old: ptrTo(byName["viewer"]), new: func() *v1alpha1.RoleTemplate {
				t := ptrTo(byName["viewer"]).DeepCopy()
				t.Spec.DisplayName, t.Labels = "Viewer", map[string]string{"a": "b"}
				return t
			}()},
		{name: "adding * to a bound template, without escalate or holding it where it is bound",
			ctx: as("mallory"), old: ptrTo(byName["viewer"]), new: withRules(byName["viewer"], readPods, everything), asked: true,
			refused: []string{`AccessBinding "carol-owns-shop" grants it, and in the namespaces of project "shop" on cluster`, `you lack apiGroups=[*] resources=[*] verbs=[*]`}},
		{name: "removing rules adds nothing", ctx: as("mallory"), old: ptrTo(byName["member"]), new: withRules(byName["member"])},
		{name: "a template no binding grants can be changed freely: binding it is checked",
			ctx: as("mallory"), old: ptrTo(byName["secret-reader"]), new: withRules(byName["secret-reader"], everything)},
		{name: "inheriting more is adding rules, to every template that inherits this one",
			ctx: as("carol"), old: ptrTo(byName["viewer"]), new: func() *v1alpha1.RoleTemplate {
				t := ptrTo(byName["viewer"]).DeepCopy()
				t.Spec.Inherits = []string{"secret-reader"}
				return t
			}(), asked: true,
			refused: []string{`AccessBinding "carol-owns-shop" grants it`, `AccessBinding "dave-views-ads" grants it`, `resources=[secrets]`}},
		{name: "holding what is added everywhere it is bound is enough",
			ctx: as("root"), old: ptrTo(byName["viewer"]), new: withRules(byName["viewer"], readPods, secrets)},
		{name: "a template bound to an open-ended scope needs escalate",
			ctx: as("erin"), old: ptrTo(byName["all-access"]), new: withRules(byName["all-access"], everything,
				v1alpha1.PolicyRule{NonResourceURLs: []string{"*"}, Verbs: []string{"*"}}), asked: true,
			refused: []string{`AccessBinding "erin-owns-prod" grants it, and its spec.clusters.selector`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &authz{allowed: tc.allowed}
			v := RoleTemplateValidator{Readers: Readers{Cache: hubReader(t)}, Authorizer: a}
			_, err := v.ValidateUpdate(tc.ctx, tc.old, tc.new)
			expectVerdict(t, a, err, tc.asked, tc.refused)
		})
	}
}

// Creating a template that bindings already name (they were held, RoleTemplateNotFound)
// grants its rules there at once: that is checked as a change from nothing.
func TestRoleTemplateCreateForWaitingBindings(t *testing.T) {
	waiting := grant("waiting", user("newbie"), "later", onClusters("dev-1"))
	v := RoleTemplateValidator{Readers: Readers{Cache: hubReader(t, &waiting)}, Authorizer: &authz{}}
	later := tmpl("later", v1alpha1.ContextCluster, []v1alpha1.PolicyRule{secrets})
	_, err := v.ValidateCreate(as("olga", "ops"), &later)
	if err == nil || !strings.Contains(err.Error(), `AccessBinding "waiting" grants it, and cluster-wide in cluster "dev-1" you lack`) {
		t.Fatalf("err = %v", err)
	}
	// The owner of dev-1 may.
	dev := grant("dev-owner", user("dora"), "all-access", onClusters("dev-1"))
	v = RoleTemplateValidator{Readers: Readers{Cache: hubReader(t, &waiting, &dev)}, Authorizer: &authz{}}
	if _, err := v.ValidateCreate(as("dora"), &later); err != nil {
		t.Fatal(err)
	}
}

// expectVerdict checks a validator's answer: whether it asked the hub (a), and that
// it allowed the request, or refused it with 403 and a message holding refused.
func expectVerdict(t *testing.T, a *authz, err error, asked bool, refused []string) {
	t.Helper()
	if (len(a.asked) > 0) != asked {
		t.Errorf("asked the hub %v; want asked=%v", a.asked, asked)
	}
	if len(refused) == 0 {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("allowed; want refused with %q", refused)
	}
	st := statusOf(t, err)
	if st.Code != http.StatusForbidden {
		t.Errorf("code %d; want 403", st.Code)
	}
	for _, w := range refused {
		if !strings.Contains(st.Message, w) {
			t.Errorf("message %q lacks %q", st.Message, w)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
