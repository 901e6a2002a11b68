package hosts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrUnsupported is wrapped by New's errors where this machine cannot make hosts at
// all: no cgroup v1 hierarchies, or namespaces, overlays or mounts refused.
var ErrUnsupported = errors.New("this machine cannot make test hosts")

// Options configure a Set.
type Options struct {
	// BaseDir holds each run's data directory, BaseDir/<run>; default
	// $DROVER_HOSTS_DIR, else /tmp/drover-hosts.
	BaseDir string
	// Names are the hosts' hostnames; default host-0, host-1, ... Two hosts may have
	// one name, as two machines may: see Host.ID.
	Names []string
	// Logf, when set, receives a line for each step of setting up and tearing down.
	Logf func(format string, args ...any)
}

// Set is N hosts on one bridge, made by one New and torn down by one Close.
type Set struct {
	// Run names this set's slot, e.g. "r0": its bridge, cgroup and data directory
	// are named after it.
	Run string
	// Dir is the run's data directory, holding one directory per host.
	Dir string
	// Bridge is the Linux bridge in the root namespace that every host's eth0 is on.
	Bridge string
	// Subnet is the hosts' network; Gateway, the bridge's own address in it, is how
	// the hosts reach the root namespace: a server there that listens on Gateway or
	// on all addresses is reachable from every host.
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Hosts are the hosts, in the order of Options.Names.
	Hosts []*Host

	slot   int
	logf   func(format string, args ...any)
	reaper *exec.Cmd

	mu     sync.Mutex
	closed bool
}

// Host is one test host: its own network, mount and UTS namespaces, data directory
// and cgroup.
type Host struct {
	// Name is the hostname.
	Name string
	// ID names the host's data directory and cgroup: its Name, or Name.<index> for
	// the second and later hosts that share a name.
	ID string
	// IP is the address of its eth0, on Set.Bridge.
	IP netip.Addr
	// Dir is its data directory, seen from the root namespace. Its etc/ is the upper
	// layer of the host's /etc overlay; var/lib, var/log and run are the host's
	// /var/lib, /var/log and /run. Read and write the host's files through Path,
	// which also sees the machine's files under the overlay.
	Dir string

	veth   string // its root end, on the bridge
	anchor *exec.Cmd
	pid    int
	// anchorDone is closed once the anchor process has exited.
	anchorDone chan struct{}
	cgroup     cgroupPaths
	cgroupRel  string

	mu    sync.Mutex
	procs []*Process
}

// stateDir holds the lock and one owner file per run. It is fixed, whatever
// BaseDir is, so that every user of the harness on this machine sees every run.
var stateDir = "/run/drover-hosts"

const (
	maxSlots     = 250
	bridgePrefix = "drvh" // bridge drvh<slot>
	vethPrefix   = "dvh"  // root end of a host's veth: dvh<slot>x<index>
	// subnetFormat is a run's /24; the bridge is .1 and host i is .(11+i).
	subnetFormat = "10.213.%d.0/24"
)

