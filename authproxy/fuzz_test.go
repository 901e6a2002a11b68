package authproxy

import (
	"net/url"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/user"
)

// FuzzSplitPath: whatever the request path, an accepted one names a valid cluster
// and an API path that cannot climb out of it.
func FuzzSplitPath(f *testing.F) {
	for _, s := range []string{"/clusters/a/api/v1/pods", "/clusters/a/../b", "/clusters/a%2fb/api", "/clusters/a/api/%2e%2e/x",
		"/clusters/a//api", "/clusters/a", "/clusters/a/api%5c..%5cb", "/clusters/x.y/apis/g/v1/ns/n/r/name:with:colons"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		name, rest, err := splitPath(u)
		if err != nil {
			return
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Fatalf("%q: accepted cluster name %q: %v", raw, name, errs)
		}
		if !strings.HasPrefix(rest, "/") {
			t.Fatalf("%q: rest %q does not start with /", raw, rest)
		}
		for _, seg := range strings.Split(rest, "/")[1:] {
			if seg == "." || seg == ".." {
				t.Fatalf("%q: rest %q holds a dot segment", raw, rest)
			}
		}
		if strings.Contains(strings.ToLower(u.EscapedPath()), "%2f") {
			t.Fatalf("%q: accepted an encoded slash", raw)
		}
	})
}

// FuzzForward: no hub identity reaches a target as a system: user or with a system:
// group other than system:authenticated, and two different hub users never map to
// one target user.
func FuzzForward(f *testing.F) {
	f.Add("alice", "system:serviceaccount:ns:sa", "system:masters")
	f.Add("drover:hub:system:admin", "system:admin", "devs")
	f.Fuzz(func(t *testing.T, a, b, group string) {
		fa := Forward(&user.DefaultInfo{Name: a, Groups: []string{group}})
		fb := Forward(&user.DefaultInfo{Name: b})
		if strings.HasPrefix(fa.User, "system:") {
			t.Fatalf("%q forwarded as %q", a, fa.User)
		}
		for _, g := range fa.Groups {
			if strings.HasPrefix(g, "system:") && g != user.AllAuthenticated {
				t.Fatalf("group %q forwarded", g)
			}
		}
		if a != b && fa.User == fb.User {
			t.Fatalf("%q and %q both forwarded as %q", a, b, fa.User)
		}
	})
}
