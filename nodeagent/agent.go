// Package nodeagent applies node plans (package nodeplan) on a host: it writes the
// plan's files, runs its one-time instructions, supervises its processes and runs its
// probes, and reports what it did. It is the engine of `drover node-agent`; how plans
// reach it (from the hub, over the node's own credential) is the caller's business.
//
// The agent is idempotent and restartable: files are written only when their content
// or mode differ, instructions that succeeded for their exact content are recorded in
// the data directory and never run again, and a new agent process adopts nothing it
// did not start (a restarted agent starts the plan's processes anew, after stopping
// what it finds recorded from before).
package nodeagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/drover-io/drover/nodeplan"
)

// Options configure an Agent.
type Options struct {
	// DataDir holds the agent's own state (which instructions ran, process logs).
	// Plan files may not be written inside it.
	DataDir string
	// Root is prepended to every path of a plan ("" or "/" for the host's root). Tests
	// and hosts in mount namespaces use it.
	Root string
	// RetryMin and RetryMax bound the backoff between attempts at a failed plan, and
	// between restarts of a process that exits (defaults 1 s and 30 s).
	RetryMin, RetryMax time.Duration
	// StopTimeout is how long a process gets between SIGTERM and SIGKILL (default 10 s).
	StopTimeout time.Duration
	// Fetch downloads an artifact of the plan into w: from its URL (a mirror) when
	// it has one, else from the hub's artifact source. Plans with artifacts fail
	// without it.
	Fetch func(ctx context.Context, art nodeplan.Artifact, w io.Writer) error
	// Log receives the agent's log lines; never a file's content.
	Log logr.Logger
	// Self is the drover binary that instructions and exec probes reach as
	// $DROVER_BIN (default: the agent's own executable).
	Self string
}

// Signed is a plan as published: its bytes and the checksum they must match.
type Signed struct {
	Data     []byte
	Checksum string
}

// Failure says which step of a plan failed, and how.
type Failure struct {
	// Step is "verify", "files[i]", "instructions[i] (<name>)" or "processes[i] (<name>)".
	Step string `json:"step"`
	// Message is the error, and the tail of the step's output for an instruction.
	Message string `json:"message"`
	// Attempts counts the attempts at this plan so far.
	Attempts int `json:"attempts"`
	// Checksum is the plan's.
	Checksum string `json:"checksum"`
}

// ProcessStatus is one supervised process.
type ProcessStatus struct {
	Name     string `json:"name"`
	Running  bool   `json:"running"`
	Restarts int    `json:"restarts"`
	// LastExit says how the process last ended, if it did.
	LastExit string `json:"lastExit,omitempty"`
}

// ProbeStatus is one probe's current verdict.
type ProbeStatus struct {
	Name    string `json:"name"`
	Healthy bool   `json:"healthy"`
	// Message is why it is unhealthy (the error, or the output's tail).
	Message string `json:"message,omitempty"`
}

// Status is what the agent reports: the plan it applied, the failure that stops the
// latest one (if any), its processes and its probes.
type Status struct {
	// AppliedChecksum is the checksum of the plan whose files and instructions are
	// all applied and whose processes run; empty before the first.
	AppliedChecksum string          `json:"appliedChecksum,omitempty"`
	Failure         *Failure        `json:"failure,omitempty"`
	Processes       []ProcessStatus `json:"processes,omitempty"`
	Probes          []ProbeStatus   `json:"probes,omitempty"`
}

// maxOutput bounds the output of an instruction or probe kept for a report.
const maxOutput = 4 << 10

// Agent applies plans.
type Agent struct {
	opts Options
	log  logr.Logger

	mu     sync.Mutex
	status Status
	// version is the Kubernetes version of the binaries of the plan applied.
	version string
	done    map[string]bool // instruction keys that succeeded
	files   []string        // the plan files this agent wrote (and so may remove)
	procs   map[string]*supervised
	probes  map[string]*probeRunner
	// changed is signalled whenever status changes.
	changed chan struct{}
}

