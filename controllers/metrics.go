package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// The manager's own metrics, in controller-runtime's registry (served on
// --metrics-bind-address). Every per-cluster series has a `cluster` label holding
// the ManagedCluster's name, and goes when the ManagedCluster goes; every per-intent
// series has `kind` and `name`, and goes with the intent. docs/observability.md
// describes each.
var (
	clusterReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_ready",
		Help: "1 when the ManagedCluster's Ready condition is True, else 0.",
	}, []string{"cluster"})
	clusterConnected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_connected",
		Help: "1 when the hub reaches the ManagedCluster's API server, else 0.",
	}, []string{"cluster"})
	clusterAgentReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_agent_ready",
		Help: "1 when the ManagedCluster's agent renews its heartbeat Lease (AgentReady True), else 0.",
	}, []string{"cluster"})
	clusterSynced = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_synced",
		Help: "1 when the cluster holds every intent that selects it (Synced True), else 0.",
	}, []string{"cluster"})
	clusterStalled = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_stalled",
		Help: "1 when the ManagedCluster is Stalled: a person must act (credentials, a Secret, a duplicate).",
	}, []string{"cluster"})
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_managedcluster_reconcile_errors_total",
		Help: "Reconciles of a ManagedCluster that failed: its connection and status, or the sync of its target.",
	}, []string{"cluster"})

	syncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "drover_cluster_sync_duration_seconds",
		Help:    "Duration of each completed sync of a target: render, server-side apply and prune.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"cluster"})
	syncErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_cluster_sync_errors_total",
		Help: "Syncs of a target that left something not as desired, by reason (ApplyFailed, Rejected, Conflict, ClusterRoleNotFound, or the request error's reason).",
	}, []string{"cluster", "reason"})
	propagationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "drover_intent_propagation_seconds",
		Help:    "Time from the hub seeing an intent change (create, update, delete of an AccessBinding, RoleTemplate or ClusterProject) to a target holding it.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"cluster"})

	intentReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_intent_ready",
		Help: "1 when the intent's Ready condition is True (held by every selected, connected cluster), else 0.",
	}, []string{"kind", "name"})
	intentStalled = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_intent_stalled",
		Help: "1 when the intent is Stalled: a person must act (the spec, a reference, a conflict or rejection in a target).",
	}, []string{"kind", "name"})
	intentClusters = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_intent_clusters",
		Help: "Clusters the intent selects, by state: held, pending, failed (retried), stalled (a person must act), disconnected.",
	}, []string{"kind", "name", "state"})
)

func init() {
	metrics.Registry.MustRegister(clusterReady, clusterConnected, clusterAgentReady, clusterSynced, clusterStalled,
		reconcileErrors, syncDuration, syncErrors, propagationSeconds, intentReady, intentStalled, intentClusters)
}

func recordClusterMetrics(mc *v1alpha1.ManagedCluster) {
	clusterReady.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.ReadyCondition)))
	clusterConnected.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.ConnectedCondition)))
	clusterAgentReady.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.AgentReadyCondition)))
	clusterSynced.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.SyncedCondition)))
	clusterStalled.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.StalledCondition)))
	// The counter exists from the start, so that rate() and increase() see its
	// first error.
	reconcileErrors.WithLabelValues(mc.Name)
}

func forgetClusterMetrics(name string) {
	for _, v := range []*prometheus.GaugeVec{clusterReady, clusterConnected, clusterAgentReady, clusterSynced, clusterStalled} {
		v.DeleteLabelValues(name)
	}
	forgetSyncMetrics(name)
}

// forgetSyncMetrics drops the series the cluster syncer writes for a cluster.
func forgetSyncMetrics(name string) {
	reconcileErrors.DeleteLabelValues(name)
	syncDuration.DeleteLabelValues(name)
	syncErrors.DeletePartialMatch(prometheus.Labels{"cluster": name})
	propagationSeconds.DeleteLabelValues(name)
}

// intentStates are the values of drover_intent_clusters' state label, by row class.
var intentStates = map[rowClass]string{
	rowHolds: "held", rowPending: "pending", rowRetrying: "failed", rowStalled: "stalled", rowAway: "disconnected",
}

// recordIntentMetrics sets an intent's gauges from its conditions and rows.
func recordIntentMetrics(kind string, obj intentObject, s rowSummary) {
	name := obj.GetName()
	intentReady.WithLabelValues(kind, name).Set(boolGauge(conditionTrue(obj.GetConditions(), v1alpha1.ReadyCondition)))
	intentStalled.WithLabelValues(kind, name).Set(boolGauge(conditionTrue(obj.GetConditions(), v1alpha1.StalledCondition)))
	for class, state := range intentStates {
		intentClusters.WithLabelValues(kind, name, state).Set(float64(s.count[class]))
	}
}

func forgetIntentMetrics(kind, name string) {
	intentReady.DeleteLabelValues(kind, name)
	intentStalled.DeleteLabelValues(kind, name)
	intentClusters.DeletePartialMatch(prometheus.Labels{"kind": kind, "name": name})
}

func conditionTrue(conds []metav1.Condition, typ string) bool {
	c := findCondition(conds, typ)
	return c != nil && c.Status == metav1.ConditionTrue
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
