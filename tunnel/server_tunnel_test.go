package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rancher/remotedialer"

	"github.com/drover-io/drover/remote"
)

func TestTunnelEndpointTurnsAgentsAway(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	alphaCert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)
	sg := h.srv.signer.Load()
	expired, _ := credentialFrom(t, sg, Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}, time.Hour, time.Now().Add(-2*time.Hour))
	foreign, _ := credentialFrom(t, newTestSigner(t), Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}, time.Hour, time.Now())
	h.takeRejects()

	cases := []struct {
		name      string
		cert      *tls.Certificate
		header    http.Header
		mutate    func(map[string]ClusterInfo)
		lookupErr bool
		status    int
		reject    *rejection
	}{
		{name: "no client certificate", header: http.Header{ClusterHeader: {"alpha"}}, status: 401},
		{name: "no client certificate, not even a cluster header", status: 401},
		{name: "credential of another CA", cert: &foreign, header: http.Header{ClusterHeader: {"alpha"}}, status: 401},
		{name: "expired credential", cert: &expired, header: http.Header{ClusterHeader: {"alpha"}}, status: 401},
		{name: "alpha's credential, claiming beta", cert: &alphaCert, header: http.Header{ClusterHeader: {"beta"}}, status: 403,
			reject: &rejection{cluster: "beta", reason: ReasonClusterMismatch}},
		{name: "alpha's credential, claiming a name that is no cluster's", cert: &alphaCert, header: http.Header{ClusterHeader: {"Not A Cluster!"}}, status: 403},
		{name: "revoked: ManagedCluster deleted and created again", cert: &alphaCert, header: http.Header{ClusterHeader: {"alpha"}}, status: 403,
			mutate: func(m map[string]ClusterInfo) { i := m["alpha"]; i.UID = "uid-alpha-2"; m["alpha"] = i }},
		{name: "revoked: ManagedCluster gone", cert: &alphaCert, header: http.Header{ClusterHeader: {"alpha"}}, status: 403,
			mutate: func(m map[string]ClusterInfo) { delete(m, "alpha") }},
		{name: "revoked: not registered any more", cert: &alphaCert, header: http.Header{ClusterHeader: {"alpha"}}, status: 403,
			mutate: func(m map[string]ClusterInfo) { i := m["alpha"]; i.Registered = false; m["alpha"] = i }},
		{name: "the hub recorded another cluster ID", cert: &alphaCert, header: http.Header{ClusterHeader: {"alpha"}}, status: 403,
			mutate: func(m map[string]ClusterInfo) { i := m["alpha"]; i.ClusterID = "cid-other"; m["alpha"] = i },
			reject: &rejection{cluster: "alpha", reason: ReasonClusterMismatch}},
		{name: "hub cannot look the cluster up", cert: &alphaCert, header: http.Header{ClusterHeader: {"alpha"}}, lookupErr: true, status: 503},
		// The peer headers must not let a request past the agent checks.
		{name: "peer ID without a peer token", header: http.Header{remotedialer.ID: {"replica-x"}}, status: 401},
		{name: "peer ID with a wrong peer token", header: http.Header{remotedialer.ID: {"replica-x"}, remotedialer.Token: {"nope"}}, status: 401},
		{name: "peer ID with the peer token, from no known peer", header: http.Header{remotedialer.ID: {"replica-x"}, remotedialer.Token: {sg.peerToken}}, status: 401},
		{name: "peer ID and a valid agent credential", cert: &alphaCert, header: http.Header{ClusterHeader: {"alpha"}, remotedialer.ID: {"replica-x"}, remotedialer.Token: {"nope"}}, status: 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := baseClusters()
			if tc.mutate != nil {
				tc.mutate(m)
			}
			h.setAll(m)
			if tc.lookupErr {
				h.setLookupErr(errors.New("the cache is not synced"))
			}
			defer h.setLookupErr(nil)
			status, body := h.openTunnel(t, tc.cert, tc.header)
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, strings.TrimSpace(body), tc.status)
			}
			rejects := h.takeRejects()
			switch {
			case tc.reject == nil && len(rejects) != 0:
				t.Errorf("events %+v, want none", rejects)
			case tc.reject != nil && (len(rejects) != 1 || rejects[0].cluster != tc.reject.cluster || rejects[0].reason != tc.reject.reason || rejects[0].message == ""):
				t.Errorf("events %+v, want one %s on %s", rejects, tc.reject.reason, tc.reject.cluster)
			}
			if h.srv.HasTunnel("alpha") || h.srv.HasTunnel("beta") {
				t.Error("a tunnel is open")
			}
		})
	}
	if got := h.changesSeen(); len(got) != 0 {
		t.Errorf("tunnels reported although none opened: %+v", got)
	}
	// The same credential opens the tunnel, so the cases above failed for their own reason.
	h.setAll(baseClusters())
	if status, body := h.openTunnel(t, &alphaCert, http.Header{ClusterHeader: {"alpha"}}); status != http.StatusSwitchingProtocols {
		t.Fatalf("alpha's own credential: %d %s", status, body)
	}
	if status, body := h.openTunnel(t, &alphaCert, nil); status != http.StatusSwitchingProtocols {
		t.Fatalf("alpha's own credential, no cluster header: %d %s", status, body)
	}
}

