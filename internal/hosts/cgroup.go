package hosts

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupTop is the directory, in every cgroup v1 hierarchy, under which each run
// keeps its hosts' cgroups: <hierarchy>/drover-hosts/<run>/<host>.
const cgroupTop = "drover-hosts"

// mountinfo is where hierarchies reads the mounts; tests point it elsewhere.
var mountinfo = "/proc/self/mountinfo"

// hierarchies returns the mount points of the cgroup v1 hierarchies, e.g.
// /sys/fs/cgroup/cpu and /sys/fs/cgroup/systemd, sorted.
func hierarchies() ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup" && len(fields) > 4 {
				out = append(out, fields[4])
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no cgroup v1 hierarchy is mounted, and the harness needs cgroup v1 (or hybrid) mounts under /sys/fs/cgroup", ErrUnsupported)
	}
	sort.Strings(out)
	return out, nil
}

// cgroupPaths are one cgroup's directories, one per hierarchy.
type cgroupPaths []string

// makeCgroup creates rel (e.g. drover-hosts/r0/host-0) in every hierarchy. In the
// cpuset hierarchy each new level gets its parent's CPUs and memory nodes, without
// which no process may join it.
func makeCgroup(rel string) (cgroupPaths, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	var paths cgroupPaths
	for _, h := range hs {
		parent := h
		for _, part := range strings.Split(rel, "/") {
			dir := filepath.Join(parent, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
			if filepath.Base(h) == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) != "" {
						continue
					}
					v, err := os.ReadFile(filepath.Join(parent, f))
					if err != nil {
						return nil, err
					}
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						return nil, fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
					}
				}
			}
			parent = dir
		}
		paths = append(paths, parent)
	}
	return paths, nil
}

// existingCgroup returns rel's directories in the hierarchies where it exists.
func existingCgroup(rel string) cgroupPaths {
	hs, _ := hierarchies()
	var paths cgroupPaths
	for _, h := range hs {
		if st, err := os.Stat(filepath.Join(h, rel)); err == nil && st.IsDir() {
			paths = append(paths, filepath.Join(h, rel))
		}
	}
	return paths
}

// pids returns every process in the cgroups or any cgroup beneath them.
func (c cgroupPaths) pids() []int {
	seen := map[int]bool{}
	for _, root := range c {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// kill kills every process in the cgroups and beneath, freezing them first where
// the freezer hierarchy is mounted so that nothing forks away in between, and waits
// until they are gone.
func (c cgroupPaths) kill(timeout time.Duration) error {
	var freezer string
	for _, p := range c {
		if strings.Contains(p, "/freezer/") {
			freezer = filepath.Join(p, "freezer.state")
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		pids := c.pids()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v are still running in %s", pids, c[0])
		}
		if freezer != "" {
			_ = os.WriteFile(freezer, []byte("FROZEN"), 0o644)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if freezer != "" {
			_ = os.WriteFile(freezer, []byte("THAWED"), 0o644)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// remove removes the cgroups and every cgroup beneath them, deepest first. The
// processes in them must be gone.
func (c cgroupPaths) remove() error {
	var errs []error
	for _, root := range c {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			// A cgroup whose last process has just exited may still be busy for a moment.
			for range 50 {
				if err = syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.EBUSY) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
