package admission

import (
	"strings"
	"testing"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

func TestVersionSkew(t *testing.T) {
	nodes := []v1alpha1.ProvisionedNode{{Name: "c-a", KubernetesVersion: "v1.36.3"}, {Name: "c-b", KubernetesVersion: "v1.37.0"}}
	for _, tc := range []struct {
		version, want string
	}{
		{"v1.37.2", ""},
		{"v1.38.0", "node c-a still runs v1.36.3"},
		{"v1.35.9", "never downgrades"},
	} {
		vs := VersionSkew(tc.version, nodes)
		got := ""
		if len(vs) > 0 {
			got = vs[0].Message
			if vs[0].Field != "spec.provisioning.kubernetesVersion" {
				t.Errorf("field %s", vs[0].Field)
			}
		}
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.version, got, tc.want)
		}
	}
}