// New makes n hosts. It needs root. On failure it tears down what it made.
func New(n int, opts Options) (*Set, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("hosts: %d hosts asked for; 1 to 200 fit on one bridge", n)
	}
	names := opts.Names
	if len(names) == 0 {
		for i := range n {
			names = append(names, fmt.Sprintf("host-%d", i))
		}
	}
	if len(names) != n {
		return nil, fmt.Errorf("hosts: %d names for %d hosts", len(names), n)
	}
	for _, name := range names {
		if !validName(name) {
			return nil, fmt.Errorf("hosts: %q is not a hostname: lower-case letters, digits and '-', at most 63", name)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("hosts: test hosts need root (network, mount and UTS namespaces, a bridge, cgroups)")
	}
	for _, c := range []string{"ip", "nsenter", "unshare", "mount", "hostname", "sleep"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("hosts: %s is not installed (iproute2, util-linux, mount, hostname, coreutils)", c)
		}
	}
	base := opts.BaseDir
	if base == "" {
		base = os.Getenv("DROVER_HOSTS_DIR")
	}
	if base == "" {
		base = "/tmp/drover-hosts"
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return nil, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	s, err := claimSlot(base, logf)
	if err != nil {
		return nil, err
	}
	if err := s.setup(names); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// Clean tears down what runs whose owner process is gone left behind, as New does
// before it makes hosts. `go run ./hack/hosts clean` calls it.
func Clean(logf func(format string, args ...any)) error {
	if os.Geteuid() != 0 {
		return errors.New("hosts: cleaning up test hosts needs root")
	}
	unlock, err := lockState()
	if err != nil {
		return err
	}
	defer unlock()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := cleanLeftovers(logf); err != nil {
		return err
	}
	// With no run left, not even one being made (its owner file is written under
	// this lock), the top cgroups go too.
	if len(knownSlots()) == 0 {
		hs, _ := hierarchies()
		for _, h := range hs {
			_ = syscall.Rmdir(filepath.Join(h, cgroupTop))
		}
	}
	return nil
}

// Attach finds the host with ID id of a live run (e.g. "r0") made by another
// process, to run commands in it: only Name, ID, Dir, PID, Cgroup, Path, WriteFile,
// Command and Run work on what it returns; the run's owner still starts and tears
// down its processes.
func Attach(run, id string) (*Host, error) {
	rel := cgroupTop + "/" + run + "/" + id
	cg := existingCgroup(rel)
	if len(cg) == 0 {
		return nil, fmt.Errorf("hosts: no host %s in run %s", id, run)
	}
	for _, pid := range cg.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		env := map[string]string{}
		for _, kv := range bytes.Split(b, []byte{0}) {
			if k, v, ok := strings.Cut(string(kv), "="); ok {
				env[k] = v
			}
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); env["DROVER_HOST_ID"] != id || strings.TrimSpace(string(comm)) != "sleep" {
			continue
		}
		return &Host{Name: env["DROVER_HOST"], ID: id, Dir: env["DROVER_HOST_DIR"], pid: pid, cgroup: cg, cgroupRel: rel}, nil
	}
	return nil, fmt.Errorf("hosts: host %s of run %s has no anchor process; is its run alive?", id, run)
}

// List writes one line per run on this machine: its slot, owner and whether the
// owner is alive.
func List(w io.Writer) error {
	for _, sl := range knownSlots() {
		pid, _, dir, ok := owner(sl)
		state := "dead: New or Clean tears it down"
		if alive(sl) {
			state = "alive"
		}
		if !ok {
			state = "no owner file: New or Clean tears it down"
		}
		if _, err := fmt.Fprintf(w, "r%d	owner %d	%s	%s\n", sl, pid, dir, state); err != nil {
			return err
		}
	}
	return nil
}

// lockState takes the lock that every change to the runs holds.
func lockState() (unlock func(), err error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	}, nil
}

