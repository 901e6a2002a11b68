package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/render"
	"github.com/drover-io/drover/targetsync"
)

// kstatusOf computes what Flux, Argo CD's kstatus users and `kubectl wait` make of
// an object, with the cli-utils kstatus library itself.
func kstatusOf(t *testing.T, obj runtime.Object) kstatus.Status {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

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
		kstatus                   kstatus.Status
		ready, reconciling, stall metav1.ConditionStatus
		reason                    string
		msg                       string
		failures                  int
	}{
		{"all synced", nil, []clusterRow{ok("a"), ok("b")}, kstatus.CurrentStatus,
			"True", "False", "False", v1alpha1.ReasonSucceeded, "held by all 2 selected clusters", 0},
		{"none selected", nil, nil, kstatus.CurrentStatus,
			"True", "False", "False", v1alpha1.ReasonNoClustersSelected, "no cluster is selected", 0},
		{"spec problem", &render.Problem{Reason: render.ReasonContextMismatch, Message: "wrong context"}, nil, kstatus.FailedStatus,
			"False", "False", "True", render.ReasonContextMismatch, "wrong context", 0},
		{"pending", nil, []clusterRow{ok("a"), bad("b", v1alpha1.ReasonPending)}, kstatus.InProgressStatus,
			"False", "True", "False", v1alpha1.ReasonProgressing, "held by 1 of 2 selected clusters; b: Pending", 1},
		// A cluster that is down is reported, and does not hold Ready back.
		{"one disconnected", nil, []clusterRow{ok("a"), bad("b", v1alpha1.ReasonDisconnected)}, kstatus.CurrentStatus,
			"True", "False", "False", v1alpha1.ReasonSucceeded, "held by all 1 connected selected clusters; 1 not connected: b: Disconnected (because)", 1},
		{"paused, deleting and duplicate clusters are not counted", nil,
			[]clusterRow{ok("a"), bad("b", v1alpha1.ReasonPaused), bad("c", v1alpha1.ReasonClusterDeleting), bad("d", v1alpha1.ReasonDuplicateCluster)},
			kstatus.CurrentStatus, "True", "False", "False", v1alpha1.ReasonSucceeded, "3 not connected", 3},
		{"none connected", nil, []clusterRow{bad("a", v1alpha1.ReasonDisconnected)}, kstatus.CurrentStatus,
			"True", "False", "False", v1alpha1.ReasonNoClustersConnected, "none of the 1 selected clusters is connected", 1},
		{"failures are bounded", nil, many, kstatus.CurrentStatus,
			"True", "False", "False", v1alpha1.ReasonNoClustersConnected, "and 27 more", v1alpha1.MaxReportedFailures},
		// Transient failures are retried: in progress.
		{"apply failed", nil, []clusterRow{ok("a"), bad("b", v1alpha1.ReasonApplyFailed)}, kstatus.InProgressStatus,
			"False", "True", "False", v1alpha1.ReasonApplyFailed, "held by 1 of 2 selected clusters; b: ApplyFailed (because)", 1},
		// What needs a person is Stalled, so that tools fail fast instead of waiting.
		{"conflict", nil, []clusterRow{ok("a"), bad("b", v1alpha1.ReasonConflict)}, kstatus.FailedStatus,
			"False", "False", "True", v1alpha1.ReasonConflict, "b: Conflict (because)", 1},
		{"missing ClusterRole", nil, []clusterRow{bad("a", v1alpha1.ReasonClusterRoleNotFound)}, kstatus.FailedStatus,
			"False", "False", "True", v1alpha1.ReasonClusterRoleNotFound, "a: ClusterRoleNotFound", 1},
		{"rejected", nil, []clusterRow{bad("a", v1alpha1.ReasonRejected)}, kstatus.FailedStatus,
			"False", "False", "True", v1alpha1.ReasonRejected, "a: Rejected", 1},
		{"a named cluster that does not exist", nil, []clusterRow{ok("a"), bad("typo", v1alpha1.ReasonClusterNotFound)}, kstatus.FailedStatus,
			"False", "False", "True", v1alpha1.ReasonClusterNotFound, "typo: ClusterNotFound", 1},
		{"only named clusters that do not exist", nil, []clusterRow{bad("typo", v1alpha1.ReasonClusterNotFound)}, kstatus.FailedStatus,
			"False", "False", "True", v1alpha1.ReasonClusterNotFound, "held by 0 of 1 selected clusters", 1},
		{"stalled beats pending", nil, []clusterRow{bad("a", v1alpha1.ReasonPending), bad("b", v1alpha1.ReasonConflict)}, kstatus.FailedStatus,
			"False", "False", "True", v1alpha1.ReasonConflict, "b: Conflict", 2},
		{"stalled for several reasons", nil, []clusterRow{bad("a", v1alpha1.ReasonRejected), bad("b", v1alpha1.ReasonConflict), bad("c", v1alpha1.ReasonDisconnected)},
			kstatus.FailedStatus, "False", "False", "True", v1alpha1.ReasonSyncFailed, "held by 0 of 2 connected selected clusters", 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &v1alpha1.AccessBinding{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AccessBinding"},
				ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 2}}
			b.Status.ObservedGeneration = 2
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
			if got := kstatusOf(t, b); got != tc.kstatus {
				t.Errorf("kstatus %s, want %s", got, tc.kstatus)
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
			// A status of an older generation is InProgress whatever it says.
			b.Generation = 3
			if got := kstatusOf(t, b); got != kstatus.InProgressStatus {
				t.Errorf("kstatus of an unobserved generation %s, want InProgress", got)
			}
		})
	}
}

