package render

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// intentsFromBytes builds a small, arbitrary set of intents from fuzz input: templates
// with any inheritance graph (cycles, missing parents, diamonds), bindings of both
// scopes with any roleRef, and projects with overlapping namespaces.
func intentsFromBytes(data []byte) (Cluster, Intents) {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	pick := func(options []string) string { return options[int(next())%len(options)] }
	tnames := []string{"a", "b", "c", "d", "e"}
	envs := []string{"prod", "dev", "test"}
	nss := []string{"ns-1", "ns-2", "ns-3", "ns-4"}
	cluster := Cluster{Name: pick([]string{"c1", "c2"}), Labels: map[string]string{"env": pick(envs)}}
	var in Intents
	for i, n := 0, int(next()%6); i < n; i++ {
		t := v1alpha1.RoleTemplate{ObjectMeta: metav1.ObjectMeta{Name: tnames[i%len(tnames)]}}
		t.Spec.Context = v1alpha1.ContextCluster
		if next()%2 == 0 {
			t.Spec.Context = v1alpha1.ContextProject
		}
		for j, m := 0, int(next()%3); j < m; j++ {
			t.Spec.Inherits = append(t.Spec.Inherits, pick(append(tnames, "missing")))
		}
		for j, m := 0, int(next()%3); j < m; j++ {
			t.Spec.Rules = append(t.Spec.Rules, v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{pick([]string{"pods", "secrets", "services"})}, Verbs: []string{pick([]string{"get", "list", "*"})}})
		}
		in.RoleTemplates = append(in.RoleTemplates, t)
	}
	for i, n := 0, int(next()%3); i < n; i++ {
		p := v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: pick([]string{"p1", "p2", "p3"})}}
		if next()%2 == 0 {
			p.Spec.Clusters.Names = []string{pick([]string{"c1", "c2"})}
		} else {
			p.Spec.Clusters.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"env": pick(envs)}}
		}
		for j, m := 0, int(next()%3); j < m; j++ {
			p.Spec.Namespaces = append(p.Spec.Namespaces, v1alpha1.ProjectNamespace{Name: pick(nss)})
		}
		in.Projects = append(in.Projects, p)
	}
	for i, n := 0, int(next()%5); i < n; i++ {
		b := v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: pick([]string{"x", "y", "z", "w"})}}
		b.Spec.Subjects = []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "u"}}
		b.Spec.RoleRef = v1alpha1.RoleRef{Kind: v1alpha1.RoleRefRoleTemplate, Name: pick(append(tnames, "missing"))}
		if next()%4 == 0 {
			b.Spec.RoleRef = v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"}
		}
		if next()%2 == 0 {
			b.Spec.Project = pick([]string{"p1", "p2", "p3", "nope"})
		} else {
			b.Spec.Clusters = &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": pick(envs)}}}
		}
		in.AccessBindings = append(in.AccessBindings, b)
	}
	return cluster, uniqueNames(in)
}

// uniqueNames drops later intents that reuse a name, as the API server would refuse them.
func uniqueNames(in Intents) Intents {
	var out Intents
	seen := map[string]bool{}
	for _, t := range in.RoleTemplates {
		if !seen["t/"+t.Name] {
			seen["t/"+t.Name] = true
			out.RoleTemplates = append(out.RoleTemplates, t)
		}
	}
	for _, p := range in.Projects {
		if !seen["p/"+p.Name] {
			seen["p/"+p.Name] = true
			out.Projects = append(out.Projects, p)
		}
	}
	for _, b := range in.AccessBindings {
		if !seen["b/"+b.Name] {
			seen["b/"+b.Name] = true
			out.AccessBindings = append(out.AccessBindings, b)
		}
	}
	return out
}

// FuzzRender checks the renderer's invariants on arbitrary intents: it terminates
// (cycles are never looped on), is deterministic, labels and names everything it
// renders as Drover's, never renders a binding with a problem, puts RoleBindings
// only into namespaces it also renders, and renders the same from a Prepared shared
// with other clusters as afresh.
func FuzzRender(f *testing.F) {
	f.Add([]byte{3, 0, 1, 1, 1, 0, 0, 1, 2, 0, 1, 1, 2, 1, 0, 2, 1, 0, 0, 2, 0, 1})
	f.Add([]byte{5, 1, 2, 1, 2, 1, 1, 0, 1, 2, 2, 0, 0, 4, 4, 4, 4})
	f.Add([]byte("a fairly long seed with plenty of bytes to spend on intents"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cluster, in := intentsFromBytes(data)
		res := Render(cluster, in)
		if again := Render(cluster, in); !reflect.DeepEqual(names(res.Objects), names(again.Objects)) {
			t.Fatalf("not deterministic: %v vs %v", names(res.Objects), names(again.Objects))
		}
		// One Prepared serves every cluster: rendering other clusters from it (with
		// their own labels) first changes nothing this one gets.
		prepared := Prepare(in)
		for _, other := range []Cluster{{Name: "other", Labels: map[string]string{"env": "prod"}, Hub: "h", AgentImage: "a"}, {Name: "c3", Hub: "h"}} {
			_ = prepared.Render(other)
		}
		if shared := prepared.Render(cluster); !reflect.DeepEqual(shared, res) {
			t.Fatalf("rendered from a shared Prepared:\n%+v\nafresh:\n%+v", shared, res)
		}
		templates := ResolveTemplates(in.RoleTemplates)
		projects := map[string]*v1alpha1.ClusterProject{}
		for i := range in.Projects {
			projects[in.Projects[i].Name] = &in.Projects[i]
		}
		bad := map[string]bool{}
		for i := range in.AccessBindings {
			if BindingProblem(&in.AccessBindings[i], templates, projects) != nil {
				bad[in.AccessBindings[i].Name] = true
			}
		}
		renderedNS := map[string]bool{}
		seen := map[string]bool{}
		for _, o := range res.Objects {
			id := names([]client.Object{o})[0]
			if seen[id] {
				t.Fatalf("rendered twice: %s", id)
			}
			seen[id] = true
			if o.GetLabels()[ManagedByLabel] != ManagedByValue {
				t.Fatalf("%s lacks the ownership label", o.GetName())
			}
			switch v := o.(type) {
			case *corev1.Namespace:
				renderedNS[v.Name] = true
			case *rbacv1.ClusterRole:
				if tt := templates[strings.TrimPrefix(v.Name, NamePrefix)]; tt == nil || tt.Problem != nil {
					t.Fatalf("rendered broken template %s", v.Name)
				}
			case *rbacv1.ClusterRoleBinding:
				if bad[strings.TrimPrefix(v.Name, NamePrefix)] {
					t.Fatalf("rendered binding with a problem: %s", v.Name)
				}
			case *rbacv1.RoleBinding:
				if bad[strings.TrimPrefix(v.Name, NamePrefix)] {
					t.Fatalf("rendered binding with a problem: %s", v.Name)
				}
				if !renderedNS[v.Namespace] {
					t.Fatalf("RoleBinding %s in namespace %s that is not a rendered project namespace", v.Name, v.Namespace)
				}
			}
		}
	})
}
