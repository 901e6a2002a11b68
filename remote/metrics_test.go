package remote

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type fakeResults struct{ hosts []string }

func (f *fakeResults) Increment(_ context.Context, _, _, host string) {
	f.hosts = append(f.hosts, host)
}

// Requests to targets are counted by cluster name, and client-go's counter, whose
// host label would name targets by IP:port, sees only the hub's.
func TestRequestMetrics(t *testing.T) {
	rt := &countingTransport{cluster: "prod-eu-1", next: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodDelete {
			return nil, errors.New("connection refused")
		}
		return &http.Response{StatusCode: 403, Body: http.NoBody}, nil
	})}
	for _, m := range []string{http.MethodGet, http.MethodGet, http.MethodDelete} {
		req := &http.Request{Method: m, URL: &url.URL{Scheme: "https", Host: "10.0.0.1:6443", Path: "/api"}}
		if resp, err := rt.RoundTrip(req); err == nil {
			_ = resp.Body.Close()
		}
	}
	if got := counterValue(t, requests.WithLabelValues("prod-eu-1", "GET", "403")); got != 2 {
		t.Errorf("GET 403: %v", got)
	}
	if got := counterValue(t, requests.WithLabelValues("prod-eu-1", "DELETE", "<error>")); got != 1 {
		t.Errorf("DELETE error: %v", got)
	}
	ForgetMetrics("prod-eu-1")
	if n := seriesCount(requests); n != 0 {
		t.Errorf("%d series left after ForgetMetrics", n)
	}

	next := &fakeResults{}
	h := &hubOnlyResults{next: next}
	addTargetHost("10.0.0.1:6443", 1)
	h.Increment(context.Background(), "200", "GET", "10.0.0.1:6443")
	h.Increment(context.Background(), "200", "GET", "hub:6443")
	addTargetHost("10.0.0.1:6443", -1)
	h.Increment(context.Background(), "200", "GET", "10.0.0.1:6443")
	if len(next.hosts) != 2 || next.hosts[0] != "hub:6443" || next.hosts[1] != "10.0.0.1:6443" {
		t.Errorf("client-go saw %v", next.hosts)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func TestForgetMetricsReachesOtherPackages(t *testing.T) {
	var forgot []string
	OnForgetMetrics(func(cluster string) { forgot = append(forgot, cluster) })
	defer func() { forgetters = forgetters[:len(forgetters)-1] }()
	ForgetMetrics("gone")
	if len(forgot) != 1 || forgot[0] != "gone" {
		t.Errorf("forgot %v", forgot)
	}
}
