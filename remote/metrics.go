package remote

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	clientmetrics "k8s.io/client-go/tools/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of the connections to targets, labelled by ManagedCluster name. The
// requests to targets are counted here, per cluster, and left out of client-go's
// rest_client_requests_total, whose host label would name them by IP:port (and
// every tunnelled cluster by the same made-up host).
var (
	probeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "drover_cluster_probe_duration_seconds",
		Help:    "Latency of the health probe (GET /version) of each target cluster, failures included.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5},
	}, []string{"cluster"})
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_cluster_requests_total",
		Help: "Requests the manager sent to each target cluster's API server, by HTTP method and status code (\"<error>\" when no answer came).",
	}, []string{"cluster", "method", "code"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "drover_cluster_request_duration_seconds",
		Help:    "Latency of the requests to each target cluster's API server until the response headers, watches excluded.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"cluster"})
)

func init() {
	metrics.Registry.MustRegister(probeDuration, requests, requestDuration)
	// controller-runtime registered client-go's request counter in its own
	// init, which runs before this one (this package imports it).
	clientmetrics.RequestResult = &hubOnlyResults{next: clientmetrics.RequestResult}
}

// ForgetMetrics drops a deleted cluster's series, here and in the packages that
// registered with OnForgetMetrics.
func ForgetMetrics(cluster string) {
	probeDuration.DeleteLabelValues(cluster)
	requests.DeletePartialMatch(prometheus.Labels{"cluster": cluster})
	requestDuration.DeleteLabelValues(cluster)
	for _, f := range forgetters {
		f(cluster)
	}
}

// forgetters drop the per-cluster series of other packages.
var forgetters []func(cluster string)

// OnForgetMetrics registers f to drop a deleted cluster's series of another package
// (the authentication proxy's, say). Call it from an init function.
func OnForgetMetrics(f func(cluster string)) { forgetters = append(forgetters, f) }

// targetHosts counts the open connections per target host (host:port), so that
// client-go's counter leaves them out.
var targetHosts = struct {
	sync.RWMutex
	n map[string]int
}{n: map[string]int{}}

func addTargetHost(host string, delta int) {
	if host == "" {
		return
	}
	targetHosts.Lock()
	defer targetHosts.Unlock()
	targetHosts.n[host] += delta
	if targetHosts.n[host] <= 0 {
		delete(targetHosts.n, host)
	}
}

func isTargetHost(host string) bool {
	targetHosts.RLock()
	defer targetHosts.RUnlock()
	return targetHosts.n[host] > 0
}

// hubOnlyResults passes client-go's request results on, except those of targets,
// which drover_cluster_requests_total counts by cluster name.
type hubOnlyResults struct {
	next clientmetrics.ResultMetric
}

func (h *hubOnlyResults) Increment(ctx context.Context, code, method, host string) {
	if h.next == nil || isTargetHost(host) {
		return
	}
	h.next.Increment(ctx, code, method, host)
}

// hostOf is the host:port of an API server URL, as client-go labels it.
func hostOf(server string) string {
	u, err := url.Parse(server)
	if err != nil {
		return ""
	}
	return u.Host
}

// countingTransport counts every request to one cluster.
type countingTransport struct {
	cluster string
	next    http.RoundTripper
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	code := "<error>"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	requests.WithLabelValues(t.cluster, req.Method, code).Inc()
	if req.URL.Query().Get("watch") != "true" {
		requestDuration.WithLabelValues(t.cluster).Observe(time.Since(start).Seconds())
	}
	return resp, err
}

// WrappedRoundTripper lets client-go see through the wrapper.
func (t *countingTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

// CloseIdleConnections closes the idle connections of the transport underneath, as
// http.Client.CloseIdleConnections expects of its Transport.
func (t *countingTransport) CloseIdleConnections() { utilnet.CloseIdleConnectionsFor(t.next) }