func validName(name string) bool {
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// claimSlot tears down the leftovers of dead runs and takes the lowest free slot,
// under the lock.
func claimSlot(base string, logf func(string, ...any)) (*Set, error) {
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()

	if err := cleanLeftovers(logf); err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, sl := range knownSlots() {
		used[sl] = true
	}
	slot := -1
	for i := range maxSlots {
		if !used[i] {
			slot = i
			break
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("hosts: all %d slots are in use by live runs", maxSlots)
	}
	run := "r" + strconv.Itoa(slot)
	dir := filepath.Join(base, run)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start, err := startTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	owner := fmt.Sprintf("%d %s\n%s\n", os.Getpid(), start, dir)
	if err := os.WriteFile(ownerFile(slot), []byte(owner), 0o644); err != nil {
		return nil, err
	}
	subnet := netip.MustParsePrefix(fmt.Sprintf(subnetFormat, slot))
	return &Set{
		Run:     run,
		Dir:     dir,
		Bridge:  bridgePrefix + strconv.Itoa(slot),
		Subnet:  subnet,
		Gateway: subnet.Addr().Next(),
		slot:    slot,
		logf:    logf,
	}, nil
}

func (s *Set) setup(names []string) error {
	s.logf("hosts %s: bridge %s, %s, gateway %s, data in %s", s.Run, s.Bridge, s.Subnet, s.Gateway, s.Dir)
	if err := s.startReaper(); err != nil {
		return err
	}
	gw := netip.PrefixFrom(s.Gateway, s.Subnet.Bits()).String()
	if err := run("ip", "link", "add", "name", s.Bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := run("ip", "addr", "add", gw, "dev", s.Bridge); err != nil {
		return err
	}
	if err := run("ip", "link", "set", s.Bridge, "up"); err != nil {
		return err
	}
	if err := addForwardRules(s.slot, s.Bridge); err != nil {
		return err
	}
	ip := s.Gateway
	for range 9 {
		ip = ip.Next()
	}
	seen := map[string]bool{}
	for i, name := range names {
		ip = ip.Next()
		id := name
		if seen[name] {
			id = fmt.Sprintf("%s.%d", name, i) // a dot is in no hostname given
		}
		seen[name] = true
		h, err := s.addHost(i, id, name, ip)
		if h != nil {
			s.Hosts = append(s.Hosts, h)
		}
		if err != nil {
			return fmt.Errorf("hosts: host %s: %w", name, err)
		}
	}
	// Every host resolves every other by name, as on a real network. There is no
	// DNS server: the machine's is out of the hosts' reach, and a lookup that waits
	// for it times out only after seconds, where with none it fails at once.
	var hostsFile strings.Builder
	for _, h := range s.Hosts {
		fmt.Fprintf(&hostsFile, "%s %s\n", h.IP, h.Name)
	}
	for _, h := range s.Hosts {
		etc, err := os.ReadFile(h.Path("/etc/hosts"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(h.Path("/etc/hosts"), append(etc, hostsFile.String()...), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(h.Path("/etc/resolv.conf"), []byte("# A drover test host has no DNS server: names are in /etc/hosts.\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// setupScript runs in a host's new namespaces, then becomes the anchor that holds
// them open. It gives the host its hostname, its own /sys (showing its own network
// devices) with the machine's cgroup hierarchies kept under it, an overlay on /etc,
// and private /var/lib, /var/log and /run.
const setupScript = `set -e
hostname "$DROVER_HOST"
d="$DROVER_HOST_DIR"
mount --rbind /sys/fs/cgroup "$d/.cgroup"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move "$d/.cgroup" /sys/fs/cgroup
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/etc,workdir=$d/.etc-work" /etc
echo "$DROVER_HOST" >/etc/hostname
mount --bind "$d/var/lib" /var/lib
mount --bind "$d/var/log" /var/log
mount --bind "$d/run" /run
echo ready
exec sleep infinity
`

func (s *Set) addHost(i int, id, name string, ip netip.Addr) (*Host, error) {
	dir := filepath.Join(s.Dir, id)
	for _, d := range []string{".cgroup", "etc", ".etc-work", "var/lib", "var/log", "run", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	rel := cgroupTop + "/" + s.Run + "/" + id
	cg, err := makeCgroup(rel)
	if err != nil {
		return nil, err
	}
	veth := fmt.Sprintf("%s%dx%d", vethPrefix, s.slot, i)
	h := &Host{Name: name, ID: id, IP: ip, Dir: dir, veth: veth, cgroup: cg, cgroupRel: rel, anchorDone: make(chan struct{})}

	anchor := exec.Command("/bin/sh", "-c", h.joinCgroupScript(), "drover-host",
		"unshare", "--net", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c", setupScript)
	anchor.Env = append(os.Environ(), "DROVER_HOST="+name, "DROVER_HOST_ID="+id, "DROVER_HOST_DIR="+dir, "DROVER_HOSTS_RUN="+s.Run)
	var stderr bytes.Buffer
	anchor.Stderr = &stderr
	out, err := anchor.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := anchor.Start(); err != nil {
		return nil, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	h.anchor = anchor
	h.pid = anchor.Process.Pid
	if strings.TrimSpace(line) != "ready" {
		err := anchor.Wait()
		close(h.anchorDone)
		return h, fmt.Errorf("%w: setting up its namespaces: %w: %s", ErrUnsupported, err, strings.TrimSpace(stderr.String()))
	}
	go func() {
		_ = anchor.Wait()
		close(h.anchorDone)
	}()

	pid := strconv.Itoa(anchor.Process.Pid)
	if err := run("ip", "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", pid); err != nil {
		return h, err
	}
	if err := run("ip", "link", "set", veth, "master", s.Bridge, "up"); err != nil {
		return h, err
	}
	inside := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", netip.PrefixFrom(ip, s.Subnet.Bits()).String(), "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", s.Gateway.String()},
	}
	for _, args := range inside {
		if err := run("nsenter", append([]string{"--target", pid, "--net", "--"}, args...)...); err != nil {
			return h, err
		}
	}
	s.logf("hosts %s: %s is %s (pid %s, cgroup %s)", s.Run, id, ip, pid, rel)
	return h, nil
}

// joinCgroupScript is a shell command that moves itself into the host's cgroups and
// then runs its arguments, so that a process and all it ever starts are in the host's
// cgroups from its first instruction on.
func (h *Host) joinCgroupScript() string {
	var b strings.Builder
	b.WriteString("for d in")
	for _, p := range h.cgroup {
		b.WriteString(" '" + p + "'")
	}
	b.WriteString(`; do echo $$ >"$d/cgroup.procs" || exit 125; done; exec "$@"`)
	return b.String()
}

// PID is the process that holds the host's namespaces open: `nsenter --target PID
// --net --mount --uts` enters the host.
func (h *Host) PID() int { return h.pid }

// Disconnect cuts the host off the network, as a pulled cable does: its end on the
// bridge goes down, so that whatever it sends and whatever is sent to it is lost,
// without an error, until Reconnect. What runs in it goes on running.
func (h *Host) Disconnect() error { return run("ip", "link", "set", h.veth, "down") }

// Reconnect undoes Disconnect.
func (h *Host) Reconnect() error { return run("ip", "link", "set", h.veth, "up") }

// Cgroup is the host's cgroup, relative to each hierarchy's root, with a leading
// slash: what kubelet's cgroupRoot is set to, so that its pods are the host's too.
func (h *Host) Cgroup() string { return "/" + h.cgroupRel }

// Path turns a path inside the host into one the root namespace can read and write,
// through the anchor's root: Path("/etc/kubernetes/kubelet.conf").
func (h *Host) Path(p string) string {
	return filepath.Join("/proc", strconv.Itoa(h.PID()), "root", p)
}

// WriteFile writes a file inside the host, creating its directory.
func (h *Host) WriteFile(p string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(h.Path(p)), 0o755); err != nil {
		return err
	}
	return os.WriteFile(h.Path(p), data, perm)
}

// Command returns a command that runs name inside the host: in its namespaces and
// cgroups, with the environment of this process. name is looked up in the host.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"-c", h.joinCgroupScript(), "drover-host",
		"nsenter", "--target", strconv.Itoa(h.PID()), "--net", "--mount", "--uts", "--", name}, args...)
	cmd := exec.CommandContext(ctx, "/bin/sh", argv...)
	cmd.Env = append(os.Environ(), "HOSTNAME="+h.Name)
	return cmd
}

// Run runs a command inside the host and returns its combined output; the error
// carries the output too.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := h.Command(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s on %s: %w: %s", strings.Join(append([]string{name}, args...), " "), h.Name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Start starts a long-running process inside the host. Its output goes to
// Dir/logs/<base name of name>.log and is kept, the last 64 KiB of it, for Output.
// Close stops it, with everything else in the host.
func (h *Host) Start(name string, args ...string) (*Process, error) {
	return h.StartCommand(h.Command(context.Background(), name, args...))
}

// StartCommand starts cmd, made by Command and perhaps given an environment or
// standard input, as Start does.
func (h *Host) StartCommand(cmd *exec.Cmd) (*Process, error) {
	name := filepath.Base(cmd.Args[len(cmd.Args)-1])
	for i, a := range cmd.Args {
		if a == "--" && i+1 < len(cmd.Args) {
			name = filepath.Base(cmd.Args[i+1])
			break
		}
	}
	h.mu.Lock()
	n := 0
	for _, p := range h.procs {
		if p.Name == name || strings.HasPrefix(p.Name, name+"-") {
			n++
		}
	}
	if n > 0 {
		name = fmt.Sprintf("%s-%d", name, n)
	}
	h.mu.Unlock()
	logPath := filepath.Join(h.Dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &Process{Name: name, Host: h, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	w := io.MultiWriter(f, &p.tail)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s on %s: %w", name, h.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}

// Process is a long-running process in a host.
type Process struct {
	// Name is the program's base name, numbered from the second one on in a host.
	Name    string
	Host    *Host
	LogPath string

	cmd  *exec.Cmd
	tail tailBuffer
	done chan struct{}
	err  error
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process exited, once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Output is the last 64 KiB of what the process wrote.
func (p *Process) Output() string { return p.tail.String() }

// Signal sends sig to the process: syscall.SIGKILL kills it mid-step, as a crash
// would. What it started itself lives on in the host until the host is closed.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, and SIGKILL after grace, and waits for the process to exit.
func (p *Process) Stop(grace time.Duration) {
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

const tailSize = 64 << 10

type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > tailSize {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-tailSize:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Close tears down everything the set made: every process in its hosts (pods
// included), their namespaces and mounts, the veths, the bridge, the iptables rules,
// the cgroups and the data directory. It may be called more than once.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.logf("hosts %s: tearing down", s.Run)
	err := teardown(s.slot, s.Dir)
	// Everything in the hosts is dead unless teardown failed; then do not hang.
	timeout := time.After(10 * time.Second)
	for _, h := range s.Hosts {
		dones := []<-chan struct{}{}
		if h.anchor != nil {
			dones = append(dones, h.anchorDone)
		}
		h.mu.Lock()
		for _, p := range h.procs {
			dones = append(dones, p.done)
		}
		h.mu.Unlock()
		for _, d := range dones {
			select {
			case <-d:
			case <-timeout:
			}
		}
	}
	if s.reaper != nil {
		_ = s.reaper.Process.Kill()
		_ = s.reaper.Wait()
	}
	return err
}

// startReaper starts a small process, outside the hosts, that kills everything in
// them as soon as this process dies without calling Close (a test binary killed by
// its timeout, say), so that nothing keeps burning the machine's CPU until the next
// run cleans up the rest.
func (s *Set) startReaper() error {
	script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 1; done
for i in 1 2 3 4 5 6 7 8 9 10; do
  for f in $(find /sys/fs/cgroup/*/%s/%s -name cgroup.procs 2>/dev/null); do
    for p in $(cat "$f"); do kill -9 "$p" 2>/dev/null; done
  done
  sleep 0.2
done`, os.Getpid(), cgroupTop, s.Run)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.reaper = cmd
	start, err := startTime(cmd.Process.Pid)
	if err != nil {
		return err
	}
	return os.WriteFile(reaperFile(s.slot), []byte(fmt.Sprintf("%d %s\n", cmd.Process.Pid, start)), 0o644)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
