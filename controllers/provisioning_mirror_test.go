package controllers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestParseChecksums(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	got, err := ParseChecksums(strings.NewReader("# made by sha256sum\n" + a + "  v1.36.3/kubelet\n" + b + " *./images/pause.tar\n\n"))
	if err != nil || got["v1.36.3/kubelet"] != a || got["images/pause.tar"] != b || len(got) != 2 {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", a + " kubelet\n", "xyz  kubelet\n", a + "  kube let\n"} {
		if _, err := ParseChecksums(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMirrorChecksums(t *testing.T) {
	var hits atomic.Int32
	sum := strings.Repeat("c", 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/drover/SHA256SUMS" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(sum + "  v1.36.3/etcd\n"))
	}))
	t.Cleanup(srv.Close)
	m := newMirrors()
	for range 3 {
		got, err := m.checksums(context.Background(), srv.URL+"/drover/")
		if err != nil || got["v1.36.3/etcd"] != sum {
			t.Fatalf("%v %v", got, err)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("the mirror was read %d times; want once, then from the cache", hits.Load())
	}
	if _, err := m.checksums(context.Background(), srv.URL+"/elsewhere"); err == nil || !strings.Contains(err.Error(), "spec.provisioning.artifactsURL: "+srv.URL+"/elsewhere/SHA256SUMS answered 404") {
		t.Fatalf("err = %v", err)
	}
}
