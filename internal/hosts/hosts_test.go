package hosts

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHosts checks what a host is: its own hostname, address, /etc, /var/lib and
// /run; its processes in its cgroups; the other hosts and the root namespace reachable
// over the bridge; and that Close leaves nothing behind.
func TestHosts(t *testing.T) {
	s := NewForTest(t, 2, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h0, h1 := s.Hosts[0], s.Hosts[1]

	for _, h := range s.Hosts {
		out, err := h.Run(ctx, "hostname")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != h.Name {
			t.Errorf("hostname in %s = %q", h.Name, got)
		}
		out, err = h.Run(ctx, "ip", "-4", "-o", "addr", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), " "+h.IP.String()+"/24 ") {
			t.Errorf("eth0 of %s: %s, want %s", h.Name, out, h.IP)
		}
		// /sys shows the host's own devices: lo and eth0, not the machine's.
		out, err = h.Run(ctx, "ls", "/sys/class/net")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(out)); strings.Join(got, ",") != "eth0,lo" {
			t.Errorf("/sys/class/net in %s = %v, want eth0 and lo", h.Name, got)
		}
		// ...and keeps the cgroup hierarchies, which `ip netns exec` would hide.
		if _, err := h.Run(ctx, "test", "-d", "/sys/fs/cgroup/memory"+h.Cgroup()); err != nil {
			t.Errorf("cgroup hierarchy not visible in %s: %v", h.Name, err)
		}
	}

	// Files: /etc is the machine's plus the host's own writes; /var/lib and /run are the host's.
	if err := h0.WriteFile("/etc/kubernetes/marker", []byte("h0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h0.Run(ctx, "sh", "-c", "echo h0 >/var/lib/marker && echo h0 >/run/marker && grep -q root /etc/passwd"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/kubernetes/marker", "/var/lib/marker", "/run/marker"} {
		if b, err := os.ReadFile(h0.Path(p)); err != nil || string(b) != "h0\n" {
			t.Errorf("%s in %s: %q, %v", p, h0.Name, b, err)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s written in %s is visible on the machine", p, h0.Name)
		}
		if _, err := h1.Run(ctx, "test", "!", "-e", p); err != nil {
			t.Errorf("%s written in %s is visible in %s", p, h0.Name, h1.Name)
		}
	}
	if b, _ := os.ReadFile(h1.Path("/etc/hostname")); strings.TrimSpace(string(b)) != h1.Name {
		t.Errorf("/etc/hostname in %s = %q", h1.Name, b)
	}
	// No DNS server, so that a lookup of an unknown name fails at once.
	if b, _ := os.ReadFile(h1.Path("/etc/resolv.conf")); strings.Contains(string(b), "nameserver") {
		t.Errorf("/etc/resolv.conf in %s names a server: %q", h1.Name, b)
	}
	lookup := time.Now()
	if _, err := h1.Run(ctx, "getent", "hosts", "drover-no-such-host.example"); err == nil {
		t.Error("an unknown name resolved in a host")
	}
	if d := time.Since(lookup); d > 2*time.Second {
		t.Errorf("looking up an unknown name in a host took %s", d)
	}

	// Processes are in the host's cgroups.
	out, err := h1.Run(ctx, "cat", "/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), ":memory:"+h1.Cgroup()+"\n") {
		t.Errorf("a process in %s is in cgroups\n%s\nwant memory:%s", h1.Name, out, h1.Cgroup())
	}

	// The root namespace, on the gateway, and the other host, by name.
	ln, err := net.Listen("tcp", net.JoinHostPort(s.Gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- strings.TrimSpace(line)
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if _, err := h0.Run(ctx, "bash", "-c", "echo from-$(hostname) >/dev/tcp/"+s.Gateway.String()+"/"+port); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-got:
		if line != "from-"+h0.Name {
			t.Errorf("the hub got %q", line)
		}
	case <-ctx.Done():
		t.Fatal("nothing reached the hub on the gateway")
	}
	// The other host, by name: this test binary listens in h1, bash connects from h0.
	cmd := h1.Command(context.Background(), os.Args[0], "-test.run", "^TestHelperListen$", "-test.v")
	cmd.Env = append(cmd.Env, "DROVER_HOSTS_LISTEN=1")
	lis, err := h1.StartCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(lis.Output(), "listening") })
	if _, err := h0.Run(ctx, "bash", "-c", "echo from-$(hostname) >/dev/tcp/"+h1.Name+"/7777"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(lis.Output(), "got from-"+h0.Name) })

	// Another process finds a host of this run, as `go run ./hack/hosts enter` does.
	attached, err := Attach(s.Run, h1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if attached.PID() != h1.PID() || attached.Dir != h1.Dir || attached.Name != h1.Name {
		t.Errorf("Attach found pid %d, dir %s; want %d, %s", attached.PID(), attached.Dir, h1.PID(), h1.Dir)
	}
	if out, err := attached.Run(ctx, "hostname"); err != nil || strings.TrimSpace(string(out)) != h1.Name {
		t.Errorf("hostname through Attach: %q, %v", out, err)
	}

	// A process killed by a signal, as a crash would.
	victim, err := h1.Start("sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := victim.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("a killed process exited with %v", err)
	}

	// Teardown leaves nothing: processes, cgroups, links, rules, files.
	sleeper, err := h1.Start("sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	anchor := h0.PID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-sleeper.Done()
	if err := syscall.Kill(anchor, 0); err == nil {
		t.Errorf("the anchor of %s, pid %d, is still running", h0.Name, anchor)
	}
	assertGone(t, s)
}

func TestNewRefusesBadNames(t *testing.T) {
	for _, names := range [][]string{{"Host"}, {"-a"}, {"a_b"}, {"a.b"}, {strings.Repeat("a", 64)}} {
		if _, err := New(len(names), Options{Names: names}); err == nil || !strings.Contains(err.Error(), "name") {
			t.Errorf("New with names %q: %v", names, err)
		}
	}
}

// TestTwinsAndDisconnect makes two hosts of one hostname, as two machines may be, and
// cuts one off the network and back.
func TestTwinsAndDisconnect(t *testing.T) {
	s := NewForTest(t, 2, Options{Names: []string{"twin", "twin"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := s.Hosts[0], s.Hosts[1]
	if a.ID != "twin" || b.ID != "twin.1" || a.Dir == b.Dir || a.Cgroup() == b.Cgroup() || a.IP == b.IP {
		t.Fatalf("twins: %s %s %s %s, %s %s %s %s", a.ID, a.Dir, a.Cgroup(), a.IP, b.ID, b.Dir, b.Cgroup(), b.IP)
	}
	for _, h := range s.Hosts {
		if out, err := h.Run(ctx, "hostname"); err != nil || strings.TrimSpace(string(out)) != "twin" {
			t.Errorf("hostname of %s: %q, %v", h.ID, out, err)
		}
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(s.Gateway.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	connect := "timeout 2 bash -c 'exec 3<>/dev/tcp/" + s.Gateway.String() + "/" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "'"
	if _, err := b.Run(ctx, "sh", "-c", connect); err != nil {
		t.Fatal(err)
	}
	if err := b.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(ctx, "sh", "-c", connect); err == nil {
		t.Error("a disconnected host reached the hub")
	}
	if _, err := a.Run(ctx, "sh", "-c", connect); err != nil {
		t.Errorf("the other twin lost the hub too: %v", err)
	}
	if err := b.Reconnect(); err != nil {
		t.Fatal(err)
	}
	// The host's neighbour entry for the hub failed while it was disconnected, and
	// the kernel answers "No route to host" from it until it resolves the hub
	// again: a real host that gets its link back recovers the same way, within a
	// few seconds.
	err = nil
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, err = b.Run(ctx, "sh", "-c", connect); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("10 s after Reconnect: %v", err)
	}
}

// TestCgroupV2OnlyIsUnsupported checks that a machine with only the unified
// hierarchy is reported as one that cannot make hosts, which NewForTest skips on.
func TestCgroupV2OnlyIsUnsupported(t *testing.T) {
	f := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(f, []byte("35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func(old string) { mountinfo = old }(mountinfo)
	mountinfo = f
	if _, err := hierarchies(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("hierarchies on a cgroup v2 machine: %v, want ErrUnsupported", err)
	}
}

// assertGone fails t if anything of s remains.
func assertGone(t *testing.T, s *Set) {
	t.Helper()
	if _, err := os.Stat(s.Dir); err == nil {
		t.Errorf("data directory %s remains", s.Dir)
	}
	if _, err := os.Stat(ownerFile(s.slot)); err == nil {
		t.Errorf("owner file %s remains", ownerFile(s.slot))
	}
	if n := len(existingCgroup(cgroupTop + "/" + s.Run)); n > 0 {
		t.Errorf("cgroup %s/%s remains in %d hierarchies", cgroupTop, s.Run, n)
	}
	for _, l := range links() {
		if l == s.Bridge || strings.HasPrefix(l, fmt.Sprintf("%s%dx", vethPrefix, s.slot)) {
			t.Errorf("link %s remains", l)
		}
	}
	for _, r := range forwardRules() {
		if r.run == s.Run {
			t.Errorf("iptables rule %v remains", r.spec)
		}
	}
}

// TestHelperListen is not a test: TestHosts runs it in a host, with
// DROVER_HOSTS_LISTEN=1, as a one-line TCP server on port 7777.
func TestHelperListen(t *testing.T) {
	if os.Getenv("DROVER_HOSTS_LISTEN") != "1" {
		t.Skip("a helper that TestHosts runs inside a host")
	}
	ln, err := net.Listen("tcp", ":7777")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("listening")
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Println("got", strings.TrimSpace(line))
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLeftoversOfACrashedRun kills a process that made hosts, as a test binary
// killed by its timeout would be, and checks that its hosts' processes die at once
// and that the next New removes the rest.
func TestLeftoversOfACrashedRun(t *testing.T) {
	if os.Getenv("DROVER_HOSTS_CRASH") == "1" {
		s, err := New(1, Options{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if _, err := s.Hosts[0].Start("sleep", "1000"); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("run %d %s\n", s.slot, s.Dir)
		time.Sleep(time.Hour)
	}
	RequireRoot(t)
	Require(t, "ip", "nsenter", "unshare", "iptables")

	cmd := exec.Command(os.Args[0], "-test.run", "^TestLeftoversOfACrashedRun$")
	cmd.Env = append(os.Environ(), "DROVER_HOSTS_CRASH=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	var slot int
	var dir string
	if _, err := fmt.Sscanf(line, "run %d %s", &slot, &dir); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the crashing run said %q", line)
	}
	run := "r" + strconv.Itoa(slot)
	cg := existingCgroup(cgroupTop + "/" + run)
	waitFor(t, 5*time.Second, func() bool { return len(cg.pids()) == 2 }) // the anchor and sleep
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	// The reaper kills the hosts' processes within a few seconds.
	deadline := time.Now().Add(10 * time.Second)
	for len(cg.pids()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if pids := cg.pids(); len(pids) > 0 {
		t.Errorf("processes %v of the crashed run still run", pids)
	}
	if !linkExists(bridgePrefix+strconv.Itoa(slot)) || len(existingCgroup(cgroupTop+"/"+run)) == 0 {
		t.Fatal("the crashed run left nothing behind to clean up; the test proves nothing")
	}

	// What New does first.
	if err := Clean(t.Logf); err != nil {
		t.Fatal(err)
	}
	assertGone(t, &Set{Run: run, slot: slot, Dir: dir, Bridge: bridgePrefix + strconv.Itoa(slot)})
}
