package remote

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// FuzzParseKubeconfig checks that parsing never panics, under either policy, and that
// no error or warning ever contains a credential of the input.
//
// To keep the property sound (a fuzzed token may well be "cluster", which every
// message contains), the credential check runs on a rewrite of the input: every
// token, password, auth-provider setting and URL userinfo is replaced by a marker
// that occurs nowhere in the input, so any marker in a message is a leak.
func FuzzParseKubeconfig(f *testing.F) {
	seed := func(mutate func(*clientcmdapi.Config)) {
		cfg := baseConfig()
		mutate(cfg)
		f.Add(writeConfig(f, cfg))
	}
	seed(func(*clientcmdapi.Config) {})
	seed(func(c *clientcmdapi.Config) {
		c.AuthInfos["u1"] = &clientcmdapi.AuthInfo{Username: "bob", Password: testPassword}
		c.Clusters["c1"].Server = "http://" + testURLUser + ":" + testURLPass + "@10.0.0.1:8080/?token=" + testQuery
	})
	seed(func(c *clientcmdapi.Config) {
		c.Clusters["c1"].ProxyURL = "socks5://" + testProxyUser + ":" + testProxyPass + "@proxy:1080"
		c.Clusters["c1"].InsecureSkipTLSVerify = true
	})
	seed(func(c *clientcmdapi.Config) {
		c.Clusters["c1"].Server = "https://[fe80::1%25eth0]:6443"
		c.AuthInfos["u1"].AuthProvider = &clientcmdapi.AuthProviderConfig{Name: "oidc", Config: map[string]string{"id-token": testIDToken}}
	})
	seed(func(c *clientcmdapi.Config) {
		c.AuthInfos["u1"].ClientKeyData = []byte(testPassword)
		c.AuthInfos["u1"].ClientCertificateData = testCA()
	})
	f.Add([]byte(`{"kind":"Config","clusters":[{"name":"c","cluster":{"server":"https://2852039166"}}],"contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],"users":[{"name":"u","user":{"token":"t0ken-value"}}]}`))
	f.Add([]byte("token: [::\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range []Policy{{}, {AllowHTTP: true, AllowLinkLocal: true}} {
			rc, warnings, err := ParseKubeconfigWithPolicy(data, p)
			if err == nil && rc == nil {
				t.Fatalf("neither config nor error")
			}
			if err != nil && (rc != nil || warnings != nil) {
				t.Fatalf("error %v with a config or warnings", err)
			}
		}

		cfg, err := clientcmd.Load(data)
		if err != nil {
			return
		}
		original, err := clientcmd.Write(*cfg)
		if err != nil {
			return
		}
		var markers []string
		marker := func() string {
			for extra := ""; ; extra += "q" {
				m := fmt.Sprintf("Zk%dSeCrEtMaRk%s", len(markers), extra)
				if !bytes.Contains(data, []byte(m)) && !bytes.Contains(original, []byte(m)) {
					markers = append(markers, m)
					return m
				}
			}
		}
		withoutUserinfo := func(raw string) string {
			u, err := url.Parse(raw)
			if err != nil || u.User == nil {
				return raw
			}
			u.User = url.UserPassword(marker(), marker())
			return u.String()
		}
		for _, ai := range cfg.AuthInfos {
			if ai == nil {
				continue
			}
			if ai.Token != "" {
				ai.Token = marker()
			}
			if ai.Password != "" {
				ai.Password = marker()
			}
			if ai.AuthProvider != nil {
				for k := range ai.AuthProvider.Config {
					ai.AuthProvider.Config[k] = marker()
				}
			}
		}
		for _, c := range cfg.Clusters {
			if c == nil {
				continue
			}
			c.Server = withoutUserinfo(c.Server)
			c.ProxyURL = withoutUserinfo(c.ProxyURL)
		}
		if len(markers) == 0 {
			return
		}
		rewritten, err := clientcmd.Write(*cfg)
		if err != nil {
			return
		}
		for _, p := range []Policy{{}, {AllowHTTP: true, AllowLinkLocal: true}} {
			_, warnings, err := ParseKubeconfigWithPolicy(rewritten, p)
			for _, text := range messages(err, warnings) {
				for _, m := range markers {
					if strings.Contains(text, m) {
						t.Fatalf("message %q contains a credential of the input (%s)", text, m)
					}
				}
			}
		}
	})
}
