// Command drover is Drover's one binary. With no subcommand it runs the manager on the
// hub; `drover agent` runs the agent in a target cluster; `drover version` (or
// `drover --version`) prints the version and commit it was built from.
package main

import (
	"context"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/drover-io/drover/agent"
	"github.com/drover-io/drover/manager"
	"github.com/drover-io/drover/version"
)

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "drover:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "agent" {
		return agent.Main(ctx, args[1:])
	}
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version") {
		fmt.Println(version.Info())
		return nil
	}
	return manager.Main(ctx, args)
}
