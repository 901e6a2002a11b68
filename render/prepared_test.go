package render

import (
	"reflect"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// withRV gives every intent a resourceVersion, as an API server would.
func withRV(in Intents, rv string) Intents {
	out := Intents{
		RoleTemplates:  slices.Clone(in.RoleTemplates),
		AccessBindings: slices.Clone(in.AccessBindings),
		Projects:       slices.Clone(in.Projects),
	}
	for i := range out.RoleTemplates {
		out.RoleTemplates[i].ResourceVersion = rv
	}
	for i := range out.AccessBindings {
		out.AccessBindings[i].ResourceVersion = rv
	}
	for i := range out.Projects {
		out.Projects[i].ResourceVersion = rv
	}
	return out
}

// rulesOf returns the resources of the rules of ClusterRole drover:<template> in res.
func rulesOf(res Result, template string) []string {
	var out []string
	for _, o := range res.Objects {
		if cr, ok := o.(*rbacv1.ClusterRole); ok && cr.Name == NamePrefix+template {
			for _, r := range cr.Rules {
				out = append(out, r.Resources...)
			}
			return out
		}
	}
	return nil
}

// TestPreparedCache: the cache hands out the same Prepared while the intents keep
// their revisions, and a new one, rendering the new state, as soon as any intent
// changes. A stale Prepared would render RBAC that was revoked or edited away.
func TestPreparedCache(t *testing.T) {
	base := withRV(Intents{
		RoleTemplates:  []v1alpha1.RoleTemplate{tmpl("owner", v1alpha1.ContextCluster, nil, "pods"), tmpl("read", v1alpha1.ContextCluster, nil, "configmaps")},
		AccessBindings: []v1alpha1.AccessBinding{clusterBinding("ops", "owner", byLabel("prod"))},
		Projects:       []v1alpha1.ClusterProject{project("shop", byLabel("prod"), "shop-api")},
	}, "1")
	edit := func(f func(*Intents)) Intents {
		in := withRV(base, "1")
		f(&in)
		return in
	}
	cases := []struct {
		name string
		next Intents
		// cached: the second Prepare returns the first one's Prepared.
		cached      bool
		wantObjects []string
		wantOwner   []string // the rules of drover:owner
	}{
		{
			name: "same revisions: cached", next: withRV(base, "1"), cached: true,
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods"},
		},
		{
			name: "same revisions listed in another order: cached",
			next: edit(func(in *Intents) { slices.Reverse(in.RoleTemplates) }), cached: true,
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods"},
		},
		{
			name: "a template's rules edited: the new rules",
			next: edit(func(in *Intents) {
				in.RoleTemplates[0].Spec.Rules = append(in.RoleTemplates[0].Spec.Rules, v1alpha1.PolicyRule{Resources: []string{"secrets"}, Verbs: []string{"get"}})
				in.RoleTemplates[0].ResourceVersion = "2"
			}),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods", "secrets"},
		},
		{
			name: "a template made to inherit: the inherited rules",
			next: edit(func(in *Intents) {
				in.RoleTemplates[0].Spec.Inherits = []string{"read"}
				in.RoleTemplates[0].ResourceVersion = "2"
			}),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods", "configmaps"},
		},
		{
			name:        "a binding deleted: revoked",
			next:        edit(func(in *Intents) { in.AccessBindings = nil }),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read"}, wantOwner: []string{"pods"},
		},
		{
			name: "a binding being deleted: revoked",
			next: edit(func(in *Intents) {
				now := metav1.Now()
				in.AccessBindings[0].DeletionTimestamp = &now
				in.AccessBindings[0].ResourceVersion = "2"
			}),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read"}, wantOwner: []string{"pods"},
		},
		{
			name: "a binding's selector edited: no longer selects the cluster",
			next: edit(func(in *Intents) {
				in.AccessBindings[0].Spec.Clusters = &v1alpha1.ClusterSelection{Names: []string{"elsewhere"}}
				in.AccessBindings[0].ResourceVersion = "2"
			}),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read"}, wantOwner: []string{"pods"},
		},
		{
			name: "a binding added",
			next: edit(func(in *Intents) {
				b := clusterBinding("more", "read", byLabel("prod"))
				b.ResourceVersion = "3"
				in.AccessBindings = append(in.AccessBindings, b)
			}),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:more", "crb:drover:ops"}, wantOwner: []string{"pods"},
		},
		{
			name: "a binding created again with the same name and another role",
			next: edit(func(in *Intents) {
				in.AccessBindings[0].Spec.RoleRef.Name = "read"
				in.AccessBindings[0].ResourceVersion = "7"
			}),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods"},
		},
		{
			name:        "a project removed",
			next:        edit(func(in *Intents) { in.Projects = nil }),
			wantObjects: []string{"cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods"},
		},
		{
			name:        "a template deleted: its role and the binding that uses it go",
			next:        edit(func(in *Intents) { in.RoleTemplates = in.RoleTemplates[1:] }),
			wantObjects: []string{"ns:shop-api", "cr:drover:read"},
		},
		{
			name: "no resourceVersions (built in memory): never cached",
			next: func() Intents {
				in := withRV(base, "")
				return in
			}(),
			wantObjects: []string{"ns:shop-api", "cr:drover:owner", "cr:drover:read", "crb:drover:ops"}, wantOwner: []string{"pods"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c PreparedCache
			first := c.Prepare(withRV(base, "1"))
			second := c.Prepare(tc.next)
			if got := first == second; got != tc.cached {
				t.Fatalf("cached = %v, want %v", got, tc.cached)
			}
			res := second.Render(prod)
			if got := names(res.Objects); !reflect.DeepEqual(got, tc.wantObjects) {
				t.Errorf("objects %v, want %v", got, tc.wantObjects)
			}
			if got := rulesOf(res, "owner"); !reflect.DeepEqual(got, tc.wantOwner) {
				t.Errorf("rules of drover:owner %v, want %v", got, tc.wantOwner)
			}
			// Whatever was cached, the result is what rendering afresh gives.
			if fresh := Render(prod, tc.next); !reflect.DeepEqual(fresh, res) {
				t.Errorf("cached render differs from a fresh one:\n%+v\n%+v", res, fresh)
			}
			// And the cache now keeps the new revision.
			if third := c.Prepare(tc.next); Revision(tc.next) != "" && third != second {
				t.Error("the new revision is not kept")
			}
		})
	}
}

func TestRevision(t *testing.T) {
	a := withRV(Intents{
		RoleTemplates:  []v1alpha1.RoleTemplate{tmpl("x", v1alpha1.ContextCluster, nil)},
		AccessBindings: []v1alpha1.AccessBinding{clusterBinding("x", "x", byLabel("prod"))},
		Projects:       []v1alpha1.ClusterProject{project("x", byLabel("prod"))},
	}, "5")
	moved := func(f func(*Intents)) Intents {
		in := withRV(a, "5")
		f(&in)
		return in
	}
	cases := []struct {
		name string
		in   Intents
		same bool
	}{
		{"identical", withRV(a, "5"), true},
		{"template changed", moved(func(in *Intents) { in.RoleTemplates[0].ResourceVersion = "6" }), false},
		{"binding changed", moved(func(in *Intents) { in.AccessBindings[0].ResourceVersion = "6" }), false},
		{"project changed", moved(func(in *Intents) { in.Projects[0].ResourceVersion = "6" }), false},
		// Same names and versions, different kinds: a template x is not a binding x.
		{"kinds swapped", Intents{RoleTemplates: a.RoleTemplates, AccessBindings: nil, Projects: a.Projects}, false},
		{"binding removed", moved(func(in *Intents) { in.AccessBindings = nil }), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Revision(tc.in) == Revision(a); got != tc.same {
				t.Errorf("same revision = %v, want %v", got, tc.same)
			}
		})
	}
	if Revision(withRV(a, "")) != "" {
		t.Error("intents without resourceVersions have a revision")
	}
}

