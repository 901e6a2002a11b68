package tunnel

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// series returns the value of each series of a vector, by its first label's value.
func series(c prometheus.Collector) map[string]float64 {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		_ = m.Write(&d)
		v := d.GetGauge().GetValue() + d.GetCounter().GetValue()
		out[d.GetLabel()[0].GetValue()] = v
	}
	return out
}

// The hub counts tunnels by cluster name, and drops a cluster's series when its
// ManagedCluster goes.
func TestTunnelMetrics(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	cert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)
	_, _, _ = h.get("alpha", "/version", nil) // the hub dials alpha
	agent := h.connect(t, cert, "alpha", apiHandler("agent-1"))
	eventually(t, 5*time.Second, func() bool { return series(tunnelConnected)["alpha"] == 1 }, "drover_tunnel_connected: %v", series(tunnelConnected))
	if got := series(tunnelOpened)["alpha"]; got != 1 {
		t.Errorf("drover_tunnel_opened_total{cluster=alpha} = %v", got)
	}
	// The tunnel closes (from the hub's side, as a lost connection does).
	h.srv.mu.Lock()
	conn := h.srv.sessions["alpha"][0].conn
	h.srv.mu.Unlock()
	_ = conn.Close()
	<-agent.done
	eventually(t, 5*time.Second, func() bool { v, ok := series(tunnelConnected)["alpha"]; return ok && v == 0 }, "after the agent left: %v", series(tunnelConnected))
	h.srv.Close("alpha")
	if _, ok := series(tunnelConnected)["alpha"]; ok {
		t.Errorf("series left after Close: %v", series(tunnelConnected))
	}
	if _, ok := series(tunnelOpened)["alpha"]; ok {
		t.Errorf("series left after Close: %v", series(tunnelOpened))
	}
	before := series(tunnelRejected)[ReasonTokenRejected]
	resp, _ := h.post(t, credentialBody(t, "alpha", "cid-alpha", mustCSR(t)), "Bearer wrong-token", nil)
	_ = resp.Body.Close()
	if got := series(tunnelRejected)[ReasonTokenRejected]; got != before+1 {
		t.Errorf("drover_tunnel_rejections_total{reason=%s} = %v, want %v", ReasonTokenRejected, got, before+1)
	}
}

func mustCSR(t *testing.T) []byte {
	_, csr := newCSR(t)
	return csr
}
