package authproxy

import (
	"net/http"
	"net/url"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apiserver/pkg/authentication/user"
)

// HubPrefix goes before the name of every hub user that a target could otherwise
// take for one of its own system identities: a hub ServiceAccount
// system:serviceaccount:ns:name reaches targets as
// drover:hub:system:serviceaccount:ns:name, never as a ServiceAccount of the target.
const HubPrefix = "drover:hub:"

// Keys of the impersonation extras that carry the caller's hub identity into the
// target's audit log. Targets need `impersonate` on userextras/<key> for each.
const (
	ExtraHubUser   = "drover.io/hub-user"
	ExtraHubGroups = "drover.io/hub-groups"
	ExtraHubUID    = "drover.io/hub-uid"
)

// Identity is what the proxy asks a target to impersonate.
type Identity struct {
	User   string
	Groups []string
	Extra  map[string][]string
}

// Forward turns a hub identity into the identity the target sees:
//   - a user named system:... (ServiceAccounts, nodes, control-plane components) or
//     already drover:hub:... gets HubPrefix, so that no hub identity can act as a
//     target's own system identity, and no two hub identities map to one name;
//   - groups named system:... are dropped (system:masters above all), except
//     system:authenticated, which every authenticated caller has anyway;
//   - the original name, groups and UID go into impersonation extras, for the
//     target's audit log.
func Forward(u user.Info) Identity {
	name := u.GetName()
	if strings.HasPrefix(name, "system:") || strings.HasPrefix(name, HubPrefix) {
		name = HubPrefix + name
	}
	groups := []string{user.AllAuthenticated}
	for _, g := range u.GetGroups() {
		if strings.HasPrefix(g, "system:") || g == "" {
			continue
		}
		groups = append(groups, g)
	}
	extra := map[string][]string{ExtraHubUser: {u.GetName()}}
	if gs := u.GetGroups(); len(gs) > 0 {
		extra[ExtraHubGroups] = append([]string(nil), gs...)
	}
	if uid := u.GetUID(); uid != "" {
		extra[ExtraHubUID] = []string{uid}
	}
	return Identity{User: name, Groups: groups, Extra: extra}
}

// Has tells whether the identity is in group g.
func (id Identity) Has(g string) bool {
	for _, have := range id.Groups {
		if have == g {
			return true
		}
	}
	return false
}

// bearerProtocolPrefix marks a websocket subprotocol that carries a bearer token
// (what kubectl and browsers use where they cannot set headers).
const bearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."

// stripCredentials removes everything from h that could carry the caller's
// credentials or identity to the target: Authorization, every Impersonate-* header,
// the front-proxy identity headers (X-Remote-User, -Group, -Uid, -Extra-*) and bearer
// tokens in websocket subprotocols.
func stripCredentials(h http.Header) {
	h.Del("Authorization")
	h.Del("Proxy-Authorization")
	for k := range h {
		if l := strings.ToLower(k); strings.HasPrefix(l, "impersonate-") || strings.HasPrefix(l, "x-remote-") {
			delete(h, k)
		}
	}
	if protos := h.Values("Sec-Websocket-Protocol"); len(protos) > 0 {
		var keep []string
		for _, v := range protos {
			for _, p := range strings.Split(v, ",") {
				p = strings.TrimSpace(p)
				if p != "" && !strings.HasPrefix(p, bearerProtocolPrefix) {
					keep = append(keep, p)
				}
			}
		}
		h.Del("Sec-Websocket-Protocol")
		if len(keep) > 0 {
			h.Set("Sec-Websocket-Protocol", strings.Join(keep, ","))
		}
	}
}

// setImpersonation writes the identity into h as impersonation headers.
func setImpersonation(h http.Header, id Identity) {
	h.Set(authenticationv1.ImpersonateUserHeader, id.User)
	for _, g := range id.Groups {
		h.Add(authenticationv1.ImpersonateGroupHeader, g)
	}
	for k, vs := range id.Extra {
		// The API server lower-cases and unescapes extra keys; a '/' must be escaped.
		key := authenticationv1.ImpersonateUserExtraHeaderPrefix + url.PathEscape(strings.ToLower(k))
		for _, v := range vs {
			h.Add(key, v)
		}
	}
}
