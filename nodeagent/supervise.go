package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/drover-io/drover/nodeplan"
)

// healthyRun is how long a process must run for its restart backoff to start over.
const healthyRun = time.Minute

// maxLogBytes bounds a process's log file: past it, the file starts over.
const maxLogBytes = 16 << 20

// supervised is one process the agent keeps running.
type supervised struct {
	a      *Agent
	proc   nodeplan.Process
	key    string
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	running  bool
	restarts int
	lastExit string
}

func (s *supervised) status() ProcessStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ProcessStatus{Name: s.proc.Name, Running: s.running, Restarts: s.restarts, LastExit: s.lastExit}
}

func (s *supervised) set(running bool, lastExit string) {
	s.mu.Lock()
	s.running = running
	if lastExit != "" {
		s.lastExit = lastExit
	}
	s.mu.Unlock()
	s.a.notify()
}

// reconcileProcesses stops the processes the plan no longer has, or has changed, and
// starts the ones it adds. Only Run's goroutine calls it.
func (a *Agent) reconcileProcesses(p *nodeplan.Plan) {
	a.stopStale(p)
	a.startMissing(p)
}

// stopStale stops the processes the plan no longer has, or has changed.
func (a *Agent) stopStale(p *nodeplan.Plan) {
	want := map[string]nodeplan.Process{}
	for _, pr := range p.Processes {
		want[pr.Name] = pr
	}
	a.mu.Lock()
	var stop []*supervised
	for name, s := range a.procs {
		if w, ok := want[name]; !ok || nodeplan.ProcessKey(w) != s.key {
			stop = append(stop, s)
			delete(a.procs, name)
		}
	}
	a.mu.Unlock()
	for _, s := range stop {
		a.log.Info("Stopping process", "process", s.proc.Name)
		s.stop()
	}
	if len(stop) > 0 {
		a.notify()
	}
}

// startMissing starts the plan's processes that are not running.
func (a *Agent) startMissing(p *nodeplan.Plan) {
	for _, pr := range p.Processes {
		a.mu.Lock()
		_, ok := a.procs[pr.Name]
		a.mu.Unlock()
		if ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		s := &supervised{a: a, proc: pr, key: nodeplan.ProcessKey(pr), cancel: cancel, done: make(chan struct{})}
		a.mu.Lock()
		a.procs[pr.Name] = s
		a.mu.Unlock()
		go s.loop(ctx)
	}
	a.notify()
}

// stopAll stops every process and probe.
func (a *Agent) stopAll() {
	a.mu.Lock()
	procs, probes := a.procs, a.probes
	a.procs, a.probes = map[string]*supervised{}, map[string]*probeRunner{}
	a.mu.Unlock()
	for _, pr := range probes {
		pr.stop()
	}
	var wg sync.WaitGroup
	for _, s := range procs {
		wg.Go(s.stop)
	}
	wg.Wait()
}

func (s *supervised) stop() {
	s.cancel()
	<-s.done
}

// loop runs the process until its context ends, restarting it with backoff.
func (s *supervised) loop(ctx context.Context) {
	defer close(s.done)
	backoff := s.a.opts.RetryMin
	for {
		started := time.Now()
		exit := s.runOnce(ctx)
		if ctx.Err() != nil {
			s.set(false, exit)
			return
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
		s.set(false, exit)
		if time.Since(started) > healthyRun {
			backoff = s.a.opts.RetryMin
		}
		s.a.log.Info("Process exited; restarting", "process", s.proc.Name, "exit", exit, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.a.opts.RetryMax)
	}
}

// runOnce starts the process and waits for it to end, or stops it when ctx ends
// (SIGTERM to its process group, SIGKILL after StopTimeout). It returns how it ended.
func (s *supervised) runOnce(ctx context.Context) string {
	logPath := filepath.Join(s.a.opts.DataDir, "logs", s.proc.Name+".log")
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if st, err := os.Stat(logPath); err == nil && st.Size() > maxLogBytes {
		flags |= os.O_TRUNC
	}
	logf, err := os.OpenFile(logPath, flags, 0o600)
	if err != nil {
		return "cannot open its log: " + err.Error()
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(s.proc.Path, s.proc.Args...)
	cmd.Env = append(os.Environ(), s.proc.Env...)
	cmd.Dir = s.proc.Dir
	if cmd.Dir == "" {
		cmd.Dir = s.a.opts.DataDir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "cannot start: " + err.Error()
	}
	s.set(true, "")
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	select {
	case err := <-waitc:
		return describeExit(err)
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err := <-waitc:
			return "stopped: " + describeExit(err)
		case <-time.After(s.a.opts.StopTimeout):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return "killed after " + s.a.opts.StopTimeout.String() + ": " + describeExit(<-waitc)
		}
	}
}

func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited with status 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	}
	return err.Error()
}

