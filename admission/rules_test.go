package admission

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

func strs(vs []Violation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.String())
	}
	return out
}

func TestCheckSubjects(t *testing.T) {
	cases := []struct {
		name     string
		subjects []v1alpha1.Subject
		want     []string
	}{
		{"ordinary", []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice"}, {Kind: v1alpha1.SubjectGroup, Name: "devs"}}, nil},
		{"authenticated needs bind, later, but is not refused outright", []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "system:authenticated"}}, nil},
		{"unauthenticated group", []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "alice"}, {Kind: v1alpha1.SubjectGroup, Name: "system:unauthenticated"}},
			[]string{`spec.subjects[1]: group "system:unauthenticated" is every anonymous request: Drover never grants it a role`}},
		{"anonymous user", []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "system:anonymous"}},
			[]string{`spec.subjects[0]: user "system:anonymous" is every anonymous request: Drover never grants it a role`}},
		{"both", []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "system:anonymous"}, {Kind: v1alpha1.SubjectGroup, Name: "system:unauthenticated"}},
			[]string{`spec.subjects[0]: user "system:anonymous"`, `spec.subjects[1]: group "system:unauthenticated"`}},
		{"look-alikes of another kind", []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "system:anonymous"}, {Kind: v1alpha1.SubjectUser, Name: "system:unauthenticated"}}, nil},
		{"case matters, as in Kubernetes", []v1alpha1.Subject{{Kind: v1alpha1.SubjectGroup, Name: "System:Unauthenticated"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := strs(CheckSubjects(tc.subjects))
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("got %q, want prefix %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func TestCheckInherits(t *testing.T) {
	// a -> b -> c; x <-> y (a cycle that predates the webhook); orphan -> ghost.
	others := map[string][]string{
		"a": {"b"}, "b": {"c"}, "c": nil,
		"x": {"y"}, "y": {"x"},
		"orphan":    {"ghost"},
		"read-only": nil, "project-member": {"read-only"},
	}
	cases := []struct {
		name     string
		template string
		old, new []string
		want     []string
	}{
		{"create, no inheritance", "new", nil, nil, nil},
		{"create, existing parents", "new", nil, []string{"a", "read-only"}, nil},
		{"create, unknown parent", "new", nil, []string{"a", "nope"},
			[]string{`spec.inherits[1]: RoleTemplate "nope" does not exist; create it first`}},
		{"self", "new", nil, []string{"new"}, []string{`spec.inherits[0]: a RoleTemplate cannot inherit itself`}},
		{"cycle through the template", "c", nil, []string{"a"},
			[]string{`spec.inherits[0]: inheriting "a" forms a cycle: c -> a -> b -> c`}},
		{"two-step cycle", "b", []string{"c"}, []string{"c", "a"},
			[]string{`spec.inherits[1]: inheriting "a" forms a cycle: b -> a -> b`}},
		{"parent in a cycle among others", "new", nil, []string{"x"},
			[]string{`spec.inherits[0]: RoleTemplate "x" cannot be inherited: its inheritance forms a cycle: x -> y -> x`}},
		{"parent whose own parent is missing", "new", nil, []string{"orphan"},
			[]string{`spec.inherits[0]: RoleTemplate "orphan" cannot be inherited: it inherits RoleTemplate "ghost", which does not exist (orphan -> ghost)`}},
		{"update keeps a broken entry: not held against it", "x", []string{"y"}, []string{"y", "c"}, nil},
		{"update removes the entry that closed a cycle", "y", []string{"x"}, nil, nil},
		{"update reorders", "project-member", []string{"read-only", "c"}, []string{"c", "read-only"}, nil},
		{"diamond is no cycle", "d", nil, []string{"a", "b"}, nil},
		{"several problems, each named", "c", nil, []string{"nope", "a", "c"}, []string{
			`spec.inherits[0]: RoleTemplate "nope" does not exist`,
			`spec.inherits[1]: inheriting "a" forms a cycle`,
			`spec.inherits[2]: a RoleTemplate cannot inherit itself`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := map[string][]string{}
			for k, v := range others {
				if k != tc.template {
					o[k] = v
				}
			}
			got := strs(CheckInherits(tc.template, tc.old, tc.new, o))
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("got %q, want prefix %q", got[i], tc.want[i])
				}
			}
		})
	}
}

// TestCheckInheritsTerminates walks a long chain and a dense graph: every template is
// visited once, whatever the shape.
func TestCheckInheritsTerminates(t *testing.T) {
	others := map[string][]string{}
	names := make([]string, 2000)
	for i := range names {
		names[i] = fmt.Sprintf("t%d", i)
	}
	for i, n := range names {
		var parents []string
		for j := i + 1; j < len(names) && j < i+32; j++ {
			parents = append(parents, names[j])
		}
		others[n] = parents
	}
	done := make(chan []Violation)
	go func() { done <- CheckInherits("top", nil, []string{names[0]}, others) }()
	select {
	case got := <-done:
		if len(got) != 0 {
			t.Fatalf("%v", strs(got))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the walk does not terminate")
	}
}

func proj(name string, created time.Time, namespaces ...string) v1alpha1.ClusterProject {
	p := v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
	for _, n := range namespaces {
		p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: n})
	}
	return p
}

