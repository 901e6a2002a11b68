package nodeagent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/drover-io/drover/nodeplan"
)

// host is an agent applying plans into a temporary root, as `drover node-agent
// --root` would on a host.
type host struct {
	t      *testing.T
	root   string
	a      *Agent
	plans  chan Signed
	cancel context.CancelFunc
	done   chan error
}

func newHost(t *testing.T) *host {
	t.Helper()
	root := t.TempDir()
	h := &host{t: t, root: root}
	h.start()
	return h
}

// start starts (or restarts) the agent on the same root and data directory.
func (h *host) start() {
	h.t.Helper()
	a, err := New(Options{DataDir: filepath.Join(h.root, "var/lib/drover"), Root: h.root, RetryMin: 50 * time.Millisecond,
		RetryMax: 200 * time.Millisecond, StopTimeout: 2 * time.Second, Log: testr.New(h.t),
		Fetch: func(_ context.Context, art nodeplan.Artifact, w io.Writer) error {
			content, ok := artifactSource[art.Name]
			if !ok {
				return fmt.Errorf("%s: 404 Not Found", art.Name)
			}
			_, err := w.Write([]byte(content))
			return err
		}})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.a, h.plans, h.cancel, h.done = a, make(chan Signed, 4), cancel, make(chan error, 1)
	go func() { h.done <- a.Run(ctx, h.plans) }()
	h.t.Cleanup(h.stop)
}

func (h *host) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Error(err)
	}
	h.cancel = nil
}

func (h *host) send(p *nodeplan.Plan) string {
	h.t.Helper()
	b, sum, err := nodeplan.Encode(p)
	if err != nil {
		h.t.Fatal(err)
	}
	h.plans <- Signed{Data: b, Checksum: sum}
	return sum
}

func (h *host) path(p string) string { return filepath.Join(h.root, p) }

