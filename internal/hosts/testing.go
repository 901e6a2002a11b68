package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// NewForTest makes n hosts for t and tears them down when t ends, whether it passed,
// failed or panicked. It skips t, saying why, when not run as root or when the
// kernel or the machine cannot make hosts. On failure, it logs the tail of every
// process's output, so that a failing test shows what its daemons said.
func NewForTest(t testing.TB, n int, opts Options) *Set {
	t.Helper()
	RequireRoot(t)
	Require(t, "ip", "nsenter", "unshare", "iptables")
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := New(n, opts)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range s.Hosts {
				h.mu.Lock()
				procs := append([]*Process(nil), h.procs...)
				h.mu.Unlock()
				for _, p := range procs {
					t.Logf("%s on %s (%s), last output:\n%s", p.Name, h.ID, p.LogPath, lastLines(p.Output(), 25))
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("tearing down the hosts: %v", err)
		}
	})
	return s
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("test hosts need root (network, mount and UTS namespaces, a bridge, cgroups); run the test as root, as CI does")
	}
}

// packages are the Debian packages that provide the commands the harness and its
// tests use, and where each command is.
var packages = map[string]struct{ pkg, path string }{
	"ip":         {"iproute2", "/usr/sbin/ip"},
	"nsenter":    {"util-linux", "/usr/bin/nsenter"},
	"unshare":    {"util-linux", "/usr/bin/unshare"},
	"iptables":   {"iptables", "/usr/sbin/iptables"},
	"sshd":       {"openssh-server", "/usr/sbin/sshd"},
	"containerd": {"containerd", "/usr/bin/containerd"},
	"ctr":        {"containerd", "/usr/bin/ctr"},
	"runc":       {"runc", "/usr/sbin/runc"},
	"cni":        {"containernetworking-plugins", "/usr/lib/cni/bridge"},
	"curl":       {"curl", "/usr/bin/curl"},
}

var aptUpdate sync.Once

// Require makes sure the commands exist (names from the table above: ip, nsenter,
// unshare, iptables, sshd, containerd, ctr, runc, cni, curl), installing their Debian
// packages with apt-get where they do not, and skips t, saying what is missing,
// where that fails. It runs `apt-get update` once per process, before the first
// install.
func Require(t testing.TB, commands ...string) {
	t.Helper()
	var missing []string
	for _, c := range commands {
		p, ok := packages[c]
		if !ok {
			t.Fatalf("hosts.Require: unknown command %q", c)
		}
		if _, err := os.Stat(p.path); err != nil && !contains(missing, p.pkg) {
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) == 0 {
		return
	}
	if err := aptInstall(missing...); err != nil {
		t.Skipf("%s not installed and could not be installed: %v", strings.Join(missing, ", "), err)
	}
	for _, c := range commands {
		if _, err := os.Stat(packages[c].path); err != nil {
			t.Skipf("%s is still missing after installing %s", packages[c].path, packages[c].pkg)
		}
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// aptInstall installs pkgs. Test binaries that run side by side may all want
// packages at once, and apt-get refuses to run twice: they take turns under a lock
// of the harness's.
func aptInstall(pkgs ...string) error {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("apt-get is not available")
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(stateDir, "apt.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	var updateErr error
	aptUpdate.Do(func() {
		updateErr = aptGet("update", "-q")
	})
	if updateErr != nil {
		return updateErr
	}
	return aptGet(append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)...)
}

func aptGet(args ...string) error {
	// Another test binary may be installing at the same time: wait for dpkg's lock.
	cmd := exec.Command("apt-get", append([]string{"-o", "DPkg::Lock::Timeout=300"}, args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, lastLines(out.String(), 5))
	}
	return nil
}

var nodeBin struct {
	once sync.Once
	dir  string
	err  error
}

// NodeBinDir returns the directory that `hack/kubebin.sh node` fills: kubelet,
// kube-scheduler, kube-proxy, etcdctl, etcd, kube-apiserver and
// kube-controller-manager, built from the Go module proxy once and cached (a few
// minutes cold, instant warm). $DROVER_NODEBIN overrides it.
func NodeBinDir(t testing.TB) string {
	t.Helper()
	nodeBin.once.Do(func() {
		if d := os.Getenv("DROVER_NODEBIN"); d != "" {
			nodeBin.dir = d
			return
		}
		root, err := repoRoot()
		if err != nil {
			nodeBin.err = err
			return
		}
		var stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(root, "hack", "kubebin.sh"), "node")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			nodeBin.err = fmt.Errorf("hack/kubebin.sh node: %w: %s", err, lastLines(stderr.String(), 20))
			return
		}
		nodeBin.dir = strings.TrimSpace(string(out))
	})
	if nodeBin.err != nil {
		t.Fatal(nodeBin.err)
	}
	return nodeBin.dir
}

// FreeGatewayAddr is a free host:port on the bridge's gateway, where the hosts reach
// this machine: for a hub server they must reach.
func (s *Set) FreeGatewayAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(s.Gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// NodeBinDirVersion is NodeBinDir for another Kubernetes release than the one
// hack/kubebin.sh pins (KUBE_VERSION=version hack/kubebin.sh node): cold, it builds
// for several minutes; then it is cached.
func NodeBinDirVersion(t testing.TB, version string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "hack", "kubebin.sh"), "node")
	cmd.Env = append(os.Environ(), "KUBE_VERSION="+version)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("KUBE_VERSION=%s hack/kubebin.sh node: %v: %s", version, err, lastLines(stderr.String(), 20))
	}
	return strings.TrimSpace(string(out))
}

// repoRoot finds the repository from the working directory, which is the package's
// directory under go test.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "kubebin.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("hack/kubebin.sh not found above the working directory; set DROVER_NODEBIN")
		}
		dir = parent
	}
}
