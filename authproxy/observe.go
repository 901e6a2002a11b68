package authproxy

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/drover-io/drover/remote"
)

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_proxy_requests_total",
		Help: "Requests through the authentication proxy, by cluster and HTTP code. The cluster is empty for requests refused before a cluster was chosen (bad path, unauthenticated, forbidden).",
	}, []string{"cluster", "code"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "drover_proxy_request_duration_seconds",
		Help: "Time from receiving a request through the authentication proxy to the end of its answer (watches, logs -f and exec last as long as they stream), by cluster and HTTP code.",
		// Few buckets: one series each per cluster and code. Milliseconds (a GET) to
		// minutes (watches, exec sessions).
		Buckets: []float64{0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300},
	}, []string{"cluster", "code"})
)

func init() {
	metrics.Registry.MustRegister(requests, latency)
	// A deleted cluster's series go with it.
	remote.OnForgetMetrics(func(cluster string) {
		requests.DeletePartialMatch(prometheus.Labels{"cluster": cluster})
		latency.DeletePartialMatch(prometheus.Labels{"cluster": cluster})
	})
}

// auditRecord is what the audit line says about one request. It never holds a
// credential: the user is the name the hub authenticated.
type auditRecord struct {
	user, cluster, verb, path, via string
}

// finish counts the request and writes its audit line.
func (p *Proxy) finish(rec *recorder, a *auditRecord, start time.Time) {
	code := rec.status()
	d := time.Since(start)
	c := strconv.Itoa(code)
	requests.WithLabelValues(a.cluster, c).Inc()
	latency.WithLabelValues(a.cluster, c).Observe(d.Seconds())
	p.log.Info("Request", "user", a.user, "cluster", a.cluster, "verb", a.verb, "path", a.path,
		"code", code, "via", a.via, "duration", d.Round(time.Microsecond).String())
}

// recorder remembers the status code and keeps what the proxy needs of the
// ResponseWriter: flushing (watches) and hijacking (exec, port-forward).
type recorder struct {
	http.ResponseWriter
	code int

	mu       sync.Mutex
	hijacked net.Conn
	closed   bool
}

func (r *recorder) WriteHeader(code int) {
	r.setCode(code)
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.setCode(http.StatusOK)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) setCode(code int) {
	r.mu.Lock()
	if r.code == 0 {
		r.code = code
	}
	r.mu.Unlock()
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands over the connection (an upgrade succeeded: 101) and keeps it, so that
// it can be closed when the cluster's connection goes.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	conn = &statusConn{Conn: conn, rec: r}
	r.hijacked = conn
	if r.closed {
		_ = conn.Close()
	}
	return conn, rw, nil
}

// closeHijacked closes the upgraded connection, now or as soon as there is one.
func (r *recorder) closeHijacked() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.hijacked != nil {
		_ = r.hijacked.Close()
	}
}

// statusConn reads the status code from the first bytes written to a hijacked
// connection: the target's answer to the upgrade (101, or a refusal such as 403).
type statusConn struct {
	net.Conn
	rec  *recorder
	seen bool
}

func (c *statusConn) Write(b []byte) (int, error) {
	if !c.seen {
		c.seen = true
		code := http.StatusSwitchingProtocols
		// "HTTP/1.1 403 Forbidden"
		if len(b) >= 12 && b[8] == ' ' {
			if n, err := strconv.Atoi(string(b[9:12])); err == nil {
				code = n
			}
		}
		c.rec.mu.Lock()
		if c.rec.code == 0 {
			c.rec.code = code
		}
		c.rec.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
