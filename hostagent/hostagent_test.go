package hostagent

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/drover-io/drover/nodeplan"
	"github.com/drover-io/drover/nodes"
)

// Artifacts come from their mirror when the plan names one, else from the hub.
func TestFetch(t *testing.T) {
	serve := func(body string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/v1.36.3/kubelet") {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte(body + " " + r.URL.Path))
		}))
		t.Cleanup(s.Close)
		return s
	}
	hub, mirror := serve("hub"), serve("mirror")
	a := &agent{o: Options{HubURL: hub.URL}, client: hub.Client()}
	for _, tc := range []struct {
		art  nodeplan.Artifact
		want string
	}{
		{nodeplan.Artifact{Name: "v1.36.3/kubelet"}, "hub " + nodes.ArtifactsPrefix + "v1.36.3/kubelet"},
		{nodeplan.Artifact{Name: "v1.36.3/kubelet", URL: mirror.URL + "/drover/v1.36.3/kubelet"}, "mirror /drover/v1.36.3/kubelet"},
	} {
		var b bytes.Buffer
		if err := a.fetch(context.Background(), tc.art, &b); err != nil || b.String() != tc.want {
			t.Errorf("fetch(%+v) = %q, %v; want %q", tc.art, b.String(), err, tc.want)
		}
	}
	if err := a.fetch(context.Background(), nodeplan.Artifact{Name: "v1.36.3/ghost"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a missing artifact: %v", err)
	}
}