// New checks the options and loads the agent's state from its data directory.
func New(opts Options) (*Agent, error) {
	if opts.DataDir == "" || !filepath.IsAbs(opts.DataDir) {
		return nil, fmt.Errorf("node agent: --data-dir %q must be an absolute path", opts.DataDir)
	}
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(30*time.Second, opts.RetryMin)
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.Self == "" {
		if exe, err := os.Executable(); err == nil {
			opts.Self = exe
		}
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, "logs"), 0o700); err != nil {
		return nil, fmt.Errorf("node agent: data directory: %w", err)
	}
	a := &Agent{opts: opts, log: opts.Log, done: map[string]bool{}, procs: map[string]*supervised{},
		probes: map[string]*probeRunner{}, changed: make(chan struct{}, 1)}
	if b, err := os.ReadFile(a.statePath()); err == nil {
		var keys []string
		if err := json.Unmarshal(b, &keys); err != nil {
			return nil, fmt.Errorf("node agent: %s is corrupt (%w); remove it to run every instruction again", a.statePath(), err)
		}
		for _, k := range keys {
			a.done[k] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("node agent: %w", err)
	}
	if b, err := os.ReadFile(a.filesPath()); err == nil {
		if err := json.Unmarshal(b, &a.files); err != nil {
			return nil, fmt.Errorf("node agent: %s is corrupt (%w); remove it (files of earlier plans are then left in place)", a.filesPath(), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("node agent: %w", err)
	}
	return a, nil
}

func (a *Agent) statePath() string { return filepath.Join(a.opts.DataDir, "instructions-done.json") }
func (a *Agent) filesPath() string { return filepath.Join(a.opts.DataDir, "files-written.json") }

// BinDir is where the agent keeps the plan's artifacts.
func (a *Agent) BinDir() string { return filepath.Join(a.opts.DataDir, "bin") }

// Status returns a copy of the current status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	if s.Failure != nil {
		f := *s.Failure
		s.Failure = &f
	}
	s.Processes = nil
	for _, name := range sortedKeys(a.procs) {
		s.Processes = append(s.Processes, a.procs[name].status())
	}
	s.Probes = nil
	for _, name := range sortedKeys(a.probes) {
		s.Probes = append(s.Probes, a.probes[name].status())
	}
	return s
}

// Changed is signalled (without blocking, coalesced) whenever the status changes.
func (a *Agent) Changed() <-chan struct{} { return a.changed }

func (a *Agent) notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Run applies each plan received, retrying a failed one with backoff, until ctx is
// done; it then stops every process it started. A plan that fails verification is
// reported and ignored: the last good plan stays in force.
func (a *Agent) Run(ctx context.Context, plans <-chan Signed) error {
	defer a.stopAll()
	var (
		current  *nodeplan.Plan
		checksum string
		attempts int
		retry    <-chan time.Time
		backoff  = a.opts.RetryMin
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-plans:
			if !ok {
				plans = nil
				continue
			}
			p, err := nodeplan.Verify(s.Data, s.Checksum)
			if err != nil {
				a.log.Error(err, "Plan refused", "checksum", s.Checksum)
				a.setFailure(&Failure{Step: "verify", Message: err.Error(), Checksum: s.Checksum, Attempts: 1})
				continue
			}
			if s.Checksum == checksum && retry == nil {
				continue // the plan in force, already applied
			}
			current, checksum, attempts, backoff, retry = p, s.Checksum, 0, a.opts.RetryMin, nil
		case <-retry:
			retry = nil
		}
		if current == nil || retry != nil {
			continue
		}
		attempts++
		if f := a.apply(ctx, current); f != nil {
			f.Attempts, f.Checksum = attempts, checksum
			a.log.Info("Plan step failed; retrying", "step", f.Step, "attempt", attempts, "in", backoff)
			a.setFailure(f)
			retry = time.After(backoff)
			backoff = min(2*backoff, a.opts.RetryMax)
			continue
		}
		a.mu.Lock()
		a.status.AppliedChecksum, a.status.Failure = checksum, nil
		a.version = versionOf(current)
		a.mu.Unlock()
		a.notify()
		a.log.Info("Plan applied", "checksum", checksum, "attempts", attempts)
	}
}

func (a *Agent) setFailure(f *Failure) {
	a.mu.Lock()
	a.status.Failure = f
	a.mu.Unlock()
	a.notify()
}

// apply makes one attempt at a plan.
func (a *Agent) apply(ctx context.Context, p *nodeplan.Plan) *Failure {
	for i, art := range p.Artifacts {
		if err := a.fetchArtifact(ctx, art); err != nil {
			return &Failure{Step: fmt.Sprintf("artifacts[%d] (%s)", i, art.Name), Message: err.Error()}
		}
	}
	for i, f := range p.Files {
		if err := a.writeFile(f); err != nil {
			return &Failure{Step: fmt.Sprintf("files[%d]", i), Message: err.Error()}
		}
	}
	// Processes the plan drops or changes stop before the instructions run (an
	// instruction may need them gone: a restore, a teardown), and the plan's
	// processes start after them.
	a.stopStale(p)
	for i, in := range p.Instructions {
		key := nodeplan.InstructionKey(in)
		a.mu.Lock()
		done := a.done[key]
		a.mu.Unlock()
		if done {
			continue
		}
		out, err := a.runOnce(ctx, in.Command, in.Timeout.Or(nodeplan.DefaultTimeout))
		if err != nil {
			return &Failure{Step: fmt.Sprintf("instructions[%d] (%s)", i, in.Name), Message: withOutput(err, out)}
		}
		if err := a.recordDone(key); err != nil {
			return &Failure{Step: fmt.Sprintf("instructions[%d] (%s)", i, in.Name), Message: err.Error()}
		}
		a.log.Info("Instruction succeeded", "instruction", in.Name)
	}
	a.reconcileProcesses(p)
	a.reconcileProbes(ctx, p)
	if err := a.removeDropped(p); err != nil {
		return &Failure{Step: "files", Message: "removing files of an earlier plan: " + err.Error()}
	}
	return nil
}