// probeRunner runs one probe periodically.
type probeRunner struct {
	a      *Agent
	probe  nodeplan.Probe
	key    string
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	healthy    bool
	message    string
	succ, fail int
}

func (p *probeRunner) status() ProbeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ProbeStatus{Name: p.probe.Name, Healthy: p.healthy, Message: p.message}
}

func (p *probeRunner) stop() {
	p.cancel()
	<-p.done
}

// reconcileProbes starts, restarts (when changed) and stops probes to match the plan.
func (a *Agent) reconcileProbes(_ context.Context, p *nodeplan.Plan) {
	want := map[string]nodeplan.Probe{}
	keys := map[string]string{}
	// A probe named after a process (the planner names them so: etcd,
	// kube-apiserver, kubelet, containerd) starts again, unhealthy until it passes,
	// when that process changes: a result from before a restart says nothing about
	// what runs now, and the hub moves on to the next node on these results.
	procs := map[string]string{}
	for _, pr := range p.Processes {
		procs[pr.Name] = nodeplan.ProcessKey(pr)
	}
	for _, pr := range p.Probes {
		want[pr.Name] = pr
		keys[pr.Name] = probeKey(pr) + "/" + procs[pr.Name]
	}
	a.mu.Lock()
	var stop []*probeRunner
	for name, r := range a.probes {
		if k, ok := keys[name]; !ok || k != r.key {
			stop = append(stop, r)
			delete(a.probes, name)
		}
	}
	a.mu.Unlock()
	for _, r := range stop {
		r.stop()
	}
	for _, pr := range p.Probes {
		a.mu.Lock()
		_, ok := a.probes[pr.Name]
		if !ok {
			ctx, cancel := context.WithCancel(context.Background())
			r := &probeRunner{a: a, probe: pr, key: keys[pr.Name], cancel: cancel, done: make(chan struct{}), message: "not run yet"}
			a.probes[pr.Name] = r
			go r.loop(ctx)
		}
		a.mu.Unlock()
	}
}

func probeKey(p nodeplan.Probe) string {
	return nodeplan.ProcessKey(nodeplan.Process{Name: p.Name, Command: nodeplan.Command{Path: fmt.Sprintf("%+v|%+v|%v|%v|%d|%d",
		p.HTTPGet, p.Exec, p.Period, p.Timeout, p.SuccessThreshold, p.FailureThreshold)}})
}

func (p *probeRunner) loop(ctx context.Context) {
	defer close(p.done)
	period := p.probe.Period.Or(nodeplan.DefaultPeriod)
	for {
		err := p.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		p.record(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

// record applies the thresholds to one result.
func (p *probeRunner) record(err error) {
	p.mu.Lock()
	changed := false
	if err == nil {
		p.succ, p.fail = p.succ+1, 0
		if !p.healthy && p.succ >= nodeplan.Threshold(p.probe.SuccessThreshold) {
			p.healthy, p.message, changed = true, "", true
		}
	} else {
		p.succ, p.fail = 0, p.fail+1
		msg := err.Error()
		if len(msg) > maxOutput {
			msg = msg[len(msg)-maxOutput:]
		}
		if p.healthy && p.fail >= nodeplan.Threshold(p.probe.FailureThreshold) {
			p.healthy, changed = false, true
		}
		if !p.healthy && p.message != msg {
			p.message, changed = msg, true
		}
	}
	p.mu.Unlock()
	if changed {
		p.a.notify()
	}
}

func (p *probeRunner) runOnce(ctx context.Context) error {
	timeout := p.probe.Timeout.Or(nodeplan.DefaultTimeout)
	if p.probe.Exec != nil {
		out, err := p.a.runOnce(ctx, *p.probe.Exec, timeout)
		if err != nil {
			return errors.New(withOutput(err, out))
		}
		return nil
	}
	h := p.probe.HTTPGet
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.CAFile != "" {
		full, err := p.a.target(h.CAFile)
		if err != nil {
			return err
		}
		pem, err := os.ReadFile(full)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate", h.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	if h.CertFile != "" {
		cert, err := p.a.target(h.CertFile)
		if err != nil {
			return err
		}
		key, err := p.a.target(h.KeyFile)
		if err != nil {
			return err
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return err
		}
		tlsConfig.Certificates = []tls.Certificate{pair}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s %s", h.URL, resp.Status, string(body))
	}
	return nil
}
