package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/targetsync"
)

func TestSetIntentStatus(t *testing.T) {
	ok := func(c string) clusterRow { return clusterRow{cluster: c, synced: true} }
	bad := func(c, reason string) clusterRow { return clusterRow{cluster: c, reason: reason, message: "because"} }
	many := []clusterRow{}
	for i := range 30 {
		many = append(many, bad(fmt.Sprintf("c%02d", i), v1alpha1.ReasonDisconnected))
	}
	cases := []struct {
		name                      string
		problem                   *render.Problem
		rows                      []clusterRow
		ready, reconciling, stall metav1.ConditionStatus
		reason                    string
		msg                       string
		failures                  int
	}{
		{"all synced", nil, []clusterRow{ok("a"), ok("b")}, "True", "False", "False", v1alpha1.ReasonSucceeded, "held by all 2 selected clusters", 0},
		{"none selected", nil, nil, "True", "False", "False", ReasonNoClusters, "no cluster is selected", 0},
		{"spec problem", &render.Problem{Reason: render.ReasonContextMismatch, Message: "wrong context"}, nil, "False", "False", "True", render.ReasonContextMismatch, "wrong context", 0},
		{"pending", nil, []clusterRow{ok("a"), bad("b", ReasonPending)}, "False", "True", "False", v1alpha1.ReasonProgressing, "held by 1 of 2 selected clusters; b: Pending", 1},
		{"disconnected", nil, []clusterRow{ok("a"), bad("b", v1alpha1.ReasonDisconnected)}, "False", "False", "False", v1alpha1.ReasonDisconnected, "b: Disconnected (because)", 1},
		{"mixed failures", nil, []clusterRow{bad("a", ReasonConflict), bad("b", v1alpha1.ReasonDisconnected)}, "False", "False", "False", ReasonSyncFailed, "a: Conflict", 2},
		{"failures are bounded", nil, many, "False", "False", "False", v1alpha1.ReasonDisconnected, "and 27 more", v1alpha1.MaxReportedFailures},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &v1alpha1.AccessBinding{}
			setIntentStatus(b, tc.problem, tc.rows, "selected")
			for typ, want := range map[string]metav1.ConditionStatus{v1alpha1.ReadyCondition: tc.ready, v1alpha1.ReconcilingCondition: tc.reconciling, v1alpha1.StalledCondition: tc.stall} {
				if c := conditions.Get(b, typ); c == nil || c.Status != want {
					t.Errorf("%s = %v, want %s", typ, c, want)
				}
			}
			ready := conditions.Get(b, v1alpha1.ReadyCondition)
			if ready.Reason != tc.reason || !strings.Contains(ready.Message, tc.msg) {
				t.Errorf("Ready %s %q, want %s containing %q", ready.Reason, ready.Message, tc.reason, tc.msg)
			}
			if got := len(summarizeRows(tc.rows).failures); got != tc.failures {
				t.Errorf("%d failures, want %d", got, tc.failures)
			}
			// Setting the same status again changes nothing (no write).
			again := b.DeepCopy()
			setIntentStatus(again, tc.problem, tc.rows, "selected")
			if fmt.Sprint(again.Status.Conditions) != fmt.Sprint(b.Status.Conditions) {
				t.Error("not idempotent")
			}
		})
	}
}

