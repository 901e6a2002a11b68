package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

var (
	clusterReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_ready",
		Help: "1 when the ManagedCluster's Ready condition is True, else 0.",
	}, []string{"cluster"})
	clusterConnected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_managedcluster_connected",
		Help: "1 when the hub reaches the ManagedCluster's API server, else 0.",
	}, []string{"cluster"})
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_managedcluster_reconcile_errors_total",
		Help: "Reconciles of a ManagedCluster that ended in an error.",
	}, []string{"cluster"})
)

func init() {
	metrics.Registry.MustRegister(clusterReady, clusterConnected, reconcileErrors)
}

func recordClusterMetrics(mc *v1alpha1.ManagedCluster) {
	clusterReady.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.ReadyCondition)))
	clusterConnected.WithLabelValues(mc.Name).Set(boolGauge(conditions.IsTrue(mc, v1alpha1.ConnectedCondition)))
}

func forgetClusterMetrics(name string) {
	clusterReady.DeleteLabelValues(name)
	clusterConnected.DeleteLabelValues(name)
	reconcileErrors.DeleteLabelValues(name)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
