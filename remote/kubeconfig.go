package remote

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrInvalidKubeconfig marks a kubeconfig that cannot be used as written.
var ErrInvalidKubeconfig = errors.New("invalid kubeconfig")

// Flags of the manager that relax Policy; messages name them.
const (
	FlagAllowInsecureHTTP = "--allow-insecure-http-clusters"
	FlagAllowLinkLocal    = "--allow-link-local-clusters"
)

// Reasons of the warnings ParseKubeconfigWithPolicy returns.
const (
	WarningInsecureHTTP          = "InsecureHTTP"
	WarningInsecureSkipTLSVerify = "InsecureSkipTLSVerify"
	WarningProxyConfigured       = "ProxyConfigured"
)

// Policy says which kubeconfigs and endpoints the hub accepts (manager flags).
type Policy struct {
	// AllowHTTP accepts http:// servers (nothing authenticates the server there). Default false.
	AllowHTTP bool
	// AllowLinkLocal accepts servers on link-local addresses (169.254.0.0/16, fe80::/10) and
	// cloud metadata addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200). Default false.
	AllowLinkLocal bool
}

// Warning is something accepted but unsafe, which the hub surfaces as a Warning condition.
type Warning struct{ Reason, Message string }

// ParseKubeconfig turns the bytes of a kubeconfig Secret into a client configuration
// under the strict default Policy. Its errors say what is wrong in terms of the
// kubeconfig's structure and never quote the input, which holds credentials.
func ParseKubeconfig(data []byte) (*rest.Config, error) {
	rc, _, err := ParseKubeconfigWithPolicy(data, Policy{})
	return rc, err
}

// ParseKubeconfigWithPolicy parses and checks a kubeconfig; ParseKubeconfig(data) ==
// ParseKubeconfigWithPolicy(data, Policy{}) minus warnings. Every error wraps
// ErrInvalidKubeconfig, names the element at fault (cluster "x", user "y") and never
// quotes values that may hold credentials (server and proxy URLs, tokens, passwords,
// key data, auth-provider configuration).
func ParseKubeconfigWithPolicy(data []byte, p Policy) (*rest.Config, []Warning, error) {
	if len(data) == 0 {
		return nil, nil, invalid("it is empty")
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, nil, invalid("it is not valid kubeconfig YAML or JSON")
	}
	ctxName := cfg.CurrentContext
	if ctxName == "" {
		if len(cfg.Contexts) != 1 {
			return nil, nil, invalid("it sets no current-context and has %d contexts", len(cfg.Contexts))
		}
		for name := range cfg.Contexts {
			ctxName = name
		}
	}
	kctx, ok := cfg.Contexts[ctxName]
	if !ok || kctx == nil {
		return nil, nil, invalid("its current-context %q does not exist", ctxName)
	}
	cluster, ok := cfg.Clusters[kctx.Cluster]
	if !ok || cluster == nil {
		return nil, nil, invalid("context %q names cluster %q, which does not exist", ctxName, kctx.Cluster)
	}
	var warnings []Warning

	// The server URL. Nothing of it is quoted: it may carry credentials.
	u, err := url.Parse(cluster.Server)
	if err != nil && strings.Contains(cluster.Server, "@") {
		// url.Parse refuses some userinfo (e.g. unescaped characters); say what is
		// most likely wrong rather than "no usable server URL".
		return nil, nil, invalid("cluster %q has a server URL that cannot be parsed and seems to hold credentials (user:password@); remove them and put credentials in the user entry", kctx.Cluster)
	}
	if err == nil && u.User != nil {
		return nil, nil, invalid("cluster %q has credentials in its server URL (user:password@host); remove them and put credentials in the user entry (token or client certificate)", kctx.Cluster)
	}
	if cluster.Server == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, nil, invalid("cluster %q has no usable server URL (want https://host:port)", kctx.Cluster)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" {
		return nil, nil, invalid("cluster %q has a query or fragment in its server URL; the server URL is https://host:port with an optional path", kctx.Cluster)
	}
	if u.Scheme == "http" {
		if !p.AllowHTTP {
			return nil, nil, invalid("cluster %q uses an http:// server URL, where nothing authenticates the server and credentials travel in clear text; use https, or start the manager with %s", kctx.Cluster, FlagAllowInsecureHTTP)
		}
		warnings = append(warnings, Warning{Reason: WarningInsecureHTTP, Message: fmt.Sprintf(
			"cluster %q uses an http:// server URL: nothing authenticates the server and credentials travel in clear text", kctx.Cluster)})
	}
	if msg := checkHost(u.Hostname(), p); msg != "" {
		return nil, nil, invalid("cluster %q has a server host that %s", kctx.Cluster, msg)
	}

	// TLS.
	if cluster.InsecureSkipTLSVerify {
		if len(cluster.CertificateAuthorityData) > 0 {
			return nil, nil, invalid("cluster %q sets both insecure-skip-tls-verify and certificate-authority-data; remove insecure-skip-tls-verify", kctx.Cluster)
		}
		if u.Scheme == "https" {
			warnings = append(warnings, Warning{Reason: WarningInsecureSkipTLSVerify, Message: fmt.Sprintf(
				"cluster %q sets insecure-skip-tls-verify: the hub does not check the server's certificate, so anyone on the path can impersonate the server and capture the credentials; set certificate-authority-data instead", kctx.Cluster)})
		}
	}

	// The proxy. Only its host is named; userinfo in it is refused.
	if cluster.ProxyURL != "" {
		pu, err := url.Parse(cluster.ProxyURL)
		switch {
		case err != nil && strings.Contains(cluster.ProxyURL, "@"):
			return nil, nil, invalid("cluster %q has a proxy-url that cannot be parsed and seems to hold credentials (user:password@); the hub does not support proxy credentials", kctx.Cluster)
		case err == nil && pu.User != nil:
			return nil, nil, invalid("cluster %q has credentials in its proxy-url (user:password@host); the hub does not support proxy credentials, remove them", kctx.Cluster)
		case err != nil || pu.Host == "":
			return nil, nil, invalid("cluster %q has no usable proxy-url (want http://, https:// or socks5://host:port)", kctx.Cluster)
		case pu.Scheme != "http" && pu.Scheme != "https" && pu.Scheme != "socks5":
			return nil, nil, invalid("cluster %q has a proxy-url whose scheme is not http, https or socks5", kctx.Cluster)
		}
		if msg := checkHost(pu.Hostname(), p); msg != "" {
			return nil, nil, invalid("cluster %q has a proxy-url host that %s", kctx.Cluster, msg)
		}
		warnings = append(warnings, Warning{Reason: WarningProxyConfigured, Message: fmt.Sprintf(
			"cluster %q sends its traffic through the %s proxy at %s, which must be trusted", kctx.Cluster, pu.Scheme, pu.Host)})
	}

	// The user. Plugins first: they would otherwise fail later with a misleading message.
	ai := cfg.AuthInfos[kctx.AuthInfo]
	if ai != nil && ai.AuthProvider != nil {
		return nil, nil, invalid("user %q uses an auth-provider plugin (%s), which the hub does not run; use a token or client certificate", kctx.AuthInfo, safeName(ai.AuthProvider.Name))
	}
	if cluster.CertificateAuthority != "" || (ai != nil && (ai.ClientCertificate != "" || ai.ClientKey != "" || ai.TokenFile != "")) {
		return nil, nil, invalid("it refers to files on disk (certificate-authority, client-certificate, client-key or tokenFile); embed the data instead (…-data fields or token)")
	}
	if ai != nil && ai.Exec != nil {
		return nil, nil, invalid("user %q uses an exec credential plugin, which the hub does not run; use a token or client certificate", kctx.AuthInfo)
	}

	cfg.CurrentContext = ctxName
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, nil, invalid("it cannot be turned into a client configuration (check the certificate and key data)")
	}
	if _, err := rest.TLSConfigFor(rc); err != nil {
		return nil, nil, invalid("its certificate-authority-data, client-certificate-data or client-key-data is not valid PEM")
	}
	return rc, warnings, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidKubeconfig}, args...)...)
}

