package remote

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Values that must never appear in an error or warning message.
const (
	testToken     = "tok-SECRET-7f3a9c2e"
	testPassword  = "pw-SECRET-b81d44e0"
	testURLUser   = "urluser-SECRET-c0ffee"
	testURLPass   = "urlpass-SECRET-deadbeef"
	testProxyUser = "proxyuser-SECRET-1234"
	testProxyPass = "proxypass-SECRET-5678"
	testIDToken   = "idtoken-SECRET-9abc"
	testQuery     = "query-SECRET-4242"
)

var testSecrets = []string{testToken, testPassword, testURLUser, testURLPass, testProxyUser, testProxyPass, testIDToken, testQuery, "SECRET"}

var testCA = sync.OnceValue(func() []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "drover-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
})

// baseConfig is a valid kubeconfig: https server, embedded CA, bearer token.
func baseConfig() *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c1"] = &clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthorityData: testCA()}
	cfg.AuthInfos["u1"] = &clientcmdapi.AuthInfo{Token: testToken}
	cfg.Contexts["ctx"] = &clientcmdapi.Context{Cluster: "c1", AuthInfo: "u1"}
	cfg.CurrentContext = "ctx"
	return cfg
}

func writeConfig(t testing.TB, cfg *clientcmdapi.Config) []byte {
	t.Helper()
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatalf("clientcmd.Write: %v", err)
	}
	return data
}

