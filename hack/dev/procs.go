package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process make dev started and watches: the manager, an agent, kwok.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu       sync.Mutex
	stopping bool
}

// startProc starts bin with args. Its output goes to logFile and, when out is not
// nil, to out as well. The process never outlives make dev: it gets SIGKILL when
// make dev dies (and the watchdog catches what slips through), and it runs in its
// own process group, so that Ctrl-C reaches make dev alone, which then stops
// everything in order. exited receives the proc if it ends before stop is called.
func startProc(name, logFile string, out io.Writer, exited chan<- *proc, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	var w io.Writer = f
	if out != nil {
		w = io.MultiWriter(f, out)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = withoutKubeconfigEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
		p.mu.Lock()
		unexpected := !p.stopping
		p.mu.Unlock()
		if unexpected && exited != nil {
			exited <- p
		}
	}()
	return p, nil
}

// withoutKubeconfigEnv drops $KUBECONFIG: every process gets an explicit
// --kubeconfig, and must never fall back to the user's own clusters.
func withoutKubeconfigEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "KUBECONFIG=") })
}

// stop asks the process to exit with SIGTERM and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// ownedBinaries are the programs make dev starts (directly, or through package
// controlplane). A process counts as make dev's when it runs one of them and its
// command line names a path inside make dev's directory: every one of them does,
// through --kubeconfig, --data-dir or --cert-dir. A stray kubectl or tail reading a
// file in .dev is never matched.
var ownedBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kwok", "drover"}

// stale is a running process that make dev started.
type stale struct {
	pid  int
	name string
}

// findOwned lists the running processes make dev started in dir (an absolute path).
func findOwned(dir string) []stale {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	marker := []byte(filepath.Clean(dir) + string(filepath.Separator))
	var found []stale
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
		name := filepath.Base(string(args[0]))
		if !slices.Contains(ownedBinaries, name) || !bytes.Contains(cmdline, marker) || zombie(pid) {
			continue
		}
		found = append(found, stale{pid: pid, name: name})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].pid < found[j].pid })
	return found
}

// zombie reports whether pid has exited and only waits to be reaped (or is gone).
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X'
}

// killOwned SIGKILLs every process make dev started in dir and waits until they
// are gone. It returns what it killed.
func killOwned(dir string) []stale {
	found := findOwned(dir)
	for _, s := range found {
		_ = syscall.Kill(s.pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range found {
		for !zombie(s.pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return found
}

func describe(ss []stale) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmt.Sprintf("%s (pid %d)", s.name, s.pid)
	}
	return strings.Join(parts, ", ")
}

// watchdogArg is the hidden first argument that turns drover-dev into its own watchdog.
const watchdogArg = "__watchdog"

// Watchdog protocol: make dev holds the write end of the watchdog's stdin. On a
// clean exit it writes watchdogDone first. When make dev dies any other way (kill
// -9, a panic, a second Ctrl-C) the pipe closes without it, and the watchdog kills
// every process make dev started, etcd and kube-apiserver included: envtest starts
// those in their own process group without a parent-death signal, so nothing else
// would stop them.
const watchdogDone = "done"

// startWatchdog starts the watchdog for dir. It returns the pipe to it, and a
// channel closed once the watchdog has exited.
func startWatchdog(dir string) (io.WriteCloser, <-chan struct{}, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, watchdogArg, dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start the watchdog: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return stdin, done, nil
}

// watchdog is the watchdog process's main.
func watchdog(dir string) {
	// Only the pipe matters: signals meant for make dev must not stop its watchdog.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	msg, _ := io.ReadAll(os.Stdin)
	if string(msg) == watchdogDone {
		return
	}
	if killed := killOwned(dir); len(killed) > 0 {
		fmt.Fprintf(os.Stderr, "[dev] make dev ended without stopping its processes; the watchdog killed %s\n", describe(killed))
	}
}

// errAlreadyRunning reports that another make dev holds the directory.
var errAlreadyRunning = errors.New("make dev is already running in this checkout")

// lockDir takes an exclusive lock on dir/lock, creating dir. The lock is released
// when the process ends, however it ends, so a lock that can be taken means that no
// make dev is running here, and anything left in dir is stale.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		pid, _ := os.ReadFile(filepath.Join(dir, "pid"))
		if p := strings.TrimSpace(string(pid)); p != "" {
			return nil, fmt.Errorf("%w (pid %s); stop it with Ctrl-C, or kill %s", errAlreadyRunning, p, p)
		}
		return nil, errAlreadyRunning
	}
	return f, nil
}

// cleanDir removes everything in dir but the lock.
func cleanDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == "lock" {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

// setParentDeathSignal asks the kernel to send make dev SIGTERM when its parent
// (make) dies, so that make dev shuts down in order rather than run on unattended.
// It reports false when the parent is already gone.
func setParentDeathSignal() bool {
	parent := os.Getppid()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	return os.Getppid() == parent
}
