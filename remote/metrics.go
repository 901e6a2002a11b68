package remote

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var probeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "drover_cluster_probe_duration_seconds",
	Help:    "Latency of the health probe (GET /version) of each target cluster, failures included.",
	Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5},
}, []string{"cluster"})

func init() {
	metrics.Registry.MustRegister(probeDuration)
}

// ForgetMetrics drops a deleted cluster's series.
func ForgetMetrics(cluster string) {
	probeDuration.DeleteLabelValues(cluster)
}
