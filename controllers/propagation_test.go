package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/remote"
	"github.com/drover-io/drover/targetsync"
)

func histogramCount(t *testing.T, v *prometheus.HistogramVec, labels ...string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(labels...).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func counterValue(t *testing.T, v *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A change is measured once per cluster, when the first sync that holds it completes,
// and only in a cluster that was in sync before the change; repairing drift is not
// propagation.
func TestPropagation(t *testing.T) {
	const cluster = "propagation-test"
	defer forgetClusterMetrics(cluster)
	l := newChangeLog()
	synced := time.Now()
	result := func(gen int64, ok bool) clusterResult {
		it := itemResult{Generation: gen, OK: ok}
		if !ok {
			it.Reason = v1alpha1.ReasonApplyFailed
		}
		return clusterResult{Synced: true, Since: synced, Bindings: map[string]itemResult{"b": it}}
	}
	// sync records a result as the syncer does, after the one before it.
	cur := result(1, true)
	carryHeld(clusterResult{}, &cur)
	sync := func(next clusterResult) {
		carryHeld(cur, &next)
		l.observe(cluster, cur, next, time.Now())
		cur = next
	}
	count := func() uint64 { return histogramCount(t, propagationSeconds, cluster) }

	time.Sleep(time.Millisecond)
	l.record(kindAccessBinding, "b", 2, false)
	sync(result(2, false))
	if got := count(); got != 0 {
		t.Fatalf("a failed item was measured: %d", got)
	}
	sync(result(2, true))
	if got := count(); got != 1 {
		t.Fatalf("the change was measured %d times, want 1", got)
	}
	sync(result(2, true))
	if got := count(); got != 1 {
		t.Fatalf("an item already held was measured again: %d", got)
	}
	// Drift whose repair fails once, then holds: no second sample.
	sync(result(2, false))
	sync(result(2, true))
	if got := count(); got != 1 {
		t.Fatalf("a repair of drift was measured: %d", got)
	}
	// A cluster that was not in sync when the change came measures its outage, not
	// propagation.
	l.record(kindAccessBinding, "b", 3, false)
	l.observe(cluster, clusterResult{Reason: v1alpha1.ReasonDisconnected}, result(3, true), time.Now())
	later := result(2, true)
	later.Since = time.Now()
	l.observe(cluster, later, result(3, true), time.Now())
	if got := count(); got != 1 {
		t.Fatalf("a cluster synced after the change was measured: %d", got)
	}
	// A deletion is measured when the item leaves the cluster's result.
	l.record(kindAccessBinding, "b", 3, true)
	l.observe(cluster, result(3, true), clusterResult{Synced: true, Since: synced}, time.Now())
	if got := count(); got != 2 {
		t.Fatalf("the deletion was not measured: %d", got)
	}
}

// A failing sync is logged once per change of what fails, naming the object and
// why, with no error (so no stack trace), and retried with a backoff.
func TestSyncFailureLog(t *testing.T) {
	const cluster = "log-test"
	defer forgetClusterMetrics(cluster)
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 0})
	ctx := ctrl.LoggerInto(context.Background(), log)
	r := &ClusterSyncReconciler{}
	key := targetsync.Key{Kind: "ClusterRoleBinding", Name: "drover:ops"}
	failed := targetsync.Report{Failed: map[targetsync.Key]error{
		key: &targetsync.Error{Reason: remote.DescribeForbidden, Message: "ClusterRoleBinding drover:ops could not be applied: the target refused it (403 Forbidden)", Err: errors.New("forbidden")},
	}}
	for range 3 {
		res, err := r.finish(ctx, cluster, nil, nil, failed, nil)
		if err != nil || res.RequeueAfter <= 0 {
			t.Fatalf("finish: %v, %v", res, err)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "drover:ops") || !strings.Contains(lines[0], "403 Forbidden") || !strings.Contains(lines[0], v1alpha1.ReasonRejected) {
		t.Fatalf("logged %q", lines)
	}
	if got := counterValue(t, syncErrors, cluster, v1alpha1.ReasonRejected); got != 3 {
		t.Errorf("sync errors %v, want 3", got)
	}
	if got := counterValue(t, reconcileErrors, cluster); got != 3 {
		t.Errorf("reconcile errors %v, want 3", got)
	}
	if res, err := r.finish(ctx, cluster, nil, nil, targetsync.Report{}, nil); err != nil || res.RequeueAfter != 0 {
		t.Fatalf("finish after success: %v, %v", res, err)
	}
	if len(lines) != 2 || !strings.Contains(lines[1], "holds every object again") {
		t.Errorf("logged %q", lines)
	}
	if n := r.backoff().NumRequeues(cluster); n != 0 {
		t.Errorf("backoff not reset: %d", n)
	}
}