// apiHandler answers like an API server that names itself.
func apiHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%s %s %s", name, r.Method, r.URL.Path)
	})
}

func TestTunnelRoundTrip(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	cert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)

	// No tunnel yet.
	_, _, err := h.get("alpha", "/version", nil)
	if !errors.Is(err, ErrNoTunnel) || !errors.Is(err, remote.ErrNoTunnel) {
		t.Fatalf("dial without a tunnel: %v, want ErrNoTunnel", err)
	}
	if h.srv.HasTunnel("alpha") {
		t.Fatal("HasTunnel before any agent connected")
	}

	agent := h.connect(t, cert, "alpha", apiHandler("agent-1"))
	eventually(t, 5*time.Second, func() bool { return h.reportsOpen("alpha") }, "OnChange(alpha, true) never came: %+v", h.changesSeen())
	if !h.srv.HasTunnel("alpha") || h.srv.HasTunnel("beta") {
		t.Fatal("HasTunnel does not name alpha alone")
	}
	for _, path := range []string{"/api/v1/namespaces", "/apis/apps/v1/deployments"} {
		status, body, err := h.get("alpha", path, nil)
		if err != nil || status != 200 || body != "agent-1 GET "+path {
			t.Fatalf("GET %s through the tunnel: %d %q %v", path, status, body, err)
		}
	}
	// Another cluster has no tunnel.
	if _, _, err := h.get("beta", "/version", nil); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("dial of beta: %v, want ErrNoTunnel", err)
	}
	if h.countChanges("alpha", false) != 0 {
		t.Fatalf("alpha reported closed while open: %+v", h.changesSeen())
	}

	h.srv.Close("alpha")
	select {
	case <-agent.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not close the agent's tunnel")
	}
	eventually(t, 5*time.Second, func() bool { return h.reportsClosed("alpha") }, "OnChange(alpha, false) never came: %+v", h.changesSeen())
	eventually(t, 5*time.Second, func() bool { return !h.srv.HasTunnel("alpha") }, "HasTunnel after Close")
	if _, _, err := h.get("alpha", "/version", nil); !errors.Is(err, ErrNoTunnel) {
		t.Fatalf("dial after Close: %v, want ErrNoTunnel", err)
	}
	for _, c := range h.changesSeen() {
		if c.cluster != "alpha" {
			t.Errorf("OnChange for %s", c.cluster)
		}
	}
	if r := h.takeRejects(); len(r) != 0 {
		t.Errorf("events %+v", r)
	}
	h.srv.mu.Lock()
	left := len(h.srv.sessions)
	h.srv.mu.Unlock()
	if left != 0 {
		t.Errorf("%d clusters still have sessions", left)
	}
}