// removeDropped removes the files an earlier plan had this agent write that the plan
// in force no longer has, once the processes that used them are stopped.
func (a *Agent) removeDropped(p *nodeplan.Plan) error {
	keep := map[string]bool{}
	var now []string
	for _, f := range p.Files {
		keep[f.Path] = true
		now = append(now, f.Path)
	}
	for _, old := range a.files {
		if keep[old] {
			continue
		}
		full, err := a.target(old)
		if err != nil {
			continue
		}
		if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// And the directories that held only such files.
		root := filepath.Clean(a.opts.Root)
		for dir := filepath.Dir(full); dir != root && dir != "/" && strings.HasPrefix(dir, root); dir = filepath.Dir(dir) {
			if os.Remove(dir) != nil {
				break // not empty, or not ours to remove
			}
		}
	}
	slices.Sort(now)
	if slices.Equal(now, a.files) {
		return nil
	}
	a.files = now
	b, err := json.Marshal(now)
	if err != nil {
		return err
	}
	tmp := a.filesPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.filesPath())
}

// fetchArtifact puts an artifact into the bin directory, unless it is there with
// the right digest already.
func (a *Agent) fetchArtifact(ctx context.Context, art nodeplan.Artifact) error {
	dst := filepath.Join(a.BinDir(), art.Name)
	if sum, err := FileSHA256(dst); err == nil && sum == art.SHA256 {
		return nil
	}
	if a.opts.Fetch == nil {
		return errors.New("no artifact source to download it from")
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".download-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	h := sha256.New()
	if err := a.opts.Fetch(ctx, art, io.MultiWriter(tmp, h)); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("download: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != art.SHA256 {
		_ = tmp.Close()
		return fmt.Errorf("downloaded file has sha256 %s, the plan says %s; not installed", got, art.SHA256)
	}
	if err := tmp.Chmod(0o755); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	a.log.Info("Artifact installed", "artifact", art.Name, "sha256", art.SHA256)
	return nil
}

// FileSHA256 is the hex sha256 of a file's content.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// target maps a plan path onto the agent's root, refusing the agent's own data.
func (a *Agent) target(p string) (string, error) {
	full := filepath.Join(a.opts.Root, filepath.FromSlash(p))
	if rel, err := filepath.Rel(a.opts.DataDir, full); err == nil && (rel == "." || !strings.HasPrefix(rel, "..")) {
		return "", fmt.Errorf("%s is inside the node agent's data directory %s", p, a.opts.DataDir)
	}
	return full, nil
}

// writeFile writes f atomically, unless the file already holds exactly it.
func (a *Agent) writeFile(f nodeplan.File) error {
	full, err := a.target(f.Path)
	if err != nil {
		return err
	}
	mode := fs.FileMode(f.Mode)
	if mode == 0 {
		mode = 0o644
	}
	if cur, err := os.ReadFile(full); err == nil && bytes.Equal(cur, f.Content) {
		if st, err := os.Stat(full); err == nil && st.Mode().Perm() == mode.Perm() {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(full), "."+filepath.Base(full)+".drover-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(f.Content); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), full)
}

// recordDone persists that an instruction succeeded.
func (a *Agent) recordDone(key string) error {
	a.mu.Lock()
	a.done[key] = true
	keys := sortedKeys(a.done)
	a.mu.Unlock()
	b, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	tmp := a.statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.statePath())
}

// command builds an exec.Cmd for c, in its own process group.
func (a *Agent) command(ctx context.Context, c nodeplan.Command) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env = append(append(os.Environ(), nodeplan.SelfEnv+"="+a.opts.Self), c.Env...)
	cmd.Dir = c.Dir
	if cmd.Dir == "" {
		cmd.Dir = a.opts.DataDir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// runOnce runs a command to completion within timeout and returns the tail of its
// combined output.
func (a *Agent) runOnce(ctx context.Context, c nodeplan.Command, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := a.command(ctx, c)
	out := &tail{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	return out.String(), err
}

func withOutput(err error, out string) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return err.Error()
	}
	return err.Error() + ": " + out
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var _ io.Writer = (*tail)(nil)

// KubernetesVersion is the Kubernetes version of the binaries the applied plan
// runs (the directory of its artifacts, e.g. v1.36.3), or "".
func (a *Agent) KubernetesVersion() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.version
}

// versionOf reads a plan's Kubernetes version from its artifacts' directory.
func versionOf(p *nodeplan.Plan) string {
	for _, art := range p.Artifacts {
		dir, _, ok := strings.Cut(art.Name, "/")
		if ok && strings.HasPrefix(dir, "v1.") && strings.Count(dir, ".") == 2 {
			return dir
		}
	}
	return ""
}
