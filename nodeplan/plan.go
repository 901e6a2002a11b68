// Package nodeplan is the contract between the hub's planner and the node agent
// (drover node-agent) on a provisioned host: one Plan per node, which says what the
// host must hold and run.
//
// A plan has four parts, applied in this order:
//
//   - files, written atomically with their modes (certificates, configuration,
//     kubeconfigs, static binaries' checksums);
//   - one-time instructions, commands run in order until each has succeeded once for
//     its exact content (joining an etcd member, writing a bootstrap token);
//     changing an instruction runs it again, leaving it as it is never does;
//   - processes, which the node agent starts and supervises, restarting them with
//     backoff when they exit (etcd, kube-apiserver, kubelet, containerd);
//   - probes, run periodically, whose results the node reports to the hub
//     (etcd health, the API server's /readyz, the kubelet's /healthz).
//
// The planner publishes a plan with its checksum (Checksum, over the exact bytes it
// serialised); the node agent applies only a plan whose bytes match the checksum it
// was given (Verify), and reports back the checksum it applied. The design follows
// Rancher's system-agent plans, with instructions made idempotent per instruction
// rather than per plan, so that a day-2 change reruns only what changed.
package nodeplan

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Bounds on a plan, so that a broken planner or a corrupt Secret cannot exhaust a
// node's disk or the agent's memory. A plan lives in a Secret, which holds at most
// 1 MiB; the binaries themselves come from the artifact source, never from a plan.
const (
	MaxPlanBytes     = 1 << 20
	MaxFiles         = 256
	MaxArtifacts     = 32
	MaxInstructions  = 64
	MaxProcesses     = 32
	MaxProbes        = 32
	MaxArgs          = 256
	MaxNameLength    = 63
	MaxPathLength    = 4096
	MinProbePeriod   = time.Second
	DefaultPeriod    = 10 * time.Second
	DefaultTimeout   = 5 * time.Second
	MaxStepTimeout   = 30 * time.Minute
	defaultThreshold = 1
)

// SelfEnv names the environment variable that gives instructions and exec probes
// the node agent's own drover binary, for the drover subcommands plans run
// (drover etcd-snapshot-s3).
const SelfEnv = "DROVER_BIN"

// Plan is what one node must hold and run.
type Plan struct {
	// Artifacts are binaries the node agent downloads from the hub's artifact
	// source into its own bin directory, checked by sha256, before anything else.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	// Files are written before anything runs.
	Files []File `json:"files,omitempty"`
	// Instructions run in order, each until it has succeeded once for its content.
	Instructions []Instruction `json:"instructions,omitempty"`
	// Processes are started after the instructions and kept running.
	Processes []Process `json:"processes,omitempty"`
	// Probes are run periodically once the processes are started.
	Probes []Probe `json:"probes,omitempty"`
}

// Artifact is a binary from the artifact source.
type Artifact struct {
	// Name is the file's path in the artifact source and in the agent's bin
	// directory: a file name, optionally in one directory, e.g. v1.36.3/kubelet.
	Name string `json:"name"`
	// SHA256 is the hex digest the downloaded file must have.
	SHA256 string `json:"sha256"`
	// URL, when set, is where to download it (a mirror); else the hub's artifact
	// source serves it.
	URL string `json:"url,omitempty"`
}

// File is one file on the node.
type File struct {
	// Path is absolute and clean. The node agent refuses paths inside its own data
	// directory.
	Path string `json:"path"`
	// Content is the file's bytes (base64 in JSON).
	Content []byte `json:"content"`
	// Mode is the permission bits, e.g. 0o600 (0o644 when zero).
	Mode uint32 `json:"mode,omitempty"`
}

// Command is a program with its arguments and environment.
type Command struct {
	// Path is the program, absolute, or a name found in PATH.
	Path string   `json:"path"`
	Args []string `json:"args,omitempty"`
	// Env adds NAME=value pairs to the agent's environment. Instructions and exec
	// probes also find the agent's own drover binary in $DROVER_BIN.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory (absolute); the agent's data directory when empty.
	Dir string `json:"dir,omitempty"`
}

// Instruction is a command run until it succeeds once for its content.
type Instruction struct {
	// Name identifies the instruction in status and errors.
	Name string `json:"name"`
	Command
	// Timeout bounds one run (DefaultTimeout when zero).
	Timeout Duration `json:"timeout,omitempty"`
}

// Process is a command the node agent keeps running.
type Process struct {
	// Name identifies the process in status and its log file.
	Name string `json:"name"`
	Command
}

