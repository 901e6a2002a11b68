package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// proxyDemo shows the authentication proxy with the sample AccessBinding
// sre-view-prod: bob (group sre) gets a client certificate from the hub, `drover
// kubeconfig` writes his kubeconfig for the first and the last kubeconfig target, and
// make dev lists pods through the proxy in both: allowed in the first (env=prod),
// refused in the last. It returns the lines for the banner.
func (d *dev) proxyDemo(ctx context.Context, hubc client.Client, allowed, refused string) []string {
	// What the installation grants every hub user: reading the hub server's URL and CA.
	if _, _, err := applyFiles(ctx, hubc, []string{filepath.Join(d.root, "config", "rbac", "hub_ca_reader.yaml")}); err != nil {
		d.con.printf("proxy demo skipped: %v", err)
		return nil
	}
	hubKC, err := d.hub.AddUser("bob", "sre")
	if err != nil {
		d.con.printf("proxy demo skipped: %v", err)
		return nil
	}
	bobHub, bob := d.kubeconfigPath("bob-hub"), d.kubeconfigPath("bob")
	if err := os.WriteFile(bobHub, hubKC, 0o600); err != nil {
		d.con.printf("proxy demo skipped: %v", err)
		return nil
	}
	kubeconfigCmd := []string{"kubeconfig", "--kubeconfig=" + bobHub, "--cluster=" + allowed + "," + refused}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, d.drover, kubeconfigCmd...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		d.con.printf("proxy demo: drover kubeconfig failed: %v: %s", err, stderr.String())
		return nil
	}
	if err := os.WriteFile(bob, out, 0o600); err != nil {
		d.con.printf("proxy demo skipped: %v", err)
		return nil
	}
	cfg, err := clientcmd.LoadFromFile(bob)
	if err != nil {
		d.con.printf("proxy demo: %v", err)
		return nil
	}
	for _, name := range []string{allowed, refused} {
		rc, err := clientcmd.NewNonInteractiveClientConfig(*cfg, name, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
		if err != nil {
			d.con.printf("proxy demo: %v", err)
			return nil
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			d.con.printf("proxy demo: %v", err)
			return nil
		}
		pods, err := cs.CoreV1().Pods("").List(cctx, metav1.ListOptions{})
		if err != nil {
			d.con.printf("bob through the proxy, kubectl --context %s get pods -A: refused: %v", name, err)
		} else {
			d.con.printf("bob through the proxy, kubectl --context %s get pods -A: allowed, %d pods", name, len(pods.Items))
		}
	}
	return []string{
		"\n  # The authentication proxy: bob (group sre) logs in to the hub once (a client certificate here)",
		"  # and reaches every cluster through it, with what sre-view-prod gives him in each (docs/proxy.md)",
		fmt.Sprintf("  %s %s > %s", d.rel(d.drover), strings.Join(kubeconfigCmd, " "), d.rel(bob)),
		fmt.Sprintf("  kubectl --kubeconfig %s --context %s get pods -A    # allowed: env=prod", d.rel(bob), allowed),
		fmt.Sprintf("  kubectl --kubeconfig %s --context %s get pods -A    # refused: no AccessBinding selects it for bob", d.rel(bob), refused),
		fmt.Sprintf("  %s kubeconfig --kubeconfig=%s    # without --cluster: every cluster bob may reach", d.rel(d.drover), d.rel(bobHub)),
	}
}
