package targetsync

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/render"
)

func labelled(l map[string]string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: l}}
}

func TestOwnership(t *testing.T) {
	s := &Syncer{Hub: "hub-a", Cluster: "c1", Gone: func(c string) bool { return c == "deleted" }}
	managed := func(kv ...string) map[string]string {
		l := map[string]string{render.ManagedByLabel: render.ManagedByValue}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	applied := labelled(nil)
	applied.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldOwner, Operation: metav1.ManagedFieldsOperationApply}}
	cases := []struct {
		name     string
		obj      client.Object
		owner    owner
		prunable bool
	}{
		{"no labels", labelled(nil), ownerNone, false},
		{"someone else's managed-by", labelled(map[string]string{render.ManagedByLabel: "helm"}), ownerNone, false},
		{"labels stripped, applied by drover", applied, ownerApplied, false},
		{"this hub, this cluster", labelled(managed(render.HubLabel, "hub-a", render.ClusterLabel, "c1", render.AccessBindingLabel, "b")), ownerUs, true},
		{"this hub, this cluster, agent", labelled(managed(render.HubLabel, "hub-a", render.ClusterLabel, "c1", render.ComponentLabel, "agent")), ownerUs, true},
		{"another hub", labelled(managed(render.HubLabel, "hub-b", render.ClusterLabel, "c1", render.AccessBindingLabel, "b")), ownerOther, false},
		{"this hub, another live cluster", labelled(managed(render.HubLabel, "hub-a", render.ClusterLabel, "c2", render.AccessBindingLabel, "b")), ownerOther, false},
		{"this hub, a deleted cluster", labelled(managed(render.HubLabel, "hub-a", render.ClusterLabel, "deleted", render.AccessBindingLabel, "b")), ownerOrphaned, false},
		{"before hub IDs, an intent's", labelled(managed(render.AccessBindingLabel, "b")), ownerLegacy, true},
		{"before hub IDs, this cluster's agent", labelled(managed(render.ComponentLabel, "agent", render.ClusterLabel, "c1")), ownerLegacy, true},
		{"before hub IDs, another cluster's agent", labelled(managed(render.ComponentLabel, "agent", render.ClusterLabel, "c2")), ownerOther, false},
		{"before hub IDs, no intent (the agent's Lease)", labelled(managed(render.ComponentLabel, "agent")), ownerLegacy, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, _ := s.ownerOf(c.obj); got != c.owner {
				t.Errorf("owner: got %d, want %d", got, c.owner)
			}
			if got := s.prunable(c.obj); got != c.prunable {
				t.Errorf("prunable: got %v, want %v", got, c.prunable)
			}
		})
	}
}

func TestWillDelete(t *testing.T) {
	ns := func(a map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: a}}
	}
	cases := []struct {
		name string
		ns   *corev1.Namespace
		want bool
	}{
		{"no policy: released", ns(nil), false},
		{"Retain: released", ns(map[string]string{render.NamespaceDeletionPolicyAnnotation: "Retain"}), false},
		{"Delete, created by Drover: deleted", ns(map[string]string{render.NamespaceDeletionPolicyAnnotation: "Delete", render.CreatedAnnotation: "true"}), true},
		{"Delete, origin unknown (before the mark): released", ns(map[string]string{render.NamespaceDeletionPolicyAnnotation: "Delete"}), false},
		{"Delete, but adopted: released", ns(map[string]string{render.NamespaceDeletionPolicyAnnotation: "Delete", render.AdoptedAnnotation: "true"}), false},
		{"Delete, adopted after being created: released", ns(map[string]string{render.NamespaceDeletionPolicyAnnotation: "Delete", render.AdoptedAnnotation: "true", render.CreatedAnnotation: "true"}), false},
	}
	agentNS := ns(map[string]string{render.NamespaceDeletionPolicyAnnotation: "Delete"})
	agentNS.Labels = map[string]string{render.ComponentLabel: render.AgentComponent}
	if !willDelete(agentNS) {
		t.Error("the agent's own namespace goes with the agent")
	}
	for _, c := range cases {
		if got := willDelete(c.ns); got != c.want {
			t.Errorf("%s: got %v", c.name, got)
		}
	}
}