// Probe is a periodic health check.
type Probe struct {
	// Name identifies the probe in status.
	Name string `json:"name"`
	// Exactly one of HTTPGet and Exec is set.
	HTTPGet *HTTPGet `json:"httpGet,omitempty"`
	Exec    *Command `json:"exec,omitempty"`
	// Period between runs (DefaultPeriod when zero; at least MinProbePeriod).
	Period Duration `json:"period,omitempty"`
	// Timeout of one run (DefaultTimeout when zero).
	Timeout Duration `json:"timeout,omitempty"`
	// SuccessThreshold and FailureThreshold are how many runs in a row flip the
	// probe's health (1 when zero).
	SuccessThreshold int `json:"successThreshold,omitempty"`
	FailureThreshold int `json:"failureThreshold,omitempty"`
}

// HTTPGet probes a URL: healthy on a 2xx answer.
type HTTPGet struct {
	URL string `json:"url"`
	// CAFile, CertFile and KeyFile are paths on the node (files of the plan, usually)
	// for HTTPS with the cluster's own CA and a client certificate.
	CAFile   string `json:"caFile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// Duration is a time.Duration that reads and writes as "10s" in JSON.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string such as "10s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Or returns the duration, or def when it is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d.Duration <= 0 {
		return def
	}
	return d.Duration
}

// Threshold returns n, or 1 when it is zero.
func Threshold(n int) int {
	if n <= 0 {
		return defaultThreshold
	}
	return n
}

// Encode serialises a plan and returns its bytes and checksum, which are published
// together.
func Encode(p *Plan) ([]byte, string, error) {
	if err := p.Validate(); err != nil {
		return nil, "", err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, "", err
	}
	if len(b) > MaxPlanBytes {
		return nil, "", fmt.Errorf("plan: %d bytes, more than %d", len(b), MaxPlanBytes)
	}
	return b, Checksum(b), nil
}

// Checksum is the sha256 of a serialised plan, in hex.
func Checksum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ErrChecksum says that a plan's bytes do not match the checksum published with them.
var ErrChecksum = errors.New("plan: the checksum does not match its content; not applied")

// Verify decodes a plan after checking its bytes against the published checksum,
// and validates it. A node never applies a plan that fails here.
func Verify(b []byte, checksum string) (*Plan, error) {
	if len(b) > MaxPlanBytes {
		return nil, fmt.Errorf("plan: %d bytes, more than %d", len(b), MaxPlanBytes)
	}
	if Checksum(b) != checksum {
		return nil, ErrChecksum
	}
	return Decode(b)
}

// Decode parses and validates a plan, refusing unknown fields.
func Decode(b []byte) (*Plan, error) {
	if len(b) > MaxPlanBytes {
		return nil, fmt.Errorf("plan: %d bytes, more than %d", len(b), MaxPlanBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if dec.More() {
		return nil, errors.New("plan: trailing data after the plan")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	artifactRE = regexp.MustCompile(`^([A-Za-z0-9_][-A-Za-z0-9_.]{0,63}/)?[A-Za-z0-9_][-A-Za-z0-9_.]{0,127}$`)
	sha256RE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate says what is wrong with a plan, naming the field, or nil.
func (p *Plan) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("plan: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(p.Files) > MaxFiles || len(p.Instructions) > MaxInstructions || len(p.Processes) > MaxProcesses || len(p.Probes) > MaxProbes {
		bad("plan", "at most %d files, %d instructions, %d processes and %d probes", MaxFiles, MaxInstructions, MaxProcesses, MaxProbes)
		return errors.Join(errs...)
	}
	if len(p.Artifacts) > MaxArtifacts {
		bad("artifacts", "at most %d", MaxArtifacts)
	}
	arts := map[string]bool{}
	for i, a := range p.Artifacts {
		field := fmt.Sprintf("artifacts[%d]", i)
		if !artifactRE.MatchString(a.Name) {
			bad(field+".name", "%q must be a file name, optionally in one directory (letters, digits, '.', '_' and '-')", a.Name)
		} else if arts[a.Name] {
			bad(field+".name", "%q is listed twice", a.Name)
		}
		arts[a.Name] = true
		if !sha256RE.MatchString(a.SHA256) {
			bad(field+".sha256", "want 64 lowercase hex digits")
		}
		if a.URL != "" && !strings.HasPrefix(a.URL, "https://") && !strings.HasPrefix(a.URL, "http://") {
			bad(field+".url", "%q must be http:// or https://", a.URL)
		}
	}
	paths := map[string]bool{}
	for i, f := range p.Files {
		field := fmt.Sprintf("files[%d]", i)
		if msg := checkPath(f.Path); msg != "" {
			bad(field+".path", "%s", msg)
		} else if paths[f.Path] {
			bad(field+".path", "%q is written twice", f.Path)
		}
		paths[f.Path] = true
		if f.Mode > 0o7777 {
			bad(field+".mode", "%#o is not a permission mode", f.Mode)
		}
	}
	names := map[string]string{}
	name := func(field, kind, n string) {
		switch {
		case !nameRE.MatchString(n) || len(n) > MaxNameLength:
			bad(field+".name", "%q must be a DNS label (lowercase letters, digits and '-', at most %d characters)", n, MaxNameLength)
		case names[kind+"/"+n] != "":
			bad(field+".name", "%q is also %s", n, names[kind+"/"+n])
		default:
			names[kind+"/"+n] = field
		}
	}
	command := func(field string, c Command) {
		switch {
		case c.Path == "":
			bad(field+".path", "empty")
		case strings.ContainsRune(c.Path, '/') && !path.IsAbs(c.Path):
			bad(field+".path", "%q must be absolute, or a name looked up in PATH", c.Path)
		}
		if len(c.Args) > MaxArgs {
			bad(field+".args", "more than %d", MaxArgs)
		}
		for j, e := range c.Env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				bad(fmt.Sprintf("%s.env[%d]", field, j), "want NAME=value")
			}
		}
		if c.Dir != "" && !path.IsAbs(c.Dir) {
			bad(field+".dir", "%q must be absolute", c.Dir)
		}
		for _, s := range append([]string{c.Path, c.Dir}, append(c.Args, c.Env...)...) {
			if strings.ContainsRune(s, 0) {
				bad(field, "contains a NUL byte")
				break
			}
		}
	}
	timeout := func(field string, d Duration) {
		if d.Duration < 0 || d.Duration > MaxStepTimeout {
			bad(field, "%s is not between 0 and %s", d.Duration, MaxStepTimeout)
		}
	}
	for i, in := range p.Instructions {
		field := fmt.Sprintf("instructions[%d]", i)
		name(field, "instruction", in.Name)
		command(field, in.Command)
		timeout(field+".timeout", in.Timeout)
	}
	for i, pr := range p.Processes {
		field := fmt.Sprintf("processes[%d]", i)
		name(field, "process", pr.Name)
		command(field, pr.Command)
	}
	for i, pr := range p.Probes {
		field := fmt.Sprintf("probes[%d]", i)
		name(field, "probe", pr.Name)
		switch {
		case (pr.HTTPGet == nil) == (pr.Exec == nil):
			bad(field, "set exactly one of httpGet and exec")
		case pr.HTTPGet != nil:
			if !strings.HasPrefix(pr.HTTPGet.URL, "http://") && !strings.HasPrefix(pr.HTTPGet.URL, "https://") {
				bad(field+".httpGet.url", "%q must be http:// or https://", pr.HTTPGet.URL)
			}
			for k, f := range map[string]string{"caFile": pr.HTTPGet.CAFile, "certFile": pr.HTTPGet.CertFile, "keyFile": pr.HTTPGet.KeyFile} {
				if f != "" && !path.IsAbs(f) {
					bad(field+".httpGet."+k, "%q must be absolute", f)
				}
			}
			if (pr.HTTPGet.CertFile == "") != (pr.HTTPGet.KeyFile == "") {
				bad(field+".httpGet", "set both certFile and keyFile, or neither")
			}
		default:
			command(field+".exec", *pr.Exec)
		}
		if pr.Period.Duration != 0 && pr.Period.Duration < MinProbePeriod {
			bad(field+".period", "at least %s", MinProbePeriod)
		}
		timeout(field+".period", pr.Period)
		timeout(field+".timeout", pr.Timeout)
		if pr.SuccessThreshold < 0 || pr.FailureThreshold < 0 || pr.SuccessThreshold > 100 || pr.FailureThreshold > 100 {
			bad(field, "thresholds are between 0 and 100")
		}
	}
	return errors.Join(errs...)
}

// checkPath says what is wrong with a file path, or "".
func checkPath(p string) string {
	switch {
	case p == "" || !path.IsAbs(p):
		return fmt.Sprintf("%q must be absolute", p)
	case len(p) > MaxPathLength:
		return "too long"
	case path.Clean(p) != p || p == "/":
		return fmt.Sprintf("%q must be clean (no '..', '.', '//' or trailing '/') and not the root", p)
	case strings.ContainsRune(p, 0):
		return "contains a NUL byte"
	}
	return ""
}

// InstructionKey identifies one instruction's exact content: it runs again when,
// and only when, this changes.
func InstructionKey(in Instruction) string {
	b, _ := json.Marshal(in)
	sum := sha256.Sum256(b)
	return in.Name + "-" + hex.EncodeToString(sum[:8])
}

// ProcessKey identifies a process's exact command: the process is restarted when
// this changes.
func ProcessKey(p Process) string {
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Names returns the names of the plan's processes, sorted.
func (p *Plan) Names() []string {
	var out []string
	for _, pr := range p.Processes {
		out = append(out, pr.Name)
	}
	slices.Sort(out)
	return out
}