// TestPreparedSharedByClusters: one Prepared renders many clusters, each with its
// own labels, and rendering one cluster changes nothing another gets.
func TestPreparedSharedByClusters(t *testing.T) {
	in := Intents{
		RoleTemplates:  []v1alpha1.RoleTemplate{tmpl("member", v1alpha1.ContextProject, nil, "pods"), tmpl("owner", v1alpha1.ContextCluster, nil, "pods")},
		AccessBindings: []v1alpha1.AccessBinding{clusterBinding("ops", "owner", byLabel("prod")), projectBinding("devs", "member", "shop")},
		Projects:       []v1alpha1.ClusterProject{project("shop", byLabel("prod"), "shop-api", "shop-db")},
	}
	a := Cluster{Name: "a", Labels: map[string]string{"env": "prod"}, Hub: "hub", AgentImage: "agent:1"}
	b := Cluster{Name: "b", Labels: map[string]string{"env": "prod"}, Hub: "hub", AgentImage: "agent:1"}
	dev := Cluster{Name: "dev", Labels: map[string]string{"env": "dev"}, Hub: "hub"}
	p := Prepare(in)
	ra := p.Render(a)
	rdev := p.Render(dev)
	rb := p.Render(b)
	for _, tc := range []struct {
		cluster Cluster
		got     Result
	}{{a, ra}, {dev, rdev}, {b, rb}} {
		if want := Render(tc.cluster, in); !reflect.DeepEqual(tc.got, want) {
			t.Errorf("cluster %s: rendered from a shared Prepared:\n%+v\nafresh:\n%+v", tc.cluster.Name, tc.got, want)
		}
		for _, o := range tc.got.Objects {
			if o.GetLabels()[ClusterLabel] != tc.cluster.Name {
				t.Errorf("cluster %s: %s labelled for cluster %q", tc.cluster.Name, o.GetName(), o.GetLabels()[ClusterLabel])
			}
		}
	}
	if len(rdev.Bindings) != 0 || len(rdev.Projects) != 0 {
		t.Errorf("dev got bindings %v and projects %v", rdev.Bindings, rdev.Projects)
	}
}