// until polls the agent's status until pred holds.
func (h *host) until(what string, pred func(Status) bool) Status {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := h.a.Status()
		if pred(s) {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: never; status %+v", what, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// artifactSource is what the tests' artifact source serves.
var artifactSource = map[string]string{"hello": "#!/bin/sh\necho hello\n"}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestArtifactsAndDroppedFiles(t *testing.T) {
	h := newHost(t)
	bin := h.path("/var/lib/drover/bin/hello")
	p := &nodeplan.Plan{
		Artifacts:    []nodeplan.Artifact{{Name: "hello", SHA256: digest(artifactSource["hello"])}},
		Files:        []nodeplan.File{{Path: "/etc/a", Content: []byte("a")}, {Path: "/etc/b", Content: []byte("b")}},
		Instructions: []nodeplan.Instruction{{Name: "run-it", Command: nodeplan.Command{Path: bin}}},
	}
	sum := h.send(p)
	h.until("applied", func(s Status) bool { return s.AppliedChecksum == sum })
	if st, err := os.Stat(bin); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("artifact: %v %v", st, err)
	}
	// A digest that does not match what the source serves: refused, nothing replaced.
	p.Artifacts[0].SHA256 = digest("something else")
	sum = h.send(p)
	s := h.until("refused", func(s Status) bool { return s.Failure != nil && s.Failure.Checksum == sum })
	if s.Failure.Step != "artifacts[0] (hello)" || !strings.Contains(s.Failure.Message, "the plan says") {
		t.Fatalf("failure %+v", s.Failure)
	}
	if b, _ := os.ReadFile(bin); string(b) != artifactSource["hello"] {
		t.Fatal("the installed artifact was replaced")
	}
	// An artifact the source does not have.
	p.Artifacts = []nodeplan.Artifact{{Name: "ghost", SHA256: digest("x")}}
	sum = h.send(p)
	s = h.until("refused", func(s Status) bool { return s.Failure != nil && s.Failure.Checksum == sum })
	if !strings.Contains(s.Failure.Message, "ghost: 404 Not Found") {
		t.Fatalf("failure %+v", s.Failure)
	}
	// Files a plan drops are removed; files the agent never wrote are not.
	if err := os.WriteFile(h.path("/etc/mine"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum = h.send(&nodeplan.Plan{Files: []nodeplan.File{{Path: "/etc/a", Content: []byte("a")}}})
	h.until("applied", func(s Status) bool { return s.AppliedChecksum == sum })
	if _, err := os.Stat(h.path("/etc/b")); !os.IsNotExist(err) {
		t.Fatalf("/etc/b: %v", err)
	}
	for _, f := range []string{"/etc/a", "/etc/mine"} {
		if _, err := os.Stat(h.path(f)); err != nil {
			t.Fatal(err)
		}
	}
}

func sh(script string) nodeplan.Command {
	return nodeplan.Command{Path: "/bin/sh", Args: []string{"-c", script}}
}

func TestFilesAndInstructions(t *testing.T) {
	h := newHost(t)
	counter := "/var/run/joined"
	p := &nodeplan.Plan{
		Files: []nodeplan.File{{Path: "/etc/kubernetes/pki/ca.key", Content: []byte("secret"), Mode: 0o600},
			{Path: "/etc/kubernetes/config.yaml", Content: []byte("a: 1\n")}},
		Instructions: []nodeplan.Instruction{{Name: "join", Command: sh("mkdir -p " + h.path("/var/run") + " && echo x >> " + h.path(counter))}},
	}
	sum := h.send(p)
	h.until("applied", func(s Status) bool { return s.AppliedChecksum == sum })
	st, err := os.Stat(h.path("/etc/kubernetes/pki/ca.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", st, err)
	}
	if st, _ := os.Stat(h.path("/etc/kubernetes/config.yaml")); st.Mode().Perm() != 0o644 {
		t.Fatalf("default mode: %v", st.Mode())
	}
	before, _ := os.Stat(h.path("/etc/kubernetes/config.yaml"))

	// A new plan that changes a file but not the instruction: the instruction does not
	// run again, and the unchanged file is not rewritten.
	p.Files[0].Content = []byte("rotated")
	sum = h.send(p)
	h.until("applied again", func(s Status) bool { return s.AppliedChecksum == sum })
	if b, _ := os.ReadFile(h.path(counter)); string(b) != "x\n" {
		t.Fatalf("instruction ran %q", b)
	}
	if after, _ := os.Stat(h.path("/etc/kubernetes/config.yaml")); !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("an unchanged file was rewritten")
	}
	if b, _ := os.ReadFile(h.path("/etc/kubernetes/pki/ca.key")); string(b) != "rotated" {
		t.Fatalf("ca.key = %q", b)
	}

	// A restarted agent remembers which instructions succeeded.
	h.stop()
	h.start()
	sum = h.send(p)
	h.until("applied after restart", func(s Status) bool { return s.AppliedChecksum == sum })
	// Changing the instruction runs it again.
	p.Instructions[0].Args[1] += " # v2"
	sum = h.send(p)
	h.until("changed instruction applied", func(s Status) bool { return s.AppliedChecksum == sum })
	if b, _ := os.ReadFile(h.path(counter)); string(b) != "x\nx\n" {
		t.Fatalf("instruction ran %q", b)
	}
}

// A failing step is reported with its output, retried with backoff, and stops the
// plan there: nothing after it runs until it succeeds.
func TestFailingStepIsRetriedAndBlocksTheRest(t *testing.T) {
	h := newHost(t)
	gate := h.path("/tmp/gate")
	p := &nodeplan.Plan{
		Instructions: []nodeplan.Instruction{{Name: "wait-for-gate", Command: sh("test -f " + gate + " || { echo gate is closed >&2; exit 3; }")}},
		Processes:    []nodeplan.Process{{Name: "after", Command: sh("exec sleep 60")}},
	}
	sum := h.send(p)
	s := h.until("failure reported", func(s Status) bool { return s.Failure != nil && s.Failure.Attempts >= 2 })
	if s.Failure.Step != "instructions[0] (wait-for-gate)" || s.Failure.Message != "exit status 3: gate is closed" || s.Failure.Checksum != sum {
		t.Fatalf("failure %+v", s.Failure)
	}
	if len(s.Processes) != 0 || s.AppliedChecksum != "" {
		t.Fatalf("ran past the failed step: %+v", s)
	}
	if err := os.MkdirAll(filepath.Dir(gate), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.until("applied once the gate opens", func(s Status) bool {
		return s.AppliedChecksum == sum && s.Failure == nil && len(s.Processes) == 1 && s.Processes[0].Running
	})
}

func TestPlanVerificationAndDataDir(t *testing.T) {
	h := newHost(t)
	good := h.send(&nodeplan.Plan{Files: []nodeplan.File{{Path: "/etc/a", Content: []byte("a")}}})
	h.until("applied", func(s Status) bool { return s.AppliedChecksum == good })

	// Bytes that do not match their checksum are never applied; the plan in force stays.
	b, _, _ := nodeplan.Encode(&nodeplan.Plan{Files: []nodeplan.File{{Path: "/etc/a", Content: []byte("evil")}}})
	h.plans <- Signed{Data: b, Checksum: good}
	s := h.until("refused", func(s Status) bool { return s.Failure != nil })
	if s.Failure.Step != "verify" || !strings.Contains(s.Failure.Message, "checksum does not match") || s.AppliedChecksum != good {
		t.Fatalf("status %+v", s)
	}
	if c, _ := os.ReadFile(h.path("/etc/a")); string(c) != "a" {
		t.Fatalf("/etc/a = %q", c)
	}
	// The agent's own state is out of a plan's reach.
	sum := h.send(&nodeplan.Plan{Files: []nodeplan.File{{Path: "/var/lib/drover/instructions-done.json", Content: []byte("[]")}}})
	s = h.until("refused", func(s Status) bool { return s.Failure != nil && s.Failure.Checksum == sum })
	if s.Failure.Step != "files[0]" || !strings.Contains(s.Failure.Message, "inside the node agent's data directory") {
		t.Fatalf("failure %+v", s.Failure)
	}
}

func pidOf(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestProcessesAreSupervised(t *testing.T) {
	h := newHost(t)
	pidFile := h.path("/run/server.pid")
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &nodeplan.Plan{Processes: []nodeplan.Process{{Name: "server", Command: sh("echo $$ > " + pidFile + "; exec sleep 60")}}}
	sum := h.send(p)
	h.until("running", func(s Status) bool {
		return s.AppliedChecksum == sum && len(s.Processes) == 1 && s.Processes[0].Running
	})
	first := pidOf(t, pidFile)

	// Killed from outside: restarted.
	_ = os.Remove(pidFile)
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s := h.until("restarted", func(s Status) bool { return s.Processes[0].Restarts == 1 && s.Processes[0].Running })
	if s.Processes[0].LastExit != "killed by signal killed" {
		t.Fatalf("last exit %q", s.Processes[0].LastExit)
	}
	second := pidOf(t, pidFile)

	// Its command changes: the old one is stopped before the new one starts.
	_ = os.Remove(pidFile)
	p.Processes[0].Env = []string{"VERSION=2"}
	sum = h.send(p)
	h.until("replaced", func(s Status) bool {
		return s.AppliedChecksum == sum && s.Processes[0].Running && s.Processes[0].Restarts == 0
	})
	third := pidOf(t, pidFile)
	if alive(second) || third == second {
		t.Fatalf("old process %d still alive, or not replaced (%d)", second, third)
	}
	// Log output is kept in the data directory.
	if _, err := os.Stat(h.path("/var/lib/drover/logs/server.log")); err != nil {
		t.Fatal(err)
	}
	// Removed from the plan: stopped.
	sum = h.send(&nodeplan.Plan{})
	h.until("stopped", func(s Status) bool { return s.AppliedChecksum == sum && len(s.Processes) == 0 })
	if alive(third) {
		t.Fatalf("process %d survived its removal", third)
	}

	// The agent stopping stops what it started, even a process that ignores SIGTERM
	// (killed after StopTimeout).
	_ = os.Remove(pidFile)
	sum = h.send(&nodeplan.Plan{Processes: []nodeplan.Process{{Name: "stubborn", Command: sh("trap '' TERM; echo $$ > " + pidFile + "; while :; do sleep 1; done")}}})
	h.until("running", func(s Status) bool { return s.AppliedChecksum == sum && s.Processes[0].Running })
	stubborn := pidOf(t, pidFile)
	h.stop()
	if alive(stubborn) {
		t.Fatalf("process %d outlived the agent", stubborn)
	}
}

func TestProbes(t *testing.T) {
	h := newHost(t)
	flag := h.path("/tmp/healthy")
	var sick atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if sick.Load() {
			http.Error(w, "etcd has no leader", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	sum := h.send(&nodeplan.Plan{Probes: []nodeplan.Probe{
		{Name: "file", Exec: &nodeplan.Command{Path: "test", Args: []string{"-f", flag}}, Period: nodeplan.Duration{Duration: time.Second}},
		{Name: "http", HTTPGet: &nodeplan.HTTPGet{URL: srv.URL}, Period: nodeplan.Duration{Duration: time.Second}, FailureThreshold: 2},
	}})
	s := h.until("probed", func(s Status) bool {
		return s.AppliedChecksum == sum && len(s.Probes) == 2 && s.Probes[1].Healthy && s.Probes[0].Message != "not run yet"
	})
	if s.Probes[0].Healthy || !strings.Contains(s.Probes[0].Message, "exit status 1") {
		t.Fatalf("file probe %+v", s.Probes[0])
	}
	if err := os.MkdirAll(filepath.Dir(flag), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.until("file probe healthy", func(s Status) bool { return s.Probes[0].Healthy && s.Probes[0].Message == "" })
	sick.Store(true)
	s = h.until("http probe unhealthy after two failures", func(s Status) bool { return !s.Probes[1].Healthy })
	if !strings.Contains(s.Probes[1].Message, "503 Service Unavailable etcd has no leader") {
		t.Fatalf("http probe %+v", s.Probes[1])
	}
}

// A probe named after a process starts again, unhealthy until it passes, when that
// process changes (the hub must not take a result from before a restart for one
// after it), and keeps its result when only other processes change.
func TestProbeStartsAgainWithItsProcess(t *testing.T) {
	h := newHost(t)
	flag := h.path("/tmp/up")
	if err := os.MkdirAll(filepath.Dir(flag), 0o755); err != nil {
		t.Fatal(err)
	}
	probe := nodeplan.Probe{Name: "svc", Exec: &nodeplan.Command{Path: "test", Args: []string{"-f", flag}}, Period: nodeplan.Duration{Duration: 30 * time.Minute}}
	plan := func(svcArg, otherArg string) *nodeplan.Plan {
		return &nodeplan.Plan{
			Processes: []nodeplan.Process{
				{Name: "svc", Command: nodeplan.Command{Path: "sleep", Args: []string{svcArg}}},
				{Name: "other", Command: nodeplan.Command{Path: "sleep", Args: []string{otherArg}}},
			},
			Probes: []nodeplan.Probe{probe},
		}
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := h.send(plan("1000", "1000"))
	h.until("svc healthy", func(s Status) bool { return s.AppliedChecksum == sum && len(s.Probes) == 1 && s.Probes[0].Healthy })
	// The probe runs every half hour: a result after a change can only come from a
	// probe started again.
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	sum = h.send(plan("1000", "1001"))
	s := h.until("other changed", func(s Status) bool { return s.AppliedChecksum == sum })
	if !s.Probes[0].Healthy {
		t.Fatalf("svc's probe started again when another process changed: %+v", s.Probes[0])
	}
	sum = h.send(plan("1001", "1001"))
	h.until("svc's probe started again", func(s Status) bool {
		return s.AppliedChecksum == sum && !s.Probes[0].Healthy && strings.Contains(s.Probes[0].Message, "exit status 1")
	})
}

// Instructions find the agent's own binary in $DROVER_BIN, for the drover
// subcommands plans run.
func TestInstructionsFindTheAgentsBinary(t *testing.T) {
	h := newHost(t)
	out := h.path("/var/run/self")
	sum := h.send(&nodeplan.Plan{Instructions: []nodeplan.Instruction{{Name: "self",
		Command: sh("mkdir -p " + filepath.Dir(out) + ` && printf %s "$` + nodeplan.SelfEnv + `" > ` + out)}}})
	h.until("applied", func(s Status) bool { return s.AppliedChecksum == sum })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != exe {
		t.Fatalf("$%s = %q, want %q", nodeplan.SelfEnv, b, exe)
	}
}