func TestSortByIntentSize(t *testing.T) {
	rb := func(binding, ns string) client.Object {
		return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:" + binding, Namespace: ns,
			Labels: map[string]string{render.AccessBindingLabel: binding}}}
	}
	objs := []client.Object{rb("big", "a"), rb("big", "b"), rb("big", "c"), rb("small", "a"), rb("mid", "a"), rb("mid", "b")}
	sortByIntentSize(objs)
	var got []string
	for _, o := range objs {
		got = append(got, o.GetLabels()[render.AccessBindingLabel]+"/"+o.GetNamespace())
	}
	want := []string{"small/a", "mid/a", "mid/b", "big/a", "big/b", "big/c"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestParallel(t *testing.T) {
	objs := make([]client.Object, 100)
	for i := range objs {
		objs[i] = &corev1.Namespace{}
	}
	t.Run("runs every object, bounded", func(t *testing.T) {
		var n, inFlight, peak atomic.Int32
		s := &Syncer{Workers: 4}
		err := s.parallel(context.Background(), objs, nil, func(client.Object) error {
			cur := inFlight.Add(1)
			for {
				p := peak.Load()
				if cur <= p || peak.CompareAndSwap(p, cur) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inFlight.Add(-1)
			n.Add(1)
			return nil
		})
		if err != nil || n.Load() != 100 || peak.Load() > 4 {
			t.Fatalf("err %v, ran %d, peak %d", err, n.Load(), peak.Load())
		}
	})
	t.Run("stops when interrupted", func(t *testing.T) {
		var n atomic.Int32
		s := &Syncer{Workers: 2}
		err := s.parallel(context.Background(), objs, func() bool { return n.Load() >= 10 }, func(client.Object) error {
			n.Add(1)
			return nil
		})
		if !errors.Is(err, ErrInterrupted) || n.Load() >= 20 {
			t.Fatalf("err %v after %d objects", err, n.Load())
		}
	})
	t.Run("stops when the context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var n atomic.Int32
		s := &Syncer{Workers: 2}
		err := s.parallel(ctx, objs, nil, func(client.Object) error {
			if n.Add(1) == 5 {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) || n.Load() >= 20 {
			t.Fatalf("err %v after %d objects", err, n.Load())
		}
	})
}

func TestDescribeStatus(t *testing.T) {
	err := apierrors.NewForbidden(schema.GroupResource{Resource: "clusterroles"}, "x", errors.New("body from the target: secret"))
	reason, msg := DescribeStatus(err)
	if reason != "Forbidden" || msg != "the target refused it (403 Forbidden)" {
		t.Fatalf("got %q %q", reason, msg)
	}
	s := &Syncer{}
	e := s.requestError(Key{Kind: "ClusterRole", Name: "x"}, "could not be applied:", err)
	if e.Reason != "Forbidden" || e.Error() != "ClusterRole x could not be applied: the target refused it (403 Forbidden)" || !errors.Is(e, err) {
		t.Fatalf("got %+v", e)
	}
}

func TestRenderedRole(t *testing.T) {
	crb := func(kind, name string, labels map[string]string) client.Object {
		return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: labels},
			RoleRef: rbacv1.RoleRef{Kind: kind, Name: name}}
	}
	tmpl := map[string]string{render.RoleTemplateLabel: "t"}
	if got := renderedRole(crb("ClusterRole", "drover:t", tmpl)); got != "drover:t" {
		t.Errorf("template binding: %q", got)
	}
	if got := renderedRole(crb("ClusterRole", "view", nil)); got != "" {
		t.Errorf("binding to an existing ClusterRole: %q", got)
	}
	if got := renderedRole(&corev1.Namespace{}); got != "" {
		t.Errorf("namespace: %q", got)
	}
}

func TestOfGoneProject(t *testing.T) {
	opts := Options{NamespacePolicy: map[string]string{"live": "Retain"}}
	rb := func(p string) client.Object {
		return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{render.ProjectLabel: p, render.AccessBindingLabel: "b"}}}
	}
	if ofGoneProject(rb("live"), opts) || !ofGoneProject(rb("gone"), opts) || ofGoneProject(labelled(nil), opts) {
		t.Error("a project's objects are gone with it, and only then")
	}
}
