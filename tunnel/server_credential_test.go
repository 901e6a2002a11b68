package tunnel

import (
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	tokAlpha  = "alpha-bootstrap-token-5e1f0c8a9b7d"
	tokBeta   = "beta-bootstrap-token-77aa01c3d2e4f"
	tokFresh  = "fresh-bootstrap-token-0b9c8d7e6f5a"
	tokDoomed = "doomed-bootstrap-token-1a2b3c4d5e6f"
	tokWrong  = "wrong-bootstrap-token-ffffffffffff"
)

// baseClusters is what the hub knows in the credential and tunnel tests.
func baseClusters() map[string]ClusterInfo {
	return map[string]ClusterInfo{
		"alpha": {Registered: true, UID: "uid-alpha", Token: tokAlpha, ClusterID: "cid-alpha"},
		"beta":  {Registered: true, UID: "uid-beta", Token: tokBeta, ClusterID: "cid-beta"},
		// Registered, never connected: no cluster ID recorded yet.
		"fresh":  {Registered: true, UID: "uid-fresh", Token: tokFresh},
		"doomed": {Registered: true, UID: "uid-doomed", Deleting: true, Token: tokDoomed, ClusterID: "cid-doomed"},
		// The bootstrap token was revoked after the agent got its credential.
		"revoked": {Registered: true, UID: "uid-revoked", ClusterID: "cid-revoked"},
	}
}

