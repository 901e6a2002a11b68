// Package kubeconfig loads a client configuration the way kubectl does: the
// --kubeconfig flag, then $KUBECONFIG, then ~/.kube/config, then the in-cluster
// service account. Both the manager and the agent use it, so both run outside a
// cluster as well as inside one.
package kubeconfig

import (
	"flag"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Flags are the standard kubeconfig flags.
type Flags struct {
	// Path is the --kubeconfig flag.
	Path string
	// Context is the --context flag.
	Context string
}

// BindFlags registers --kubeconfig and --context.
func (f *Flags) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.Path, "kubeconfig", "", "Path to a kubeconfig. Defaults to $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.")
	fs.StringVar(&f.Context, "context", "", "The kubeconfig context to use.")
}

// RESTConfig resolves the client configuration.
func (f *Flags) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Path
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.Context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster): %w", err)
	}
	return cfg, nil
}
