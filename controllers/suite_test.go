package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/manager"
	"github.com/drover-io/drover/remote"
)

// The controller tests run a real hub and two real target clusters, and the manager
// in-process against the hub. Targets are registered the way users do it: a
// kubeconfig in a Secret in drover-system.

const namespace = "drover-system"

var (
	hub     *controlplane.ControlPlane
	targets []*controlplane.ControlPlane
	hubc    client.Client
	rc      *remote.Cache
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapcore.Level(zapLevel()))))
	var err error
	hub, err = controlplane.Start(controlplane.Options{
		Name:              "hub",
		CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases")},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = hub.Stop() }()
	targets, err = controlplane.StartMany(2, "target", controlplane.Options{
		ControllerManager: true,
		// The tests' Nodes are bare objects with no kubelet behind them.
		Controllers: []string{"*", "-node-lifecycle-controller"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		for _, t := range targets {
			_ = t.Stop()
		}
	}()

	scheme, err := manager.Scheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hubc, err = client.New(hub.Config, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := hubc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgr, err := ctrl.NewManager(hub.Config, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(namespace),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := testOptions()
	if rc, err = controllers.SetupWithManager(ctx, mgr, opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
	}
	return code
}

// testOptions shorten the timings so that outages and deletions resolve quickly.
func testOptions() controllers.Options {
	o := controllers.DefaultOptions()
	o.Namespace = namespace
	o.AgentImage = "drover:test"
	o.AgentHeartbeatTimeout = 3 * time.Second
	o.DeletionTimeout = 6 * time.Second
	o.RemoteTimeout = 5 * time.Second
	o.Remote.ProbeInterval = 500 * time.Millisecond
	o.Remote.ProbeTimeout = time.Second
	o.Remote.MaxProbeInterval = 2 * time.Second
	return o
}

func zapLevel() int8 {
	if os.Getenv("DROVER_TEST_VERBOSE") != "" {
		return -1
	}
	return 5 // errors only
}

// kubeconfigFor returns target's admin kubeconfig, optionally modified.
func kubeconfigFor(t *testing.T, target *controlplane.ControlPlane, edit func(*clientcmdapi.Config)) []byte {
	t.Helper()
	cfg, err := clientcmd.Load(target.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func clientcmdLoad(b []byte) (*clientcmdapi.Config, error) { return clientcmd.Load(b) }
