// Package userkubeconfig is `drover kubeconfig`: run with a person's hub kubeconfig,
// it prints a kubeconfig with one context per cluster that person may reach through
// the authentication proxy, each pointing at <hub-url>/clusters/<name> with the hub
// server's CA and the person's own hub credentials (token, client certificate or exec
// plugin, copied from the hub kubeconfig). The same binary, installed as
// kubectl-drover, is the kubectl plugin `kubectl drover kubeconfig`.
package userkubeconfig

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/drover-io/drover/authproxy"
	"github.com/drover-io/drover/hubserver"
)

// Options are the command's flags.
type Options struct {
	// Kubeconfig and Context select the hub kubeconfig, as kubectl does.
	Kubeconfig, Context string
	// Clusters restricts the output to these clusters.
	Clusters []string
	// Namespace is the operator namespace, which holds ConfigMap drover-hub-ca.
	Namespace string
	// HubURL and HubCAFile override what ConfigMap drover-hub-ca says.
	HubURL, HubCAFile string
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, strings.Split(v, ",")...); return nil }

// Main parses args and prints the kubeconfig to stdout.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover kubeconfig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	var clusters stringList
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "Path to your hub kubeconfig. Defaults to $KUBECONFIG, then ~/.kube/config.")
	fs.StringVar(&o.Context, "context", "", "The context of the hub kubeconfig to use.")
	fs.Var(&clusters, "cluster", "A cluster to include (repeatable, or comma-separated). Default: every cluster you may reach.")
	fs.StringVar(&o.Namespace, "namespace", "drover-system", "The hub's operator namespace, which holds ConfigMap drover-hub-ca.")
	fs.StringVar(&o.HubURL, "hub-url", "", "The hub server's URL. Default: key url of ConfigMap drover-hub-ca.")
	fs.StringVar(&o.HubCAFile, "hub-ca-file", "", "A PEM file with the hub server's CA. Default: key ca.crt of ConfigMap drover-hub-ca.")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, "Usage: drover kubeconfig [--cluster NAME ...] [--kubeconfig HUB-KUBECONFIG] > clusters.kubeconfig")
		_, _ = fmt.Fprintln(stderr, "Prints a kubeconfig with one context per cluster you may reach through the hub's authentication proxy.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; name clusters with --cluster", fs.Arg(0))
	}
	o.Clusters = clusters
	cfg, warnings, err := Generate(ctx, o)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		_, _ = fmt.Fprintln(stderr, "warning:", w)
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// Generate builds the kubeconfig. Warnings name requested clusters the caller may
// not reach.
func Generate(ctx context.Context, o Options) (*clientcmdapi.Config, []string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.Context})
	raw, err := loader.RawConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("load your hub kubeconfig: %w", err)
	}
	if o.Context != "" {
		raw.CurrentContext = o.Context
	}
	if err := clientcmdapi.MinifyConfig(&raw); err != nil {
		return nil, nil, fmt.Errorf("your hub kubeconfig: %w", err)
	}
	if err := clientcmdapi.FlattenConfig(&raw); err != nil {
		return nil, nil, fmt.Errorf("your hub kubeconfig: %w", err)
	}
	hubCtx := raw.Contexts[raw.CurrentContext]
	authName := hubCtx.AuthInfo
	auth := raw.AuthInfos[authName]
	if auth == nil {
		return nil, nil, fmt.Errorf("your hub kubeconfig's context %q names no user", raw.CurrentContext)
	}
	hubCfg, err := loader.ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("load your hub kubeconfig: %w", err)
	}

	hubURL, ca, err := hubServer(ctx, o, hubCfg)
	if err != nil {
		return nil, nil, err
	}
	reachable, err := listClusters(ctx, hubCfg, hubURL, ca)
	if err != nil {
		return nil, nil, err
	}
	names := reachable
	var warnings []string
	if len(o.Clusters) > 0 {
		ok := map[string]bool{}
		for _, n := range reachable {
			ok[n] = true
		}
		names = nil
		for _, n := range o.Clusters {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			if !ok[n] {
				warnings = append(warnings, fmt.Sprintf("cluster %q is not among the clusters the hub lists for you; the proxy will refuse it unless the hub grants you get on managedclusters/proxy for it", n))
			}
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, warnings, errors.New("you may reach no cluster through the hub: no AccessBinding names you (or your groups)")
	}
	out := clientcmdapi.NewConfig()
	out.AuthInfos[authName] = auth
	for _, n := range names {
		out.Clusters[n] = &clientcmdapi.Cluster{Server: strings.TrimSuffix(hubURL, "/") + authproxy.PathPrefix + n,
			CertificateAuthorityData: ca}
		out.Contexts[n] = &clientcmdapi.Context{Cluster: n, AuthInfo: authName}
	}
	out.CurrentContext = names[0]
	return out, warnings, nil
}

// hubServer finds the hub server's URL and CA: flags first, then ConfigMap
// drover-hub-ca, which every authenticated hub user may read.
func hubServer(ctx context.Context, o Options, hubCfg *rest.Config) (string, []byte, error) {
	hubURL := o.HubURL
	var ca []byte
	if o.HubCAFile != "" {
		b, err := os.ReadFile(o.HubCAFile)
		if err != nil {
			return "", nil, fmt.Errorf("--hub-ca-file: %w", err)
		}
		ca = b
	}
	if hubURL == "" || ca == nil {
		cs, err := kubernetes.NewForConfig(hubCfg)
		if err != nil {
			return "", nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		cm, err := cs.CoreV1().ConfigMaps(o.Namespace).Get(rctx, hubserver.CAConfigMapName, metav1.GetOptions{})
		if err != nil {
			return "", nil, fmt.Errorf("read ConfigMap %s/%s, where the hub publishes its server's URL and CA (or pass --hub-url and --hub-ca-file): %w",
				o.Namespace, hubserver.CAConfigMapName, err)
		}
		if hubURL == "" {
			hubURL = cm.Data[hubserver.URLKey]
		}
		if ca == nil {
			ca = []byte(cm.Data[hubserver.CAKey])
		}
		if hubURL == "" {
			return "", nil, fmt.Errorf("ConfigMap %s/%s has no key %s (a manager older than the proxy?); pass --hub-url", o.Namespace, hubserver.CAConfigMapName, hubserver.URLKey)
		}
	}
	u, err := url.Parse(hubURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", nil, fmt.Errorf("the hub URL %q is not an https URL", hubURL)
	}
	return hubURL, ca, nil
}

// listClusters asks the hub server which clusters the caller may reach, with the
// caller's own credentials.
func listClusters(ctx context.Context, hubCfg *rest.Config, hubURL string, ca []byte) ([]string, error) {
	// The caller's own credentials, but the hub server's address and CA.
	cfg := rest.CopyConfig(hubCfg)
	cfg.Host, cfg.APIPath = hubURL, ""
	cfg.CAData, cfg.CAFile, cfg.ServerName, cfg.Insecure = ca, "", "", false
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, strings.TrimSuffix(hubURL, "/")+authproxy.ListPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the hub server at %s for your clusters: %w", hubURL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var st metav1.Status
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			return nil, fmt.Errorf("the hub server at %s: %s", hubURL, st.Message)
		}
		return nil, fmt.Errorf("the hub server at %s answered %s", hubURL, resp.Status)
	}
	var list authproxy.ClusterList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("the hub server at %s: unexpected answer: %w", hubURL, err)
	}
	names := make([]string, 0, len(list.Clusters))
	for _, c := range list.Clusters {
		names = append(names, c.Name)
	}
	return names, nil
}
