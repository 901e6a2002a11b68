package manager

import (
	"context"
	"strings"
	"testing"
)

// TestShardFlag: a bad --shard, or one with --leader-elect, stops the manager before
// it starts, with a message that says what is wrong.
func TestShardFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--shard=2/2"}, "between 0 and 1"},
		{[]string{"--shard=0/0"}, "between 1 and 64"},
		{[]string{"--shard=1"}, "want K/N"},
		{[]string{"--shard=0/2", "--leader-elect"}, "--shard and --leader-elect exclude each other"},
		{[]string{"--shard=0/2", "--shard-lease-duration=100ms"}, "at least 1s"},
	} {
		err := Main(context.Background(), append(tc.args, "--metrics-bind-address=0", "--health-probe-bind-address=0"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("drover %s: %v; want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