// checkHost returns why host (a URL's host name, without port or brackets) is not
// acceptable under p, or "" if it is. Only literal addresses are judged here; names
// are checked after resolution by GuardDial.
func checkHost(host string, p Policy) string {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		if looksNumeric(host) {
			// "2852039166", "0251.0376.0251.0376" or "0xa9.254.169.254": resolvers may read
			// these as IPv4 addresses, which would slip past the literal check.
			return "is neither a host name nor an IP address in standard notation"
		}
		return ""
	}
	if !p.AllowLinkLocal && isLinkLocalOrMetadata(addr) {
		return fmt.Sprintf("is a link-local or cloud metadata address (%s); start the manager with %s if this is intended", addr.WithZone(""), FlagAllowLinkLocal)
	}
	return ""
}

// looksNumeric reports whether a host name's last label is numeric (decimal or
// 0x-prefixed hex), which no DNS name has but legacy IPv4 notations do.
func looksNumeric(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if l := strings.ToLower(last); strings.HasPrefix(l, "0x") {
		last = l[2:]
		for _, r := range last {
			if !strings.ContainsRune("0123456789abcdef", r) {
				return false
			}
		}
		return true
	}
	for _, r := range last {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// isLinkLocalOrMetadata reports whether addr is a link-local unicast address
// (169.254.0.0/16, fe80::/10) or a cloud metadata address, also when written as an
// IPv4-mapped or NAT64 (64:ff9b::/96) IPv6 address.
func isLinkLocalOrMetadata(addr netip.Addr) bool {
	addr = addr.WithZone("").Unmap()
	if addr.Is6() && nat64.Contains(addr) {
		b := addr.As16()
		addr = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	if addr.IsLinkLocalUnicast() {
		return true
	}
	for _, m := range metadataAddrs {
		if addr == m {
			return true
		}
	}
	return false
}

// safeName returns s if it is a short plain identifier, and a placeholder otherwise,
// so that a name field is never a channel for quoting arbitrary input.
func safeName(s string) string {
	if s == "" {
		return "unnamed"
	}
	if len(s) > 64 {
		return "name not shown"
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_' && r != '.' {
			return "name not shown"
		}
	}
	return s
}