func TestCredentialExchange(t *testing.T) {
	h := newTestHub(t, hubOptions{})
	h.setAll(baseClusters())
	alphaCert, _ := h.issue(t, "alpha", "cid-alpha", tokAlpha)
	betaCert, _ := h.issue(t, "beta", "cid-beta", tokBeta)
	sg := h.srv.signer.Load()
	expired, _ := credentialFrom(t, sg, Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}, time.Hour, time.Now().Add(-2*time.Hour))
	foreign, _ := credentialFrom(t, newTestSigner(t), Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}, time.Hour, time.Now())
	h.takeRejects()

	type want struct {
		status int
		id     *Identity // the credential issued, for 200
		reject *rejection
	}
	cases := []struct {
		name      string
		cluster   string
		clusterID string
		auth      string // Authorization header
		cert      *tls.Certificate
		body      string // instead of a valid request for cluster, clusterID
		mutate    func(map[string]ClusterInfo)
		lookupErr bool
		want
	}{
		// The bootstrap token.
		{name: "token: right", cluster: "alpha", clusterID: "cid-alpha", auth: "Bearer " + tokAlpha,
			want: want{status: 200, id: &Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}}},
		{name: "token: first registration takes the agent's cluster ID", cluster: "fresh", clusterID: "cid-whatever", auth: "Bearer " + tokFresh,
			want: want{status: 200, id: &Identity{Cluster: "fresh", UID: "uid-fresh", ClusterID: "cid-whatever"}}},
		{name: "token: wrong", cluster: "alpha", clusterID: "cid-alpha", auth: "Bearer " + tokWrong,
			want: want{status: 401, reject: &rejection{cluster: "alpha", reason: ReasonTokenRejected}}},
		{name: "token: another cluster's", cluster: "alpha", clusterID: "cid-alpha", auth: "Bearer " + tokBeta,
			want: want{status: 401, reject: &rejection{cluster: "alpha", reason: ReasonTokenRejected}}},
		{name: "token: a prefix of the right one", cluster: "alpha", clusterID: "cid-alpha", auth: "Bearer " + tokAlpha[:10],
			want: want{status: 401, reject: &rejection{cluster: "alpha", reason: ReasonTokenRejected}}},
		{name: "token: none", cluster: "alpha", clusterID: "cid-alpha",
			want: want{status: 401, reject: &rejection{cluster: "alpha", reason: ReasonTokenRejected}}},
		{name: "token: not a bearer token", cluster: "alpha", clusterID: "cid-alpha", auth: "Basic " + tokAlpha,
			want: want{status: 401, reject: &rejection{cluster: "alpha", reason: ReasonTokenRejected}}},
		{name: "token: empty, and the cluster has none", cluster: "revoked", clusterID: "cid-revoked", auth: "Bearer ",
			want: want{status: 401, reject: &rejection{cluster: "revoked", reason: ReasonTokenRejected}}},
		{name: "token: unknown cluster", cluster: "ghost", clusterID: "cid-ghost", auth: "Bearer " + tokAlpha,
			want: want{status: 401}},
		{name: "token: right, cluster being deleted", cluster: "doomed", clusterID: "cid-doomed", auth: "Bearer " + tokDoomed,
			want: want{status: 401}},
		{name: "token: right, agent in another cluster", cluster: "alpha", clusterID: "cid-other", auth: "Bearer " + tokAlpha,
			want: want{status: 409, reject: &rejection{cluster: "alpha", reason: ReasonClusterMismatch}}},
		{name: "token: hub cannot look the cluster up", cluster: "alpha", clusterID: "cid-alpha", auth: "Bearer " + tokAlpha, lookupErr: true,
			want: want{status: 503}},

		// Renewal with the current credential.
		{name: "renewal: own credential", cluster: "alpha", clusterID: "cid-alpha", cert: &alphaCert,
			want: want{status: 200, id: &Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}}},
		{name: "renewal: own credential, bootstrap token revoked since", cluster: "alpha", clusterID: "cid-alpha", cert: &alphaCert,
			mutate: func(m map[string]ClusterInfo) { i := m["alpha"]; i.Token = ""; m["alpha"] = i },
			want:   want{status: 200, id: &Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}}},
		{name: "renewal: while the cluster is being deleted", cluster: "alpha", clusterID: "cid-alpha", cert: &alphaCert,
			mutate: func(m map[string]ClusterInfo) { i := m["alpha"]; i.Deleting = true; m["alpha"] = i },
			want:   want{status: 200, id: &Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}}},
		{name: "renewal: alpha's credential for beta", cluster: "beta", clusterID: "cid-beta", cert: &alphaCert,
			want: want{status: 403, reject: &rejection{cluster: "beta", reason: ReasonClusterMismatch}}},
		{name: "renewal: alpha's credential for beta, with beta's token too", cluster: "beta", clusterID: "cid-beta", cert: &alphaCert, auth: "Bearer " + tokBeta,
			want: want{status: 403, reject: &rejection{cluster: "beta", reason: ReasonClusterMismatch}}},
		{name: "renewal: beta's credential for alpha", cluster: "alpha", clusterID: "cid-alpha", cert: &betaCert,
			want: want{status: 403, reject: &rejection{cluster: "alpha", reason: ReasonClusterMismatch}}},
		{name: "renewal: ManagedCluster deleted and created again", cluster: "alpha", clusterID: "cid-alpha", cert: &alphaCert,
			mutate: func(m map[string]ClusterInfo) { i := m["alpha"]; i.UID = "uid-alpha-2"; m["alpha"] = i },
			want:   want{status: 403}},
		{name: "renewal: ManagedCluster gone", cluster: "alpha", clusterID: "cid-alpha", cert: &alphaCert,
			mutate: func(m map[string]ClusterInfo) { delete(m, "alpha") },
			want:   want{status: 403}},
		{name: "renewal: from another cluster than the credential's", cluster: "alpha", clusterID: "cid-other", cert: &alphaCert,
			want: want{status: 403, reject: &rejection{cluster: "alpha", reason: ReasonClusterMismatch}}},
		{name: "renewal: expired credential", cluster: "alpha", clusterID: "cid-alpha", cert: &expired,
			want: want{status: 401}},
		{name: "renewal: credential of another CA", cluster: "alpha", clusterID: "cid-alpha", cert: &foreign,
			want: want{status: 401}},
		{name: "renewal: hub cannot look the cluster up", cluster: "alpha", clusterID: "cid-alpha", cert: &alphaCert, lookupErr: true,
			want: want{status: 503}},

		// Malformed requests.
		{name: "bad: not JSON", body: "cluster=alpha", auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: truncated JSON", body: `{"cluster":"alpha"`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: empty body", body: "", auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: no cluster", body: `{"clusterID":"cid-alpha","csr":"x"}`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: no cluster ID", body: `{"cluster":"alpha","csr":"x"}`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: no CSR", body: `{"cluster":"alpha","clusterID":"cid-alpha"}`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: cluster is no DNS name", body: `{"cluster":"Alpha_1","clusterID":"cid-alpha","csr":"x"}`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: over 64 KiB", body: `{"cluster":"alpha","clusterID":"cid-alpha","csr":"` + strings.Repeat("A", 70<<10) + `"}`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		{name: "bad: CSR is garbage, token right", body: `{"cluster":"alpha","clusterID":"cid-alpha","csr":"garbage"}`, auth: "Bearer " + tokAlpha, want: want{status: 400}},
		// Checking the token comes first: a bad CSR says nothing to a wrong token.
		{name: "bad: CSR is garbage, token wrong", body: `{"cluster":"alpha","clusterID":"cid-alpha","csr":"garbage"}`, auth: "Bearer " + tokWrong,
			want: want{status: 401, reject: &rejection{cluster: "alpha", reason: ReasonTokenRejected}}},
	}
	bodies := map[string]string{}
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
			h.takeRejects()

			var key *ecdsa.PrivateKey
			body := []byte(tc.body)
			if tc.cluster != "" {
				var csr []byte
				key, csr = newCSR(t)
				body = credentialBody(t, tc.cluster, tc.clusterID, csr)
			}
			start := time.Now()
			resp, got := h.post(t, body, tc.auth, tc.cert)
			bodies[tc.name] = got
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, strings.TrimSpace(got), tc.status)
			}
			rejects := h.takeRejects()
			for _, secret := range []string{tokAlpha, tokBeta, tokFresh, tokDoomed, tokWrong} {
				if strings.Contains(got, secret) {
					t.Errorf("the response holds a token: %s", got)
				}
				for _, r := range rejects {
					if strings.Contains(r.message, secret) {
						t.Errorf("the event holds a token: %s", r.message)
					}
				}
			}
			switch {
			case tc.reject == nil && len(rejects) != 0:
				t.Errorf("events %+v, want none", rejects)
			case tc.reject != nil && (len(rejects) != 1 || rejects[0].cluster != tc.reject.cluster || rejects[0].reason != tc.reject.reason || rejects[0].message == ""):
				t.Errorf("events %+v, want one %s on %s", rejects, tc.reject.reason, tc.reject.cluster)
			}
			if tc.id == nil {
				if strings.Contains(got, "BEGIN CERTIFICATE") {
					t.Errorf("a refusal holds a certificate: %s", got)
				}
				return
			}
			checkIssued(t, h, resp, got, key, *tc.id, start, DefaultCredentialTTL)
		})
	}
	// An unknown cluster, one being deleted and a wrong token look the same.
	if a, b, c := bodies["token: unknown cluster"], bodies["token: wrong"], bodies["token: right, cluster being deleted"]; a != b || a != c || a == "" {
		t.Errorf("unknown cluster %q, wrong token %q, deleted cluster %q: want the same answer", a, b, c)
	}
}

