package registration

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const token = "0123456789abcdef0123456789abcdef-token"

func TestID(t *testing.T) {
	again := string([]byte(token))
	if ID(token) != ID(again) || ID(token) == ID(token+"x") {
		t.Fatal("the id must follow the token, and only the token")
	}
	if strings.Contains(ManifestURL("https://hub:9443/", token), token) {
		t.Fatal("the manifest URL must not carry the token itself")
	}
	if got := ManifestURL("https://hub:9443/", token); got != "https://hub:9443/v1/register/"+ID(token)+".yaml" {
		t.Fatalf("got %s", got)
	}
	if got := Command("https://hub", token); got != "kubectl apply -f https://hub/v1/register/"+ID(token)+".yaml" {
		t.Fatalf("got %s", got)
	}
}

func TestManifest(t *testing.T) {
	b, err := Manifest("edge-7", token, Hub{URL: "https://hub.example.com", CA: []byte("CA PEM"), Image: "drover:v1"})
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var kinds []string
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if u.Object == nil {
			continue
		}
		kinds = append(kinds, u.GetKind()+"/"+u.GetName())
		if u.GetKind() == "Secret" {
			data, _, _ := unstructured.NestedStringMap(u.Object, "stringData")
			for k, want := range map[string]string{"url": "https://hub.example.com", "ca.crt": "CA PEM", "token": token, "cluster": "edge-7"} {
				if data[k] != want {
					t.Errorf("Secret %s key %s: %q", HubSecretName, k, data[k])
				}
			}
			if u.GetNamespace() != "drover-system" {
				t.Errorf("Secret in %q", u.GetNamespace())
			}
		}
	}
	want := []string{"Namespace/drover-system", "Secret/" + HubSecretName, "ServiceAccount/drover-agent", "ClusterRole/drover:agent",
		"ClusterRoleBinding/drover:agent", "Role/drover:agent", "RoleBinding/drover:agent", "Deployment/drover-agent",
		"ClusterRoleBinding/drover:agent-tunnel"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v", kinds, want)
	}
	if bytes.Contains(b, []byte("creationTimestamp")) {
		t.Error("the manifest carries creationTimestamp")
	}
}

func TestHandler(t *testing.T) {
	current := token
	r := NewRegistry(func(_ context.Context, cluster string) (string, bool) { return current, cluster == "edge-7" })
	r.Set("edge-7", ID(token))
	mux := http.NewServeMux()
	mux.Handle("GET "+PathPrefix+"{file}", r.Handler(func() Hub { return Hub{URL: "https://hub", Image: "drover:v1"} }))
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(PathPrefix + ID(token) + ".yaml"); code != http.StatusOK || !strings.Contains(body, "kind: Deployment") {
		t.Fatalf("known id: %d %.80s", code, body)
	}
	for _, path := range []string{PathPrefix + "nope.yaml", PathPrefix + ID(token), PathPrefix + token + ".yaml"} {
		if code, body := get(path); code != http.StatusNotFound || strings.Contains(body, token) {
			t.Errorf("%s: %d %q", path, code, body)
		}
	}
	// The token changed a moment ago and the registry has not caught up: the old
	// URL is dead already.
	current = token + "-rotated"
	if code, _ := get(PathPrefix + ID(token) + ".yaml"); code != http.StatusNotFound {
		t.Errorf("revoked token: %d", code)
	}
	r.Remove("edge-7")
	current = token
	if code, _ := get(PathPrefix + ID(token) + ".yaml"); code != http.StatusNotFound {
		t.Errorf("removed cluster: %d", code)
	}
}
