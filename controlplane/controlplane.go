// Package controlplane starts real Kubernetes control planes on this machine: etcd,
// kube-apiserver and, optionally, kube-controller-manager, from the binaries that
// hack/kubebin.sh builds (found through KUBEBUILDER_ASSETS). Tests use it to stand up
// a hub and several target clusters; `make dev` uses it to run Drover locally.
//
// Each control plane hands out an admin kubeconfig, which tests store in a Secret on
// the hub exactly as a user registers a cluster.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the environment variable that points at the directory holding
// etcd, kube-apiserver and kube-controller-manager.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// Options configure one control plane.
type Options struct {
	// Name identifies the control plane in logs and errors, e.g. "hub" or "target-1".
	Name string
	// CRDDirectoryPaths are installed once the API server is up.
	CRDDirectoryPaths []string
	// ControllerManager also runs kube-controller-manager, which the aggregated
	// ClusterRoles (view, edit, admin), ResourceQuota usage and namespace deletion need.
	ControllerManager bool
	// Controllers is kube-controller-manager's --controllers list; empty means all
	// ("*"). Tests that create bare Node objects, with no kubelet to heartbeat them,
	// add "-node-lifecycle-controller" so that their nodes are not marked unreachable.
	Controllers []string
	// Output receives the controller manager's output; nil discards it.
	Output io.Writer
	// AssetsDir overrides $KUBEBUILDER_ASSETS.
	AssetsDir string
	// BaseDir, when set, holds the control plane's files (certificates, etcd data,
	// kubeconfigs) in BaseDir/<Name>, which must not exist yet, instead of in a new
	// temporary directory. `make dev` uses it so that every process it starts names
	// a directory it owns on its command line, and stale ones can be found after a crash.
	BaseDir string
	// ServerOutput receives etcd's and kube-apiserver's output; nil discards it.
	ServerOutput io.Writer
}

// ControlPlane is one running etcd + kube-apiserver (+ kube-controller-manager).
type ControlPlane struct {
	Name string
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config

	env        *envtest.Environment
	kubeconfig []byte
	dir        string
	assets     string
	output     io.Writer
	// controllers is kube-controller-manager's --controllers list.
	controllers []string

	mu  sync.Mutex
	kcm *exec.Cmd
	// kcmDone is closed once the controller manager process has exited.
	kcmDone chan struct{}
}

// Start brings up a control plane and waits until its API server answers.
func Start(opts Options) (*ControlPlane, error) {
	assets := opts.AssetsDir
	if assets == "" {
		assets = os.Getenv(AssetsEnv)
	}
	if assets == "" {
		return nil, fmt.Errorf("control plane %q: %s is not set; run hack/kubebin.sh (make test does it for you)", opts.Name, AssetsEnv)
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("control plane %q: %s has no %s; run hack/kubebin.sh: %w", opts.Name, assets, b, err)
		}
	}
	cp := &ControlPlane{Name: opts.Name, assets: assets, output: opts.Output, controllers: opts.Controllers}
	if cp.output == nil {
		cp.output = io.Discard
	}
	var err error
	if opts.BaseDir != "" {
		cp.dir = filepath.Join(opts.BaseDir, opts.Name)
		if err := os.MkdirAll(opts.BaseDir, 0o700); err != nil {
			return nil, err
		}
		if err := os.Mkdir(cp.dir, 0o700); err != nil {
			return nil, fmt.Errorf("control plane %q: %w", opts.Name, err)
		}
	} else if cp.dir, err = os.MkdirTemp("", "drover-cp-"+opts.Name+"-"); err != nil {
		return nil, err
	}
	cp.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing: len(opts.CRDDirectoryPaths) > 0,
		// An API server with open watches can take long to drain; past this it is killed.
		ControlPlaneStopTimeout: stopTimeout,
	}
	// Certificates live in a directory we own, so that the API server can be stopped
	// and restarted with the same serving CA, client CA and service-account keys, and
	// existing kubeconfigs keep working.
	certDir := filepath.Join(cp.dir, "apiserver")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		_ = os.RemoveAll(cp.dir)
		return nil, err
	}
	apiServer := cp.env.ControlPlane.GetAPIServer()
	apiServer.CertDir = certDir
	// etcd's data lives there too, so that Stop removes it with everything else.
	etcd := &envtest.Etcd{}
	cp.env.ControlPlane.Etcd = etcd
	etcd.DataDir = filepath.Join(cp.dir, "etcd")
	if opts.ServerOutput != nil {
		apiServer.Out, apiServer.Err = opts.ServerOutput, opts.ServerOutput
		etcd.Out, etcd.Err = opts.ServerOutput, opts.ServerOutput
	}
	cfg, err := cp.env.Start()
	if err != nil {
		// envtest leaves what it started running when a later step (installing
		// CRDs, say) fails: stop it, or the servers outlive the test.
		_ = cp.env.Stop()
		_ = os.RemoveAll(cp.dir)
		return nil, fmt.Errorf("control plane %q: start etcd and kube-apiserver: %w", opts.Name, err)
	}
	cp.Config = cfg
	user, err := cp.env.AddUser(envtest.User{Name: "drover-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("control plane %q: create admin user: %w", opts.Name, err)
	}
	if cp.kubeconfig, err = user.KubeConfig(); err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("control plane %q: render admin kubeconfig: %w", opts.Name, err)
	}
	if opts.ControllerManager {
		if err := cp.startControllerManager(); err != nil {
			_ = cp.Stop()
			return nil, err
		}
	}
	return cp, nil
}

