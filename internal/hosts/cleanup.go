package hosts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func ownerFile(slot int) string { return filepath.Join(stateDir, "r"+strconv.Itoa(slot)) }

func reaperFile(slot int) string { return ownerFile(slot) + ".reaper" }

// killReaper stops a run's reaper before its slot is torn down, and so before the
// slot can be taken again: a reaper left running would kill the next run's processes.
func killReaper(slot int) error {
	b, err := os.ReadFile(reaperFile(slot))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var pid int
	var start string
	if _, err := fmt.Sscanf(string(b), "%d %s", &pid, &start); err == nil {
		if cur, err := startTime(pid); err == nil && cur == start {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline := time.Now().Add(5 * time.Second)
			for {
				cur, err := startTime(pid)
				if err != nil || cur != start || processState(pid) == "Z" {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("the reaper of r%d, pid %d, does not exit", slot, pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return os.Remove(reaperFile(slot))
}

// processState is the state letter of a process (R, S, Z...), or "" when it is gone.
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// startTime is a process's start time in clock ticks since boot (field 22 of
// /proc/<pid>/stat), which tells a live owner from a new process that reuses its pid.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return fields[19], nil
}

// owner reads a slot's owner file: the owner's pid and start time, and the run's
// data directory. ok is false when there is no owner file.
func owner(slot int) (pid int, start, dir string, ok bool) {
	b, err := os.ReadFile(ownerFile(slot))
	if err != nil {
		return 0, "", "", false
	}
	lines := strings.Split(string(b), "\n")
	f := strings.Fields(lines[0])
	if len(f) == 2 {
		pid, _ = strconv.Atoi(f[0])
		start = f[1]
	}
	if len(lines) > 1 {
		dir = strings.TrimSpace(lines[1])
	}
	return pid, start, dir, true
}

func alive(slot int) bool {
	pid, start, _, ok := owner(slot)
	if !ok || pid == 0 {
		return false
	}
	cur, err := startTime(pid)
	return err == nil && cur == start
}

// knownSlots are the slots that have anything at all: an owner file, a cgroup, a
// bridge or veth, or an iptables rule.
func knownSlots() []int {
	seen := map[int]bool{}
	add := func(name, prefix string) {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			if i := strings.IndexByte(rest, 'x'); i >= 0 {
				rest = rest[:i]
			}
			if n, err := strconv.Atoi(rest); err == nil && n >= 0 && n < maxSlots {
				seen[n] = true
			}
		}
	}
	if entries, err := os.ReadDir(stateDir); err == nil {
		for _, e := range entries {
			add(e.Name(), "r")
		}
	}
	hs, _ := hierarchies()
	for _, h := range hs {
		if entries, err := os.ReadDir(filepath.Join(h, cgroupTop)); err == nil {
			for _, e := range entries {
				add(e.Name(), "r")
			}
		}
	}
	for _, l := range links() {
		add(l, bridgePrefix)
		add(l, vethPrefix)
	}
	for _, r := range forwardRules() {
		add(r.run, "r")
	}
	out := make([]int, 0, len(seen))
	for sl := range seen {
		out = append(out, sl)
	}
	return out
}

// cleanLeftovers tears down every run whose owner is gone.
func cleanLeftovers(logf func(string, ...any)) error {
	var errs []error
	for _, sl := range knownSlots() {
		if alive(sl) {
			continue
		}
		_, _, dir, _ := owner(sl)
		logf("hosts r%d: cleaning up after a run whose owner is gone", sl)
		errs = append(errs, teardown(sl, dir))
	}
	return errors.Join(errs...)
}

// teardown removes everything of a slot: it kills every process in its cgroups,
// which frees the hosts' namespaces and with them their mounts and their ends of
// the veths, then removes the cgroups, the links, the iptables rules, the data
// directory and, last, the owner file.
func teardown(slot int, dir string) error {
	runName := "r" + strconv.Itoa(slot)
	var errs []error
	if err := killReaper(slot); err != nil {
		errs = append(errs, err)
	}
	cg := existingCgroup(cgroupTop + "/" + runName)
	if err := cg.kill(30 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := cg.remove(); err != nil {
		errs = append(errs, err)
	}
	bridge := bridgePrefix + strconv.Itoa(slot)
	veth := vethPrefix + strconv.Itoa(slot) + "x"
	for _, l := range links() {
		if l == bridge || strings.HasPrefix(l, veth) {
			if err := run("ip", "link", "del", l); err != nil && linkExists(l) {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, removeForwardRules(runName))
	if dir != "" && filepath.Base(dir) == runName {
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hosts %s: tearing down: %w", runName, err)
	}
	if err := os.Remove(ownerFile(slot)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// links are the names of the network interfaces in the root namespace.
func links() []string {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// A forwardRule is one of the harness's iptables rules, found by its comment.
type forwardRule struct {
	run  string
	spec []string // as iptables -S prints it, without the leading -A
}

func ruleComment(run string) string { return "drover-hosts " + run }

// addForwardRules accepts forwarding to and from the bridge, so that hosts reach
// each other and the root namespace even where the FORWARD chain drops by default
// (as it does where Docker has run) and br_netfilter sends bridged traffic through
// it. Without iptables there is nothing to add.
func addForwardRules(slot int, bridge string) error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil
	}
	c := ruleComment("r" + strconv.Itoa(slot))
	for _, dir := range []string{"-i", "-o"} {
		if err := run("iptables", "-w", "-I", "FORWARD", dir, bridge, "-m", "comment", "--comment", c, "-j", "ACCEPT"); err != nil {
			return err
		}
	}
	return nil
}

func forwardRules() []forwardRule {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil
	}
	out, err := exec.Command("iptables", "-w", "-S", "FORWARD").Output()
	if err != nil {
		return nil
	}
	var rules []forwardRule
	for _, line := range strings.Split(string(out), "\n") {
		// -A FORWARD -i drvh0 -m comment --comment "drover-hosts r0" -j ACCEPT
		i := strings.Index(line, `"drover-hosts r`)
		if !strings.HasPrefix(line, "-A ") || i < 0 {
			continue
		}
		run := strings.TrimSuffix(strings.Fields(line[i+len(`"drover-hosts `):])[0], `"`)
		var spec []string
		for _, f := range strings.Fields(strings.Replace(line, `"drover-hosts `+run+`"`, "drover-hosts\x00"+run, 1))[1:] {
			spec = append(spec, strings.ReplaceAll(f, "\x00", " "))
		}
		rules = append(rules, forwardRule{run: run, spec: spec})
	}
	return rules
}

func removeForwardRules(run string) error {
	var errs []error
	for _, r := range forwardRules() {
		if r.run != run {
			continue
		}
		if err := exec.Command("iptables", append([]string{"-w", "-D"}, r.spec...)...).Run(); err != nil {
			errs = append(errs, fmt.Errorf("iptables -D %s: %w", strings.Join(r.spec, " "), err))
		}
	}
	return errors.Join(errs...)
}