// A selection that names a cluster that does not exist gets a row that says so; one
// that selects by labels alone may select nothing.
func TestMissingRows(t *testing.T) {
	clusters := []v1alpha1.ManagedCluster{{ObjectMeta: metav1.ObjectMeta{Name: "prod-eu-1"}}}
	rows := missingRows(&v1alpha1.ClusterSelection{Names: []string{"prod-eu-1", "prod-eu-l"}}, clusters, "spec.clusters.names")
	if len(rows) != 1 || rows[0].cluster != "prod-eu-l" || rows[0].reason != v1alpha1.ReasonClusterNotFound ||
		!strings.Contains(rows[0].message, "spec.clusters.names") || classify(rows[0]) != rowStalled {
		t.Errorf("rows: %+v", rows)
	}
	sel := &v1alpha1.ClusterSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "none"}}}
	if rows := missingRows(sel, clusters, "spec.clusters.names"); len(rows) != 0 {
		t.Errorf("a selector names nothing: %+v", rows)
	}
	if rows := missingRows(nil, clusters, "x"); len(rows) != 0 {
		t.Errorf("nil selection: %+v", rows)
	}
}

func TestFailureReason(t *testing.T) {
	wrapped := func(reason string, err error) error { return &targetsync.Error{Reason: reason, Message: "m", Err: err} }
	cases := []struct {
		err  error
		want string
	}{
		{wrapped(remote.DescribeForbidden, errors.New("403")), v1alpha1.ReasonRejected},
		{wrapped(remote.DescribeInvalid, errors.New("422")), v1alpha1.ReasonRejected},
		{wrapped(targetsync.ReasonNoMatch, errors.New("no kind")), v1alpha1.ReasonRejected},
		{wrapped(remote.DescribeTimeout, errors.New("slow")), v1alpha1.ReasonApplyFailed},
		{wrapped(remote.DescribeServerError, errors.New("500")), v1alpha1.ReasonApplyFailed},
		{wrapped(targetsync.ReasonWaiting, nil), v1alpha1.ReasonApplyFailed},
		{wrapped(targetsync.ReasonConflict, targetsync.ErrConflict), v1alpha1.ReasonConflict},
		// A binding whose namespace is held by someone else fails for the same reason.
		{wrapped(targetsync.ReasonNamespaceNotHeld, wrapped(targetsync.ReasonConflict, targetsync.ErrConflict)), v1alpha1.ReasonConflict},
		{wrapped(targetsync.ReasonNamespaceNotHeld, wrapped(remote.DescribeForbidden, errors.New("403"))), v1alpha1.ReasonRejected},
	}
	for _, tc := range cases {
		if got := failureReason(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
	if graver(v1alpha1.ReasonApplyFailed, v1alpha1.ReasonConflict) != v1alpha1.ReasonConflict ||
		graver(v1alpha1.ReasonRejected, v1alpha1.ReasonApplyFailed) != v1alpha1.ReasonRejected || graver("", "") != "" {
		t.Error("graver")
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
	if row := rowFor(r, x, 1, none, pick); row.reason != v1alpha1.ReasonPending {
		t.Errorf("unknown cluster: %+v", row)
	}
	// After a restart, a cluster not synced yet keeps what status said of it.
	prev := previousOf(1, 1, []v1alpha1.ClusterFailure{{Cluster: "y", Reason: v1alpha1.ReasonConflict, Message: "taken"}})
	if row := rowFor(r, x, 1, prev, pick); !row.synced || !row.previous {
		t.Errorf("unknown cluster, status said synced: %+v", row)
	}
	if row := rowFor(r, y, 1, prev, pick); row.synced || row.reason != v1alpha1.ReasonConflict || !row.previous {
		t.Errorf("unknown cluster, status said failed: %+v", row)
	}
	// A cluster created since the manager started was never described: pending.
	if row := rowFor(r, cluster("new", r.started.Add(time.Second)), 1, prev, pick); row.synced || row.reason != v1alpha1.ReasonPending {
		t.Errorf("new cluster: %+v", row)
	}
	if row := rowFor(r, x, 2, previousOf(2, 1, nil), pick); row.synced || row.reason != v1alpha1.ReasonPending {
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
	if row := rowFor(r, x, 2, none, pick); row.synced || row.reason != v1alpha1.ReasonPending {
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
		"devs":    {Generation: 2, Reason: v1alpha1.ReasonConflict},
		"ops":     {Generation: 5, OK: true},
		"viewers": {Generation: 1, Reason: v1alpha1.ReasonClusterRoleNotFound},
	}
	for name, w := range want {
		got := out.Bindings[name]
		if got.Generation != w.Generation || got.OK != w.OK || got.Reason != w.Reason {
			t.Errorf("%s: got %+v, want %+v", name, got, w)
		}
	}
	if got := out.Templates["t"]; got.OK || got.Reason != v1alpha1.ReasonRejected || got.Generation != 3 {
		t.Errorf("template: %+v", got)
	}
}

// TestSpacer: the first result of a fan-out passes at once, the rest are spaced one
// interval apart, and a result that comes after a quiet interval passes at once again.
func TestSpacer(t *testing.T) {
	const iv = 500 * time.Millisecond
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	type call struct {
		key  string
		at   time.Duration // since the start
		want time.Duration
	}
	cases := []struct {
		name  string
		calls []call
	}{
		{"a lone result passes at once", []call{{"b/x", 0, 0}}},
		{"a burst: the first at once, the rest together one interval later", []call{
			{"b/x", 0, 0}, {"b/x", ms(10), ms(490)}, {"b/x", ms(200), ms(300)}, {"b/x", ms(499), ms(1)},
		}},
		{"a long fan-out: one pass per interval", []call{
			{"b/x", 0, 0}, {"b/x", ms(100), ms(400)}, {"b/x", ms(600), ms(400)}, {"b/x", ms(900), ms(100)}, {"b/x", ms(1100), ms(400)},
		}},
		{"after a quiet interval: at once again", []call{{"b/x", 0, 0}, {"b/x", ms(100), ms(400)}, {"b/x", ms(1000), 0}}},
		{"keys are spaced apart from each other", []call{{"b/x", 0, 0}, {"b/y", ms(10), 0}, {"t/x", ms(20), 0}, {"b/x", ms(30), ms(470)}}},
		{"forgotten after a sweep, still correct", []call{{"b/x", 0, 0}, {"b/y", 2 * time.Minute, 0}, {"b/x", 2*time.Minute + ms(10), 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s spacer
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for i, c := range tc.calls {
				if got := s.delay(c.key, start.Add(c.at), iv); got != c.want {
					t.Errorf("call %d (%s at %s): delay %s, want %s", i, c.key, c.at, got, c.want)
				}
			}
		})
	}
}
