package remote

import (
	"errors"
	"fmt"
	"net/url"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrInvalidKubeconfig marks a kubeconfig that cannot be used as written.
var ErrInvalidKubeconfig = errors.New("invalid kubeconfig")

// ParseKubeconfig turns the bytes of a kubeconfig Secret into a client configuration.
// Its errors say what is wrong in terms of the kubeconfig's structure and never quote
// the input, which holds credentials.
func ParseKubeconfig(data []byte) (*rest.Config, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: it is empty", ErrInvalidKubeconfig)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("%w: it is not valid kubeconfig YAML or JSON", ErrInvalidKubeconfig)
	}
	ctxName := cfg.CurrentContext
	if ctxName == "" {
		if len(cfg.Contexts) != 1 {
			return nil, fmt.Errorf("%w: it sets no current-context and has %d contexts", ErrInvalidKubeconfig, len(cfg.Contexts))
		}
		for name := range cfg.Contexts {
			ctxName = name
		}
	}
	kctx, ok := cfg.Contexts[ctxName]
	if !ok || kctx == nil {
		return nil, fmt.Errorf("%w: its current-context %q does not exist", ErrInvalidKubeconfig, ctxName)
	}
	cluster, ok := cfg.Clusters[kctx.Cluster]
	if !ok || cluster == nil {
		return nil, fmt.Errorf("%w: context %q names cluster %q, which does not exist", ErrInvalidKubeconfig, ctxName, kctx.Cluster)
	}
	u, err := url.Parse(cluster.Server)
	if cluster.Server == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%w: cluster %q has no usable server URL (want https://host:port)", ErrInvalidKubeconfig, kctx.Cluster)
	}
	if cluster.CertificateAuthority != "" || (kctx.AuthInfo != "" && cfg.AuthInfos[kctx.AuthInfo] != nil &&
		(cfg.AuthInfos[kctx.AuthInfo].ClientCertificate != "" || cfg.AuthInfos[kctx.AuthInfo].ClientKey != "" || cfg.AuthInfos[kctx.AuthInfo].TokenFile != "")) {
		return nil, fmt.Errorf("%w: it refers to files on disk (certificate-authority, client-certificate, client-key or tokenFile); embed the data instead (…-data fields or token)", ErrInvalidKubeconfig)
	}
	if ai := cfg.AuthInfos[kctx.AuthInfo]; ai != nil && ai.Exec != nil {
		return nil, fmt.Errorf("%w: user %q uses an exec credential plugin, which the hub does not run; use a token or client certificate", ErrInvalidKubeconfig, kctx.AuthInfo)
	}
	cfg.CurrentContext = ctxName
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: it cannot be turned into a client configuration (check the certificate and key data)", ErrInvalidKubeconfig)
	}
	if _, err := rest.TLSConfigFor(rc); err != nil {
		return nil, fmt.Errorf("%w: its certificate-authority-data, client-certificate-data or client-key-data is not valid PEM", ErrInvalidKubeconfig)
	}
	return rc, nil
}
