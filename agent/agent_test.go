package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/drover-io/drover/agent"
	"github.com/drover-io/drover/controlplane"
)

func TestMainRequiresClusterName(t *testing.T) {
	g := NewWithT(t)
	// No kubeconfig to read Secret drover-agent-hub through either.
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, args := range [][]string{nil, {"--namespace", "elsewhere"}, {"--cluster-name", ""}} {
		err := agent.Main(context.Background(), args)
		g.Expect(err).To(MatchError(ContainSubstring("--cluster-name is required unless Secret")), "args %q", args)
	}
}

// TestMainReadsHubSecret: with no hub flags, the agent learns its cluster's name from
// Secret drover-agent-hub, read through its kubeconfig, as the Deployment does inside
// the cluster.
func TestMainReadsHubSecret(t *testing.T) {
	g := NewWithT(t)
	cp, err := controlplane.Start(controlplane.Options{Name: "agent-hub-secret"})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { g.Expect(cp.Stop()).To(Succeed()) }()
	cs, err := kubernetes.NewForConfig(cp.Config)
	g.Expect(err).NotTo(HaveOccurred())
	kubeconfig := filepath.Join(t.TempDir(), "target.kubeconfig")
	g.Expect(os.WriteFile(kubeconfig, cp.Kubeconfig(), 0o600)).To(Succeed())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agent.DefaultNamespace}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())

	// Without the Secret: a clear error.
	err = agent.Main(ctx, []string{"--kubeconfig=" + kubeconfig})
	g.Expect(err).To(MatchError(ContainSubstring("Secret drover-system/drover-agent-hub does not exist")))

	_, err = cs.CoreV1().Secrets(agent.DefaultNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: agent.HubSecretName},
		StringData: map[string]string{"cluster": "edge-7", "url": "https://hub.example.com", "token": "t"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	agentCtx, stopAgent := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agent.Main(agentCtx, []string{"--kubeconfig=" + kubeconfig, "--zap-log-level=error"}) }()
	g.Eventually(func(g Gomega) {
		l, err := cs.CoordinationV1().Leases(agent.DefaultNamespace).Get(ctx, agent.DefaultLeaseName, metav1.GetOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(l.Spec.HolderIdentity).To(HaveValue(Equal(agent.HolderIdentityPrefix + "edge-7")))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	stopAgent()
	g.Expect(<-done).To(Succeed())
}

func TestRunRejectsInvalidOptions(t *testing.T) {
	valid := agent.Options{
		ClusterName:   "c1",
		Namespace:     agent.DefaultNamespace,
		LeaseName:     agent.DefaultLeaseName,
		RenewInterval: agent.DefaultRenewInterval,
		LeaseDuration: agent.DefaultLeaseDuration,
	}
	tests := []struct {
		name   string
		change func(*agent.Options)
		want   string
	}{
		{"no cluster name", func(o *agent.Options) { o.ClusterName = "" }, "--cluster-name is required"},
		{"no namespace", func(o *agent.Options) { o.Namespace = "" }, "--namespace must not be empty"},
		{"no lease name", func(o *agent.Options) { o.LeaseName = "" }, "--lease-name must not be empty"},
		{"zero renew interval", func(o *agent.Options) { o.RenewInterval = 0 }, "--renew-interval must be positive"},
		{"lease shorter than interval", func(o *agent.Options) { o.LeaseDuration = o.RenewInterval }, "--lease-duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			o := valid
			tt.change(&o)
			// The options are checked before the configuration is used.
			err := agent.Run(context.Background(), &rest.Config{Host: "https://127.0.0.1:1"}, o)
			g.Expect(err).To(MatchError(ContainSubstring(tt.want)))
		})
	}
}

// TestAgentRenewsLease runs the agent against a real API server: it waits for the
// hub to create its namespace, then creates its Lease and keeps renewing it.
func TestAgentRenewsLease(t *testing.T) {
	g := NewWithT(t)
	cp, err := controlplane.Start(controlplane.Options{Name: "agent"})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { g.Expect(cp.Stop()).To(Succeed()) }()
	cs, err := kubernetes.NewForConfig(cp.Config)
	g.Expect(err).NotTo(HaveOccurred())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agentCtx, stopAgent := context.WithCancel(ctrl.LoggerInto(ctx, zap.New(zap.WriteTo(t.Output()), zap.UseDevMode(true))))
	defer stopAgent()
	o := agent.Options{
		ClusterName:   "target-1",
		Namespace:     agent.DefaultNamespace,
		LeaseName:     agent.DefaultLeaseName,
		RenewInterval: 200 * time.Millisecond,
		LeaseDuration: 3 * time.Second,
		Version:       "v1.2.3-test",
		// As the Deployment the hub installs runs it.
		MetricsBindAddress:     freeAddr(t),
		HealthProbeBindAddress: freeAddr(t),
	}
	done := make(chan error, 1)
	go func() { done <- agent.Run(agentCtx, cp.Config, o) }()
	get := func(g Gomega, addr, path string) (int, string) {
		resp, err := http.Get("http://" + addr + path) //nolint:noctx // a test against a local endpoint
		g.Expect(err).NotTo(HaveOccurred())
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		g.Expect(err).NotTo(HaveOccurred())
		return resp.StatusCode, string(body)
	}
	// Live at once; not ready while the Lease cannot be held.
	g.Eventually(func(g Gomega) {
		code, _ := get(g, o.HealthProbeBindAddress, "/healthz")
		g.Expect(code).To(Equal(http.StatusOK))
		code, body := get(g, o.HealthProbeBindAddress, "/readyz")
		g.Expect(code).To(Equal(http.StatusServiceUnavailable), body)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// Without its namespace the agent waits, and does not create the namespace itself.
	g.Consistently(func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Second, 100*time.Millisecond).Should(BeTrue(), "the agent must not create its namespace")
	g.Expect(done).NotTo(Receive(), "the agent must keep running while its namespace is missing")

	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())

	getLease := func() (*coordinationv1.Lease, error) {
		return cs.CoordinationV1().Leases(o.Namespace).Get(ctx, o.LeaseName, metav1.GetOptions{})
	}
	var first *coordinationv1.Lease
	g.Eventually(func(g Gomega) {
		lease, err := getLease()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(lease.Annotations).To(HaveKeyWithValue(agent.LeaseAnnotationVersion, "v1.2.3-test"))
		g.Expect(lease.Annotations).To(HaveKeyWithValue(agent.LeaseAnnotationClusterName, "target-1"))
		g.Expect(lease.Labels).To(HaveKeyWithValue(agent.LabelManagedBy, agent.LabelManagedByValue))
		g.Expect(lease.Labels).To(HaveKeyWithValue(agent.LabelComponent, agent.LabelComponentValue))
		g.Expect(lease.Spec.HolderIdentity).To(HaveValue(Equal("drover-agent/target-1")))
		g.Expect(lease.Spec.LeaseDurationSeconds).To(HaveValue(BeEquivalentTo(3)))
		g.Expect(lease.Spec.RenewTime).NotTo(BeNil())
		first = lease
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	// Ready once the Lease is held, and the metrics say so.
	g.Eventually(func(g Gomega) {
		code, body := get(g, o.HealthProbeBindAddress, "/readyz")
		g.Expect(code).To(Equal(http.StatusOK), body)
		_, metrics := get(g, o.MetricsBindAddress, "/metrics")
		g.Expect(metrics).To(ContainSubstring(`drover_agent_info{cluster="target-1",version="v1.2.3-test"} 1`))
		g.Expect(metrics).To(MatchRegexp(`drover_agent_lease_renewals_total\{result="success"\} [1-9]`))
		g.Expect(metrics).To(ContainSubstring("drover_agent_last_renewal_timestamp_seconds"))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// renewTime advances with every renewal.
	g.Eventually(func(g Gomega) {
		lease, err := getLease()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(lease.Spec.RenewTime).NotTo(BeNil())
		g.Expect(lease.Spec.RenewTime.After(first.Spec.RenewTime.Time)).To(BeTrue(),
			"renewTime %s did not advance past %s", lease.Spec.RenewTime, first.Spec.RenewTime)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// Annotations and labels others put on the Lease survive renewals.
	var lease *coordinationv1.Lease
	g.Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if lease, err = getLease(); err != nil {
			return err
		}
		lease.Annotations["example.com/note"] = "kept"
		lease, err = cs.CoordinationV1().Leases(o.Namespace).Update(ctx, lease, metav1.UpdateOptions{})
		return err
	})).To(Succeed())
	renewed := lease.Spec.RenewTime.Time
	g.Eventually(func(g Gomega) {
		lease, err := getLease()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(lease.Spec.RenewTime.After(renewed)).To(BeTrue())
		g.Expect(lease.Annotations).To(HaveKeyWithValue("example.com/note", "kept"))
		g.Expect(lease.Annotations).To(HaveKeyWithValue(agent.LeaseAnnotationVersion, "v1.2.3-test"))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// A deleted Lease is created again.
	g.Expect(cs.CoordinationV1().Leases(o.Namespace).Delete(ctx, o.LeaseName, metav1.DeleteOptions{})).To(Succeed())
	g.Eventually(func() error { _, err := getLease(); return err }, 10*time.Second, 100*time.Millisecond).Should(Succeed())

	// The agent stops cleanly once its context is done.
	stopAgent()
	g.Eventually(done, 5*time.Second).Should(Receive(BeNil()))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}