func TestParseKubeconfigWithPolicy(t *testing.T) {
	server := func(s string) func(*clientcmdapi.Config) {
		return func(c *clientcmdapi.Config) { c.Clusters["c1"].Server = s }
	}
	insecure := func(c *clientcmdapi.Config) {
		c.Clusters["c1"].InsecureSkipTLSVerify = true
		c.Clusters["c1"].CertificateAuthorityData = nil
	}
	proxy := func(s string) func(*clientcmdapi.Config) {
		return func(c *clientcmdapi.Config) { c.Clusters["c1"].ProxyURL = s }
	}
	allowHTTP := Policy{AllowHTTP: true}
	allowLL := Policy{AllowLinkLocal: true}

	tests := []struct {
		name     string
		mutate   func(*clientcmdapi.Config)
		raw      []byte // used instead of mutate when set
		policy   Policy
		wantErr  []string // substrings of the error; nil means no error
		warnings []string // reasons, in order
	}{
		{name: "valid https", mutate: func(*clientcmdapi.Config) {}},
		{name: "valid with path", mutate: server("https://rancher.example.com/k8s/clusters/c-abc")},
		{name: "valid basic auth", mutate: func(c *clientcmdapi.Config) {
			c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{Username: "bob", Password: testPassword}
		}},
		{name: "valid socks5 proxy", mutate: proxy("socks5://proxy.example:1080"), warnings: []string{WarningProxyConfigured}},

		{name: "empty", raw: []byte{}, wantErr: []string{"it is empty"}},
		{name: "garbage", raw: []byte("token: " + testToken + "\n\t- [::"), wantErr: []string{"not valid kubeconfig YAML or JSON"}},
		{name: "no current context, two contexts", mutate: func(c *clientcmdapi.Config) {
			c.CurrentContext = ""
			c.Contexts["other"] = &clientcmdapi.Context{Cluster: "c1", AuthInfo: "u1"}
		}, wantErr: []string{"no current-context and has 2 contexts"}},
		{name: "missing context", mutate: func(c *clientcmdapi.Config) { c.CurrentContext = "nope" }, wantErr: []string{`current-context "nope" does not exist`}},
		{name: "missing cluster", mutate: func(c *clientcmdapi.Config) { c.Contexts["ctx"].Cluster = "gone" }, wantErr: []string{`context "ctx" names cluster "gone", which does not exist`}},
		{name: "no server", mutate: server(""), wantErr: []string{`cluster "c1" has no usable server URL`}},
		{name: "ftp server", mutate: server("ftp://10.0.0.1"), wantErr: []string{`cluster "c1" has no usable server URL`}},

		{name: "http refused", mutate: server("http://10.0.0.1:8080"),
			wantErr: []string{`cluster "c1"`, "http://", "use https", "--allow-insecure-http-clusters"}},
		{name: "HTTP upper case refused", mutate: server("HTTP://10.0.0.1:8080"), wantErr: []string{"--allow-insecure-http-clusters"}},
		{name: "http allowed with warning", mutate: server("http://10.0.0.1:8080"), policy: allowHTTP, warnings: []string{WarningInsecureHTTP}},

		{name: "userinfo in server", mutate: server("https://" + testURLUser + ":" + testURLPass + "@10.0.0.1:6443"),
			wantErr: []string{`cluster "c1" has credentials in its server URL`}},
		{name: "user only in server", mutate: server("https://" + testURLUser + "@10.0.0.1:6443"),
			wantErr: []string{`cluster "c1" has credentials in its server URL`}},
		{name: "userinfo in http server, allowed http", mutate: server("http://" + testURLUser + ":" + testURLPass + "@10.0.0.1"), policy: allowHTTP,
			wantErr: []string{"credentials in its server URL"}},
		{name: "unparsable userinfo in server", mutate: server("https://" + testURLUser + ":" + testURLPass + "^{}@10.0.0.1"),
			wantErr: []string{`cluster "c1"`, "credentials"}},
		{name: "query in server", mutate: server("https://10.0.0.1:6443/?token=" + testQuery), wantErr: []string{`cluster "c1" has a query or fragment`}},
		{name: "empty query in server", mutate: server("https://10.0.0.1:6443/?"), wantErr: []string{"query or fragment"}},
		{name: "fragment in server", mutate: server("https://10.0.0.1:6443/#" + testQuery), wantErr: []string{"query or fragment"}},

		{name: "metadata IPv4", mutate: server("https://169.254.169.254"), wantErr: []string{`cluster "c1"`, "link-local or cloud metadata", "--allow-link-local-clusters"}},
		{name: "link-local IPv4", mutate: server("https://169.254.10.1:6443"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "link-local IPv6", mutate: server("https://[fe80::1]:6443"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "link-local IPv6 with zone", mutate: server("https://[fe80::1%25eth0]:6443"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "AWS IPv6 metadata", mutate: server("https://[fd00:ec2::254]"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "Alibaba metadata", mutate: server("https://100.100.100.200"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "IPv4-mapped metadata", mutate: server("https://[::ffff:169.254.169.254]"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "NAT64 metadata", mutate: server("https://[64:ff9b::a9fe:a9fe]"), wantErr: []string{"--allow-link-local-clusters"}},
		{name: "decimal IPv4 notation", mutate: server("https://2852039166"), wantErr: []string{"neither a host name nor an IP address"}},
		{name: "hex IPv4 notation", mutate: server("https://0xa9.0xfe.0xa9.0xfe"), wantErr: []string{"neither a host name nor an IP address"}},
		{name: "decimal IPv4 notation, allowed link-local", mutate: server("https://2852039166"), policy: allowLL, wantErr: []string{"neither a host name"}},
		{name: "metadata allowed", mutate: server("https://169.254.169.254"), policy: allowLL},
		{name: "link-local IPv6 allowed", mutate: server("https://[fe80::1]:6443"), policy: allowLL},
		{name: "ordinary private IPv6", mutate: server("https://[fd00::1]:6443")},

		{name: "insecure-skip-tls-verify", mutate: insecure, warnings: []string{WarningInsecureSkipTLSVerify}},
		{name: "insecure-skip-tls-verify with CA", mutate: func(c *clientcmdapi.Config) { c.Clusters["c1"].InsecureSkipTLSVerify = true },
			wantErr: []string{`cluster "c1" sets both insecure-skip-tls-verify and certificate-authority-data`}},
		{name: "http and insecure and proxy", mutate: func(c *clientcmdapi.Config) {
			insecure(c)
			c.Clusters["c1"].Server = "http://10.0.0.1"
			c.Clusters["c1"].ProxyURL = "http://proxy.example:3128"
		}, policy: Policy{AllowHTTP: true, AllowLinkLocal: true}, warnings: []string{WarningInsecureHTTP, WarningProxyConfigured}},

		{name: "proxy", mutate: proxy("http://proxy.example:3128"), warnings: []string{WarningProxyConfigured}},
		{name: "proxy with userinfo", mutate: proxy("http://" + testProxyUser + ":" + testProxyPass + "@proxy.example:3128"),
			wantErr: []string{`cluster "c1" has credentials in its proxy-url`}},
		{name: "proxy with unparsable userinfo", mutate: proxy("http://" + testProxyUser + ":" + testProxyPass + "^@proxy.example:3128"),
			wantErr: []string{`cluster "c1"`, "proxy-url", "credentials"}},
		{name: "proxy with bad scheme", mutate: proxy("ftp://proxy.example:21"), wantErr: []string{`cluster "c1" has a proxy-url whose scheme is not http, https or socks5`}},
		{name: "proxy without host", mutate: proxy("proxy.example:3128"), wantErr: []string{"no usable proxy-url"}},
		{name: "proxy on metadata address", mutate: proxy("http://169.254.169.254:80"), wantErr: []string{"proxy-url host", "--allow-link-local-clusters"}},

		{name: "auth-provider", mutate: func(c *clientcmdapi.Config) {
			c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{AuthProvider: &clientcmdapi.AuthProviderConfig{
				Name: "oidc", Config: map[string]string{"id-token": testIDToken, "client-secret": testPassword}}}
		}, wantErr: []string{`user "u1" uses an auth-provider plugin (oidc), which the hub does not run; use a token or client certificate`}},
		{name: "auth-provider with odd name", mutate: func(c *clientcmdapi.Config) {
			c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{AuthProvider: &clientcmdapi.AuthProviderConfig{Name: "x " + testIDToken}}
		}, wantErr: []string{"auth-provider plugin (name not shown)"}},
		{name: "auth-provider with bad CA", mutate: func(c *clientcmdapi.Config) {
			c.Clusters["c1"].CertificateAuthorityData = []byte("not pem")
			c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{AuthProvider: &clientcmdapi.AuthProviderConfig{Name: "gcp"}}
		}, wantErr: []string{"auth-provider plugin (gcp)"}},
		{name: "exec plugin", mutate: func(c *clientcmdapi.Config) {
			c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
				APIVersion: "client.authentication.k8s.io/v1", Command: "aws", Args: []string{"--token", testToken}}}
		}, wantErr: []string{`user "u1" uses an exec credential plugin, which the hub does not run`}},
		{name: "CA file", mutate: func(c *clientcmdapi.Config) {
			c.Clusters["c1"].CertificateAuthorityData = nil
			c.Clusters["c1"].CertificateAuthority = "/etc/ca.pem"
		}, wantErr: []string{"refers to files on disk"}},
		{name: "token file", mutate: func(c *clientcmdapi.Config) { c.AuthInfos["u1"].TokenFile = "/var/run/token" }, wantErr: []string{"refers to files on disk"}},
		{name: "bad CA data", mutate: func(c *clientcmdapi.Config) { c.Clusters["c1"].CertificateAuthorityData = []byte(testPassword) },
			wantErr: []string{"is not valid PEM"}},
		{name: "bad client key", mutate: func(c *clientcmdapi.Config) {
			c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{ClientCertificateData: testCA(), ClientKeyData: []byte(testPassword)}
		}, wantErr: []string{"not valid PEM"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.raw
			if data == nil {
				cfg := baseConfig()
				tt.mutate(cfg)
				data = writeConfig(t, cfg)
			}
			rc, warnings, err := ParseKubeconfigWithPolicy(data, tt.policy)
			for _, text := range messages(err, warnings) {
				for _, s := range testSecrets {
					if strings.Contains(text, s) {
						t.Errorf("message %q contains secret %q", text, s)
					}
				}
			}
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("want error containing %q, got none", tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidKubeconfig) {
					t.Errorf("error %v does not wrap ErrInvalidKubeconfig", err)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				if rc != nil || warnings != nil {
					t.Errorf("error with config %v or warnings %v", rc, warnings)
				}
			} else {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if rc == nil || rc.Host == "" {
					t.Fatalf("no usable rest.Config: %+v", rc)
				}
			}
			var reasons []string
			for _, w := range warnings {
				reasons = append(reasons, w.Reason)
				if w.Message == "" || !strings.Contains(w.Message, `cluster "c1"`) {
					t.Errorf("warning %+v does not name the cluster", w)
				}
			}
			if strings.Join(reasons, ",") != strings.Join(tt.warnings, ",") {
				t.Errorf("warnings %v, want %v", reasons, tt.warnings)
			}

			// ParseKubeconfig is the strict default without warnings.
			rc2, err2 := ParseKubeconfig(data)
			_, _, errDefault := ParseKubeconfigWithPolicy(data, Policy{})
			if (err2 == nil) != (errDefault == nil) || (err2 != nil && err2.Error() != errDefault.Error()) {
				t.Errorf("ParseKubeconfig error %v, ParseKubeconfigWithPolicy(Policy{}) error %v", err2, errDefault)
			}
			if err2 == nil && rc2 == nil {
				t.Errorf("ParseKubeconfig returned neither config nor error")
			}
		})
	}
}

func TestParseKubeconfigWithPolicyConfig(t *testing.T) {
	cfg := baseConfig()
	cfg.Clusters["c1"].ProxyURL = "http://proxy.example:3128"
	rc, warnings, err := ParseKubeconfigWithPolicy(writeConfig(t, cfg), Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://10.0.0.1:6443" || rc.BearerToken != testToken || rc.Proxy == nil || len(rc.CAData) == 0 {
		t.Errorf("unexpected config: host %q token set %t proxy set %t CA set %t", rc.Host, rc.BearerToken != "", rc.Proxy != nil, len(rc.CAData) > 0)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].Message, "proxy.example:3128") {
		t.Errorf("want a proxy warning naming the proxy host, got %+v", warnings)
	}
}

func TestIsLinkLocalOrMetadataAndDialAddress(t *testing.T) {
	for addr, want := range map[string]bool{
		"169.254.169.254:443":         true,
		"169.254.0.1:80":              true,
		"[fe80::1%lo]:443":            true,
		"[fe80::abcd]:443":            true,
		"[fd00:ec2::254]:80":          true,
		"100.100.100.200:80":          true,
		"[::ffff:169.254.169.254]:80": true,
		"[64:ff9b::a9fe:a9fe]:80":     true,
		"127.0.0.1:6443":              false,
		"10.0.0.1:6443":               false,
		"100.100.100.201:80":          false,
		"[fd00:ec2::253]:80":          false,
		"[2001:db8::1]:443":           false,
	} {
		err := checkDialAddress("tcp", addr)
		if got := errors.Is(err, ErrAddressNotAllowed); got != want {
			t.Errorf("checkDialAddress(%q) = %v, want refused %t", addr, err, want)
		}
	}
	if err := checkDialAddress("unix", "/run/x.sock"); err != nil {
		t.Errorf("unix socket refused: %v", err)
	}
	if err := checkDialAddress("tcp4", "not-an-ip:80"); !errors.Is(err, ErrAddressNotAllowed) {
		t.Errorf("unreadable address not refused: %v", err)
	}
}

// messages collects what a parse says to users: its error and its warnings.
func messages(err error, warnings []Warning) []string {
	var texts []string
	if err != nil {
		texts = append(texts, err.Error())
	}
	for _, w := range warnings {
		texts = append(texts, w.Message)
	}
	return texts
}