// The newest tunnel of a cluster wins: the older one is closed, and the cluster stays
// reachable, and reported open, through the newer one.
func TestTunnelNewestWins(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	cert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)

	first := h.connect(t, cert, "alpha", apiHandler("agent-1"))
	eventually(t, 5*time.Second, func() bool { return h.reportsOpen("alpha") }, "first tunnel never reported: %+v", h.changesSeen())
	if _, body, err := h.get("alpha", "/", nil); err != nil || !strings.HasPrefix(body, "agent-1 ") {
		t.Fatalf("through the first tunnel: %q %v", body, err)
	}

	h.connect(t, cert, "alpha", apiHandler("agent-2"))
	select {
	case <-first.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the older tunnel was not closed")
	}
	// Wait for the hub to be done with the first tunnel: its ServeHTTP has returned,
	// and with it what it reports.
	eventually(t, 5*time.Second, func() bool { return h.tunnelsServed.Load() == 1 }, "the hub still serves the first tunnel")
	if !h.srv.HasTunnel("alpha") {
		t.Fatal("no tunnel after the replacement")
	}
	if _, body, err := h.get("alpha", "/", nil); err != nil || !strings.HasPrefix(body, "agent-2 ") {
		t.Fatalf("through the second tunnel: %q %v", body, err)
	}
	h.srv.mu.Lock()
	n := len(h.srv.sessions["alpha"])
	h.srv.mu.Unlock()
	if n != 1 {
		t.Errorf("%d sessions recorded for alpha, want 1", n)
	}
	// The cluster never stopped being reachable: OnChange never said it closed.
	if h.countChanges("alpha", false) != 0 || !h.reportsOpen("alpha") {
		t.Errorf("OnChange calls %+v: the replaced tunnel's end was reported as the cluster's tunnel closing", h.changesSeen())
	}
}

func TestTunnelClosesWhenTheCredentialExpires(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	// Valid for the next two seconds (NotAfter is rounded down to the second).
	cert, leaf := credentialFrom(t, h.srv.signer.Load(), Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}, 2*time.Second, time.Now())
	agent := h.connect(t, cert, "alpha", apiHandler("agent-1"))
	eventually(t, 5*time.Second, func() bool { return h.reportsOpen("alpha") }, "the tunnel never opened: %+v", h.changesSeen())
	select {
	case <-agent.done:
		if time.Now().Before(leaf.NotAfter) {
			t.Fatalf("closed before the credential expired at %v", leaf.NotAfter)
		}
	case <-time.After(time.Until(leaf.NotAfter) + 3*time.Second):
		t.Fatalf("the tunnel stayed open after the credential expired at %v", leaf.NotAfter)
	}
	eventually(t, 5*time.Second, func() bool { return h.reportsClosed("alpha") }, "OnChange(alpha, false) never came: %+v", h.changesSeen())
}

func TestTunnelsCloseWhenTheServerStops(t *testing.T) {
	h := newTestHub(t, hubOptions{noStart: true})
	h.setAll(baseClusters())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.srv.Start(ctx) }()
	eventually(t, 10*time.Second, h.srv.Ready, "never ready")
	cert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)
	agent := h.connect(t, cert, "alpha", apiHandler("agent-1"))
	eventually(t, 5*time.Second, func() bool { return h.reportsOpen("alpha") }, "the tunnel never opened: %+v", h.changesSeen())
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start: %v", err)
	}
	select {
	case <-agent.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the tunnel stayed open after Start returned")
	}
}

// The hub learns of tunnels it did not see open or close (at a peer) by looking every
// watchInterval at the clusters it dials.
func TestWatchReportsTunnelsOfDialedClusters(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	cert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)
	h.connect(t, cert, "alpha", apiHandler("agent-1"))
	eventually(t, 5*time.Second, func() bool { return h.reportsOpen("alpha") }, "the tunnel never opened: %+v", h.changesSeen())
	// alpha was never dialed: the watcher does not know it, and reports nothing.
	n := h.countChanges("alpha", true)
	time.Sleep(2 * watchInterval)
	if got := h.countChanges("alpha", true); got != n {
		t.Fatalf("alpha reported open again without being dialed: %+v", h.changesSeen())
	}
	// Dialed while open: watched as open, nothing new to say.
	_ = h.srv.Dialer("alpha")
	// Dialed while closed: watched as closed; beta opening is reported by the watcher
	// too (here, once by announce and once by the watcher).
	_ = h.srv.Dialer("beta")
	betaCert, _ := h.issue(t, "beta", "cid-beta", tokBeta)
	h.connect(t, betaCert, "beta", apiHandler("agent-b"))
	eventually(t, 5*time.Second, func() bool { return h.countChanges("beta", true) >= 2 }, "the watcher never reported beta: %+v", h.changesSeen())
	if h.countChanges("alpha", true) != n || h.countChanges("alpha", false) != 0 || h.countChanges("beta", false) != 0 {
		t.Fatalf("OnChange calls %+v", h.changesSeen())
	}
}