// checkIssued checks a 200 answer of the credential endpoint.
func checkIssued(t *testing.T, h *testHub, resp *http.Response, body string, key *ecdsa.PrivateKey, want Identity, start time.Time, ttl time.Duration) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	var out CredentialResponse
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if b, _ := pem.Decode([]byte(out.Certificate)); b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %s", out.Certificate)
	}
	cert := parseCertPEM(t, []byte(out.Certificate))
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		t.Error("the credential is not for the CSR's key")
	}
	got, err := h.srv.signer.Load().verify(cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want.NotAfter = cert.NotAfter
	if !reflect.DeepEqual(got, want) {
		t.Errorf("credential names %+v, want %+v", got, want)
	}
	if cert.NotAfter.Before(start.Add(ttl).Add(-time.Second)) || cert.NotAfter.After(time.Now().Add(ttl)) {
		t.Errorf("NotAfter %v, want %v after %v", cert.NotAfter, ttl, start)
	}
	if d := out.NotAfter.Sub(cert.NotAfter); d < 0 || d > time.Second {
		t.Errorf("the answer says notAfter %v, the certificate %v", out.NotAfter, cert.NotAfter)
	}
}

func TestCredentialTTL(t *testing.T) {
	h := newTestHub(t, hubOptions{ttl: 90 * time.Minute})
	h.setAll(baseClusters())
	key, csr := newCSR(t)
	start := time.Now()
	resp, body := h.post(t, credentialBody(t, "alpha", "cid-alpha", csr), "Bearer "+tokAlpha, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	checkIssued(t, h, resp, body, key, Identity{Cluster: "alpha", UID: "uid-alpha", ClusterID: "cid-alpha"}, start, 90*time.Minute)
}

func TestNotReadyServerAnswers503(t *testing.T) {
	h := newTestHub(t, hubOptions{noStart: true})
	h.setAll(baseClusters())
	_, csr := newCSR(t)
	if resp, body := h.post(t, credentialBody(t, "alpha", "cid-alpha", csr), "Bearer "+tokAlpha, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("credential: %d %s", resp.StatusCode, body)
	}
	if status, body := h.openTunnel(t, nil, http.Header{ClusterHeader: {"alpha"}}); status != http.StatusServiceUnavailable {
		t.Errorf("tunnel: %d %s", status, body)
	}
	if h.srv.Ready() {
		t.Error("ready without Start")
	}
	if r := h.takeRejects(); len(r) != 0 {
		t.Errorf("events %+v", r)
	}
}