// StartMany starts n control planes in parallel, named prefix-1 ... prefix-n.
func StartMany(n int, prefix string, opts Options) ([]*ControlPlane, error) {
	cps := make([]*ControlPlane, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opts
			o.Name = fmt.Sprintf("%s-%d", prefix, i+1)
			cps[i], errs[i] = Start(o)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, cp := range cps {
			if cp != nil {
				_ = cp.Stop()
			}
		}
		return nil, err
	}
	return cps, nil
}

// Kubeconfig returns an admin kubeconfig for this control plane, as a user would put
// in a Secret to register the cluster.
func (c *ControlPlane) Kubeconfig() []byte { return append([]byte(nil), c.kubeconfig...) }

// Endpoint is the API server's URL.
func (c *ControlPlane) Endpoint() string { return c.Config.Host }

// Dir is a scratch directory that lives as long as the control plane.
func (c *ControlPlane) Dir() string { return c.dir }

// AddUser creates a user with the given groups and returns its kubeconfig.
func (c *ControlPlane) AddUser(name string, groups ...string) ([]byte, error) {
	u, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, err
	}
	return u.KubeConfig()
}

// StopAPIServer stops the API server (and nothing else), so that the cluster looks
// unreachable; RestartAPIServer brings it back on the same address with the same
// certificates.
func (c *ControlPlane) StopAPIServer() error {
	return ignoreKilled(c.env.ControlPlane.APIServer.Stop())
}

// RestartAPIServer starts the API server again after StopAPIServer.
func (c *ControlPlane) RestartAPIServer() error {
	var err error
	// The old process may still be releasing its port for a moment.
	for range 5 {
		if err = c.env.ControlPlane.APIServer.Start(); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("control plane %q: restart kube-apiserver: %w", c.Name, err)
}

// stopTimeout bounds how long a component may take to stop before it is killed.
const stopTimeout = 5 * time.Second

// ignoreKilled drops envtest's report that a process had to be killed after
// stopTimeout: it is gone either way, which is all Stop promises.
func ignoreKilled(err error) error {
	if err == nil {
		return nil
	}
	var kept []error
	for _, e := range flatten(err) {
		if !strings.Contains(e.Error(), "timeout waiting for process") {
			kept = append(kept, e)
		}
	}
	return errors.Join(kept...)
}

func flatten(err error) []error {
	if agg, ok := err.(interface{ Errors() []error }); ok {
		return agg.Errors()
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (c *ControlPlane) startControllerManager() error {
	bin := filepath.Join(c.assets, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("control plane %q: %s has no kube-controller-manager; run hack/kubebin.sh: %w", c.Name, c.assets, err)
	}
	kubeconfig := filepath.Join(c.dir, "kcm.kubeconfig")
	if err := os.WriteFile(kubeconfig, c.kubeconfig, 0o600); err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--controllers=" + controllerList(c.controllers),
		"--concurrent-namespace-syncs=5",
		"--concurrent-resource-quota-syncs=5",
		"--resource-quota-sync-period=10s",
		"--v=0",
	}
	if certDir := c.env.ControlPlane.APIServer.CertDir; certDir != "" {
		args = append(args,
			"--service-account-private-key-file="+filepath.Join(certDir, "sa-signer.key"),
			"--root-ca-file="+filepath.Join(certDir, "apiserver.crt"))
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = c.output
	cmd.Stderr = c.output
	// The controller manager must never outlive the process that started it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("control plane %q: start kube-controller-manager: %w", c.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.kcm, c.kcmDone = cmd, done
	c.mu.Unlock()
	return c.waitForControllerManager(done)
}

func controllerList(cs []string) string {
	if len(cs) == 0 {
		return "*"
	}
	return strings.Join(cs, ",")
}

// waitForControllerManager waits until the clusterrole-aggregation controller has
// filled in the view ClusterRole, the first thing tests rely on.
func (c *ControlPlane) waitForControllerManager(done <-chan struct{}) error {
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		var view rbacv1.ClusterRole
		if err := cl.Get(ctx, client.ObjectKey{Name: "view"}, &view); err == nil && len(view.Rules) > 0 {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("control plane %q: kube-controller-manager exited early", c.Name)
		case <-ctx.Done():
			return fmt.Errorf("control plane %q: kube-controller-manager did not aggregate ClusterRole view within 90s", c.Name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops every process of the control plane and removes its files. It is safe to
// call more than once.
func (c *ControlPlane) Stop() error {
	var errs []error
	c.mu.Lock()
	kcm, done := c.kcm, c.kcmDone
	c.kcm = nil
	c.mu.Unlock()
	if kcm != nil && kcm.Process != nil {
		_ = kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = kcm.Process.Kill()
			<-done
		}
	}
	if c.env != nil {
		if err := ignoreKilled(c.env.Stop()); err != nil {
			errs = append(errs, fmt.Errorf("control plane %q: %w", c.Name, err))
		}
		c.env = nil
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
		c.dir = ""
	}
	return errors.Join(errs...)
}
