package tunnel

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the agent tunnels on the hub, by ManagedCluster name.
var (
	tunnelConnected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_tunnel_connected",
		Help: "1 while this replica holds an open agent tunnel for the cluster, else 0 (with several replicas, one holds it).",
	}, []string{"cluster"})
	tunnelOpened = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_tunnel_opened_total",
		Help: "Agent tunnels opened at this replica, by cluster: a cluster that reconnects often has a flaky path to the hub.",
	}, []string{"cluster"})
	tunnelRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_tunnel_rejections_total",
		Help: "Agents turned away (a wrong or revoked bootstrap token, a credential for another cluster), by reason.",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(tunnelConnected, tunnelOpened, tunnelRejected)
}

// forgetMetrics drops a deleted cluster's series.
func forgetMetrics(cluster string) {
	tunnelConnected.DeleteLabelValues(cluster)
	tunnelOpened.DeleteLabelValues(cluster)
}
