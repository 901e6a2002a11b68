// Command drover is Drover's one binary. With no subcommand it runs the manager on the
// hub; `drover agent` runs the agent in a target cluster; `drover node-agent` runs on a
// host of a cluster Drover provisions; `drover kubeconfig` prints a
// person's kubeconfig for the authentication proxy (also as the kubectl plugin
// `kubectl drover kubeconfig`, when installed as kubectl-drover); `drover version` (or
// `drover --version`) prints the version and commit it was built from; `drover
// etcd-snapshot-s3` stores and fetches etcd snapshots in S3-compatible storage, run on
// an etcd node by its plan.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/drover-io/drover/agent"
	"github.com/drover-io/drover/hostagent"
	"github.com/drover-io/drover/manager"
	"github.com/drover-io/drover/snapshotstore"
	"github.com/drover-io/drover/userkubeconfig"
	"github.com/drover-io/drover/version"
)

func main() {
	args, ok := pluginArgs(os.Args[0], os.Args[1:])
	if !ok {
		fmt.Fprintln(os.Stderr, "Usage: kubectl drover kubeconfig [--cluster NAME ...]")
		os.Exit(2)
	}
	if err := run(ctrl.SetupSignalHandler(), args); err != nil {
		fmt.Fprintln(os.Stderr, "drover:", err)
		os.Exit(1)
	}
}

// pluginArgs checks the arguments of the binary installed as the kubectl plugin
// kubectl-drover: `kubectl drover kubeconfig ...` runs `kubectl-drover kubeconfig
// ...`, and under that name the binary runs nothing else (never the manager).
func pluginArgs(argv0 string, args []string) ([]string, bool) {
	if !strings.HasPrefix(filepath.Base(argv0), "kubectl-drover") {
		return args, true
	}
	return args, len(args) > 0 && args[0] == "kubeconfig"
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "agent" {
		return agent.Main(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "node-agent" {
		return hostagent.Main(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == snapshotstore.Command {
		return snapshotstore.Main(ctx, args[1:], os.Stdout)
	}
	if len(args) > 0 && args[0] == "kubeconfig" {
		return userkubeconfig.Main(ctx, args[1:], os.Stdout, os.Stderr)
	}
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version") {
		fmt.Println(version.Info())
		return nil
	}
	return manager.Main(ctx, args)
}
