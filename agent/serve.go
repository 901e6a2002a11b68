package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The agent's own metrics, served on --metrics-bind-address with controller-runtime's
// registry (which also holds the Go runtime, process and client-go request metrics).
var (
	renewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_agent_lease_renewals_total",
		Help: "Renewals of the agent's heartbeat Lease, by result (success, failure).",
	}, []string{"result"})
	lastRenewal = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "drover_agent_last_renewal_timestamp_seconds",
		Help: "When the agent last renewed its heartbeat Lease (Unix time); the hub calls the agent dead once it is older than --agent-heartbeat-timeout.",
	})
	agentInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "drover_agent_info",
		Help: "1, labelled with the agent's version and the ManagedCluster it runs for.",
	}, []string{"version", "cluster"})
)

func init() {
	metrics.Registry.MustRegister(renewals, lastRenewal, agentInfo)
}

// health is what the probes report: the agent is live while it serves, and ready
// while its last renewal succeeded less than a lease duration ago.
type health struct {
	lastOK        atomic.Int64 // Unix nanoseconds of the last successful renewal
	leaseDuration time.Duration
}

func (h *health) renewed(ok bool, at time.Time) {
	if !ok {
		renewals.WithLabelValues("failure").Inc()
		return
	}
	renewals.WithLabelValues("success").Inc()
	lastRenewal.Set(float64(at.UnixNano()) / 1e9)
	h.lastOK.Store(at.UnixNano())
}

// ready says whether the Lease is held, and why not.
func (h *health) ready(now time.Time) (bool, string) {
	last := h.lastOK.Load()
	switch {
	case last == 0:
		return false, "the heartbeat Lease has not been renewed yet"
	case now.Sub(time.Unix(0, last)) > h.leaseDuration:
		return false, fmt.Sprintf("the heartbeat Lease was last renewed %s ago", now.Sub(time.Unix(0, last)).Round(time.Second))
	}
	return true, "ok"
}

// probeHandler serves /healthz (the process answers) and /readyz (the Lease is held).
func (h *health) probeHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, msg := h.ready(time.Now())
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprintln(w, msg)
	})
	return mux
}

// serve runs an HTTP server on addr until ctx is done; "" and "0" turn it off. It
// returns once it listens, and reports a failure to listen.
func serve(ctx context.Context, what, addr string, h http.Handler) error {
	if addr == "" || addr == "0" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ctrl.LoggerFrom(ctx).Error(err, "Server stopped", "server", what)
		}
	}()
	ctrl.LoggerFrom(ctx).Info("Serving", "server", what, "address", ln.Addr().String())
	return nil
}

func metricsHandler() http.Handler {
	return promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})
}