func TestRowFor(t *testing.T) {
	r := newSyncResults()
	pick := func(res clusterResult) (itemResult, bool) { it, ok := res.Bindings["b"]; return it, ok }
	cluster := func(name string, created time.Time) *v1alpha1.ManagedCluster {
		return &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
	}
	old := r.started.Add(-time.Hour)
	x, y := cluster("x", old), cluster("y", old)
	none := previous{}
	if row := rowFor(r, x, 1, none, pick); row.reason != ReasonPending {
		t.Errorf("unknown cluster: %+v", row)
	}
	// After a restart, a cluster not synced yet keeps what status said of it.
	prev := previousOf(1, 1, []v1alpha1.ClusterFailure{{Cluster: "y", Reason: ReasonConflict, Message: "taken"}})
	if row := rowFor(r, x, 1, prev, pick); !row.synced || !row.previous {
		t.Errorf("unknown cluster, status said synced: %+v", row)
	}
	if row := rowFor(r, y, 1, prev, pick); row.synced || row.reason != ReasonConflict || !row.previous {
		t.Errorf("unknown cluster, status said failed: %+v", row)
	}
	// A cluster created since the manager started was never described: pending.
	if row := rowFor(r, cluster("new", r.started.Add(time.Second)), 1, prev, pick); row.synced || row.reason != ReasonPending {
		t.Errorf("new cluster: %+v", row)
	}
	if row := rowFor(r, x, 2, previousOf(2, 1, nil), pick); row.synced || row.reason != ReasonPending {
		t.Errorf("status of an older generation must not count: %+v", row)
	}
	r.set("x", clusterResult{Reason: v1alpha1.ReasonDisconnected, Message: "gone"}, true)
	if row := rowFor(r, x, 1, prev, pick); row.reason != v1alpha1.ReasonDisconnected {
		t.Errorf("disconnected: %+v", row)
	}
	r.set("x", clusterResult{Synced: true, Bindings: map[string]itemResult{"b": {Generation: 1, OK: true}}}, true)
	if row := rowFor(r, x, 1, none, pick); !row.synced {
		t.Errorf("synced: %+v", row)
	}
	if row := rowFor(r, x, 2, none, pick); row.synced || row.reason != ReasonPending {
		t.Errorf("older generation must not count: %+v", row)
	}
}

func TestSummarize(t *testing.T) {
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:devs", Namespace: "shop", Labels: map[string]string{
		render.AccessBindingLabel: "devs", render.ProjectLabel: "p"}}}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover:ops", Labels: map[string]string{render.AccessBindingLabel: "ops"}}}
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drover:t", Labels: map[string]string{render.RoleTemplateLabel: "t"}}}
	in := render.Intents{
		RoleTemplates: []v1alpha1.RoleTemplate{{ObjectMeta: metav1.ObjectMeta{Name: "t", Generation: 3}}},
		AccessBindings: []v1alpha1.AccessBinding{
			{ObjectMeta: metav1.ObjectMeta{Name: "devs", Generation: 2}, Spec: v1alpha1.AccessBindingSpec{Project: "p"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "ops", Generation: 5}},
			{ObjectMeta: metav1.ObjectMeta{Name: "viewers", Generation: 1}},
		},
	}
	res := render.Result{Objects: []client.Object{rb, crb, cr}, Templates: []string{"t"}, Bindings: []string{"devs", "ops", "viewers"},
		ClusterRoleRefs: map[string]string{"viewers": "view"}}
	rep := targetsync.Report{Failed: map[targetsync.Key]error{
		targetsync.KeyOf(rb): &targetsync.Error{Reason: targetsync.ReasonConflict, Message: "RoleBinding shop/drover:devs is taken", Err: targetsync.ErrConflict},
		targetsync.KeyOf(cr): &targetsync.Error{Reason: "Invalid", Message: "rejected", Err: errors.New("rejected")},
	}}
	out := summarize(in, res, rep, map[string]bool{"view": true})
	want := map[string]itemResult{
		"devs":    {Generation: 2, Reason: ReasonConflict},
		"ops":     {Generation: 5, OK: true},
		"viewers": {Generation: 1, Reason: ReasonClusterRoleNotFound},
	}
	for name, w := range want {
		got := out.Bindings[name]
		if got.Generation != w.Generation || got.OK != w.OK || got.Reason != w.Reason {
			t.Errorf("%s: got %+v, want %+v", name, got, w)
		}
	}
	if got := out.Templates["t"]; got.OK || got.Reason != ReasonApplyFailed || got.Generation != 3 {
		t.Errorf("template: %+v", got)
	}
}
