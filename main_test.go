package main

import "testing"

func TestPluginArgs(t *testing.T) {
	for _, tc := range []struct {
		argv0 string
		args  []string
		ok    bool
	}{
		{"/usr/local/bin/drover", nil, true}, // the manager
		{"/usr/local/bin/drover", []string{"kubeconfig"}, true},
		{"/usr/local/bin/kubectl-drover", []string{"kubeconfig", "--cluster=a"}, true},
		{"kubectl-drover", nil, false},               // never the manager
		{"kubectl-drover", []string{"agent"}, false}, // nor anything else
		{"/home/me/bin/kubectl-drover", []string{"--kubeconfig=x"}, false},
	} {
		if _, ok := pluginArgs(tc.argv0, tc.args); ok != tc.ok {
			t.Errorf("pluginArgs(%q, %q) ok = %v, want %v", tc.argv0, tc.args, ok, tc.ok)
		}
	}
}
