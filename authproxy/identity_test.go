package authproxy

import (
	"net/http"
	"net/url"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apiserver/pkg/authentication/user"
)

func TestForward(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         user.Info
		wantUser   string
		wantGroups []string
	}{
		{"person keeps name and groups", &user.DefaultInfo{Name: "alice@example.com", Groups: []string{"devs", "system:authenticated"}},
			"alice@example.com", []string{"system:authenticated", "devs"}},
		{"system:masters never forwarded", &user.DefaultInfo{Name: "root", Groups: []string{"system:masters", "system:authenticated"}},
			"root", []string{"system:authenticated"}},
		{"hub ServiceAccount prefixed, its system groups dropped", &user.DefaultInfo{Name: "system:serviceaccount:ci:deployer",
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"}},
			"drover:hub:system:serviceaccount:ci:deployer", []string{"system:authenticated"}},
		{"other system users prefixed", &user.DefaultInfo{Name: "system:kube-scheduler"}, "drover:hub:system:kube-scheduler", []string{"system:authenticated"}},
		{"a name that looks prefixed is prefixed again", &user.DefaultInfo{Name: "drover:hub:system:serviceaccount:ci:deployer"},
			"drover:hub:drover:hub:system:serviceaccount:ci:deployer", []string{"system:authenticated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			id := Forward(tc.in)
			g.Expect(id.User).To(Equal(tc.wantUser))
			g.Expect(id.Groups).To(Equal(tc.wantGroups))
			g.Expect(id.Extra[ExtraHubUser]).To(Equal([]string{tc.in.GetName()}))
		})
	}
}

func TestHeaders(t *testing.T) {
	g := NewWithT(t)
	h := http.Header{}
	h.Set("Authorization", "Bearer secret")
	h.Set("Impersonate-User", "admin")
	h.Add("Impersonate-Group", "system:masters")
	h.Set("Impersonate-Extra-Scopes", "x")
	h.Set("Impersonate-Uid", "1")
	h.Set("X-Remote-User", "admin")
	h.Set("X-Remote-Extra-Scopes", "all")
	h.Set("Sec-WebSocket-Protocol", "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.c2VjcmV0")
	h.Set("Accept", "application/json")
	stripCredentials(h)
	g.Expect(h).To(Equal(http.Header{"Accept": {"application/json"}, "Sec-Websocket-Protocol": {"v5.channel.k8s.io"}}))

	setImpersonation(h, Forward(&user.DefaultInfo{Name: "alice", UID: "u-1", Groups: []string{"devs", "system:masters"}}))
	g.Expect(h.Get("Impersonate-User")).To(Equal("alice"))
	g.Expect(h.Values("Impersonate-Group")).To(ConsistOf("system:authenticated", "devs"))
	key := "Impersonate-Extra-" + url.PathEscape(ExtraHubGroups)
	g.Expect(h.Values(key)).To(ConsistOf("devs", "system:masters"))
	g.Expect(h.Values("Impersonate-Extra-" + url.PathEscape(ExtraHubUID))).To(Equal([]string{"u-1"}))
}

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct {
		raw, name, rest string
		bad             bool
	}{
		{raw: "/clusters/prod-eu-1/api/v1/pods", name: "prod-eu-1", rest: "/api/v1/pods"},
		{raw: "/clusters/prod-eu-1", name: "prod-eu-1", rest: "/"},
		{raw: "/clusters/prod-eu-1/", name: "prod-eu-1", rest: "/"},
		{raw: "/clusters/a/apis/rbac.authorization.k8s.io/v1/clusterroles/system:basic-user", name: "a", rest: "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:basic-user"},
		{raw: "/clusters/a/../b/api", bad: true},
		{raw: "/clusters/a/api/%2e%2e/%2e%2e/b", bad: true},
		{raw: "/clusters/a%2fb/api", bad: true},
		{raw: "/clusters/a/api%2F..%2Fx", bad: true},
		{raw: "/clusters/a/api%5cx", bad: true},
		{raw: "/clusters/a//api", bad: true},
		{raw: "/clusters/A_B/api", bad: true},
		{raw: "/clusters//api", bad: true},
		{raw: "/other/a", bad: true},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			g := NewWithT(t)
			u, err := url.Parse(tc.raw)
			g.Expect(err).NotTo(HaveOccurred())
			name, rest, err := splitPath(u)
			if tc.bad {
				g.Expect(err).To(HaveOccurred())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(name).To(Equal(tc.name))
			g.Expect(rest).To(Equal(tc.rest))
		})
	}
}
