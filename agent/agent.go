// Package agent is `drover agent`, which runs in every target cluster.
package agent

import (
	"context"
	"errors"
	"flag"
)

// Main parses the agent's arguments and runs it until ctx is done.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("drover agent", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return errors.New("drover agent is not available in this build yet")
}