func nss(names ...string) []v1alpha1.ProjectNamespace {
	var out []v1alpha1.ProjectNamespace
	for _, n := range names {
		out = append(out, v1alpha1.ProjectNamespace{Name: n})
	}
	return out
}

func TestClaims(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	deleting := proj("gone", t0.Add(-time.Hour), "shared", "only-gone")
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	got := Claims([]v1alpha1.ClusterProject{
		proj("young", t0.Add(time.Hour), "shared", "young-ns"),
		proj("old", t0, "shared", "old-ns"),
		proj("b-same-age", t0.Add(2*time.Hour), "tie"),
		proj("a-same-age", t0.Add(2*time.Hour), "tie"),
		proj("self", t0.Add(-2*time.Hour), "shared", "self-ns"),
		deleting,
	}, "self")
	want := map[string]string{"shared": "old", "old-ns": "old", "young-ns": "young", "tie": "a-same-age"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestCheckNamespaces(t *testing.T) {
	never := NeverManaged("ops")
	claims := map[string]string{"payments-api": "payments"}
	cases := []struct {
		name     string
		old, new []v1alpha1.ProjectNamespace
		want     []string
	}{
		{"fresh namespaces", nil, nss("shop-a", "shop-b"), nil},
		{"kube-system", nil, nss("shop", "kube-system"), []string{`spec.namespaces[1].name: namespace "kube-system" is never managed by Drover`}},
		{"each system namespace", nil, nss("kube-public", "kube-node-lease", "default", "drover-system"), []string{
			`spec.namespaces[0].name: namespace "kube-public" is never managed by Drover`,
			`spec.namespaces[1].name: namespace "kube-node-lease" is never managed by Drover`,
			`spec.namespaces[2].name: namespace "default" is never managed by Drover`,
			`spec.namespaces[3].name: namespace "drover-system" is never managed by Drover`}},
		{"the operator namespace", nil, nss("ops"), []string{
			`spec.namespaces[0].name: namespace "ops" is never managed by Drover: it is the operator namespace, which holds the hub's Secrets`}},
		{"claimed by another project", nil, nss("shop", "payments-api"), []string{
			`spec.namespaces[1].name: namespace "payments-api" already belongs to ClusterProject "payments"; a namespace belongs to one project`}},
		{"a claim that predates the webhook is not held against an edit", nss("payments-api"), nss("payments-api", "shop"), nil},
		{"adding a claimed namespace in an update", nss("shop"), nss("shop", "payments-api"), []string{`spec.namespaces[1].name: namespace "payments-api" already belongs`}},
		{"a never-managed namespace is refused even if it was there before", nss("kube-system"), nss("kube-system", "shop"), []string{
			`spec.namespaces[0].name: namespace "kube-system" is never managed by Drover`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := strs(CheckNamespaces(tc.old, tc.new, claims, never, "ops"))
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("got %q, want prefix %q", got[i], tc.want[i])
				}
			}
		})
	}
	if got := NeverManaged("drover-system"); len(got) != 5 {
		t.Errorf("NeverManaged(drover-system) = %v: the operator namespace is listed once", got)
	}
}

func TestReferencing(t *testing.T) {
	b := func(name string, kind v1alpha1.RoleRefKind, role string) v1alpha1.AccessBinding {
		return v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AccessBindingSpec{RoleRef: v1alpha1.RoleRef{Kind: kind, Name: role}}}
	}
	deleting := b("going", v1alpha1.RoleRefRoleTemplate, "view")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	got := Referencing("view", []v1alpha1.AccessBinding{
		b("zeta", v1alpha1.RoleRefRoleTemplate, "view"),
		b("alpha", v1alpha1.RoleRefRoleTemplate, "view"),
		b("clusterrole-of-the-same-name", v1alpha1.RoleRefClusterRole, "view"),
		b("other", v1alpha1.RoleRefRoleTemplate, "edit"),
		deleting,
	})
	if !reflect.DeepEqual(got, []string{"alpha", "zeta"}) {
		t.Fatalf("got %v", got)
	}
	if got := listNames([]string{"a", "b", "c"}, 2); got != "a, b and 1 more" {
		t.Errorf("listNames: %q", got)
	}
}
