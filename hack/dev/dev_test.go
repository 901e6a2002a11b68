package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConsolePrefixesWholeLines(t *testing.T) {
	var out bytes.Buffer
	c := &console{out: &out, now: func() time.Time { return time.Date(2026, 1, 2, 12, 0, 1, 0, time.UTC) }}
	w := c.writer("manager", colorManager)
	// Lines arrive in pieces; zap's own timestamp gives way to the console's.
	for _, p := range []string{"2026-01-02T12:00:00.123Z\tINFO\tStarting", " manager\nsecond line\r\n", "partial"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	want := "12:00:01 [manager] INFO\tStarting manager\n12:00:01 [manager] second line\n"
	if got := out.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFindOwnedMatchesOnlyOurBinariesInOurDirectory(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	dir := t.TempDir()
	start := func(name string) *exec.Cmd {
		bin := filepath.Join(dir, name)
		if err := os.Symlink(sleep, bin); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	ours := start("kube-apiserver")
	start("not-ours") // runs from the directory, but is not one of make dev's programs

	found := findOwned(dir)
	if len(found) != 1 || found[0].pid != ours.Process.Pid || found[0].name != "kube-apiserver" {
		t.Fatalf("findOwned(%s) = %v, want only kube-apiserver (pid %d)", dir, found, ours.Process.Pid)
	}
	if other := findOwned(filepath.Join(dir, "elsewhere")); len(other) != 0 {
		t.Errorf("findOwned of another directory = %v, want nothing", other)
	}
}

func TestLockDirAdmitsOneRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".dev")
	first, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := lockDir(dir); !errors.Is(err, errAlreadyRunning) || !strings.Contains(err.Error(), "4242") {
		t.Fatalf("second lockDir: got %v, want %v naming pid 4242", err, errAlreadyRunning)
	}
	_ = first.Close()
	second, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lockDir after the first run ended: %v", err)
	}
	_ = second.Close()
}

func TestCleanDirKeepsTheLock(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"lock", "hub.kubeconfig", "state/hub/etcd/member"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cleanDir(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "lock" {
		t.Errorf("left %v, want only lock", entries)
	}
}

func TestPlanPutsTunnelledTargetsLast(t *testing.T) {
	o := options{targets: 2, tunnelled: 2, nodes: []int{3, 2}}
	ts := plan(o)
	var got []string
	for _, tg := range ts {
		got = append(got, fmt.Sprintf("%s tunnel=%v nodes=%d %s", tg.name, tg.tunnel, tg.nodes, labelString(tg.labels)))
	}
	want := []string{
		"target-1 tunnel=false nodes=3 {env=prod,region=eu}",
		"target-2 tunnel=false nodes=2 {env=staging,region=us}",
		"edge-1 tunnel=true nodes=2 {env=prod,region=edge}",
		"edge-2 tunnel=true nodes=2 {env=staging,region=edge}",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan = %q, want %q", got, want)
	}
	if ts[0].how() != "kubeconfig" || ts[2].how() != "agent tunnel" {
		t.Errorf("how: %q, %q", ts[0].how(), ts[2].how())
	}
}

func TestParseFlagsTunnelTargets(t *testing.T) {
	args := os.Args
	t.Cleanup(func() { os.Args = args })
	os.Args = []string{"drover-dev"}
	o, err := parseFlags()
	if err != nil || o.targets != 2 || o.tunnelled != 1 {
		t.Fatalf("defaults: %+v, %v; want 2 kubeconfig targets and 1 tunnelled", o, err)
	}
	os.Args = []string{"drover-dev", "--tunnel-targets=0"}
	if o, err := parseFlags(); err != nil || o.tunnelled != 0 {
		t.Errorf("--tunnel-targets=0: %+v, %v", o, err)
	}
	os.Args = []string{"drover-dev", "--tunnel-targets=10"}
	if _, err := parseFlags(); err == nil {
		t.Error("--tunnel-targets=10: no error")
	}
}

func TestClusterStateString(t *testing.T) {
	for _, c := range []struct {
		s    clusterState
		want string
	}{
		{clusterState{}, "waiting for the manager"},
		{clusterState{reason: "AwaitingAgent", message: "waiting for the agent"}, "Ready=False AwaitingAgent: waiting for the agent"},
		{clusterState{ready: true, version: "v1.36.3", nodes: "2/2"}, "Ready, Kubernetes v1.36.3, 2/2 nodes ready, agent not reporting yet"},
		{clusterState{ready: true, agentReady: true}, "Ready, agent reporting"},
		{clusterState{ready: true, agentReady: true, agent: "dev"}, "Ready, agent dev reporting"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("%+v: got %q, want %q", c.s, got, c.want)
		}
	}
}
