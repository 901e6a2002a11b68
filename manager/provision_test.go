package manager

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/internal/hosts"
	"github.com/drover-io/drover/planner"
)

// provisionVersion is the Kubernetes version the artifact source of the test holds.
const provisionVersion = "v1.36.3"

// TestProvision builds a real cluster, as a user would: a ManagedCluster with
// spec.provisioning on a real hub, and seven hosts (network, mount and UTS namespaces
// of this machine, package internal/hosts) that each run the registration command
// from its status — the install script fetched from the hub server, which downloads
// drover and starts `drover node-agent` — with their roles: three etcd, two control
// planes, two workers. The hub plans them tier by tier, the node agents download the
// binaries from the hub's artifact source and apply their plans, and the cluster
// becomes a ManagedCluster like any other.
//
// It checks that etcd has three started members, that both API servers answer and
// share the cluster, that both workers' Nodes are Ready and a pod runs on one, that
// the ManagedCluster is Ready with an AccessBinding allowed in the cluster, and that
// deleting the ManagedCluster stops everything on the hosts and releases the nodes.
//
// Simulated: the hosts (namespaces, not machines) and the images (built here from a
// static binary, since no registry is reachable). Everything else is real.
func TestProvision(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	if testing.Short() {
		t.Skip("builds a 7-node cluster")
	}
	hosts.RequireRoot(t)
	hosts.Require(t, "containerd", "ctr", "runc", "cni", "iptables", "sshd")
	if _, err := exec.LookPath("curl"); err != nil {
		// The install script fetches drover with curl, as on a real host.
		if out, err := exec.Command("apt-get", "install", "-y", "curl").CombinedOutput(); err != nil {
			t.Skipf("curl is missing and cannot be installed: %v\n%s", err, out)
		}
	}
	g := NewWithT(t)
	ctx := context.Background()
	start := time.Now()
	names := []string{"etcd-0", "etcd-1", "etcd-2", "cp-0", "cp-1", "worker-0", "worker-1"}
	roles := map[string]string{"etcd": "etcd", "cp": "control-plane", "worker": "worker"}
	set := hosts.NewForTest(t, len(names), hosts.Options{Names: names})
	artifacts := hosts.ArtifactSource(t, provisionVersion, planner.PauseImage)
	drover := hosts.BuildDrover(t)
	t.Logf("%5.1fs hosts, artifact source and drover ready", time.Since(start).Seconds())

	// The hub, its server on the bridge's address so that the hosts reach it.
	hub, _, hc := startBareHub(t, "provision-hub", DefaultNamespace)
	hubAddr := set.FreeGatewayAddr(t)
	e := &hubEnv{cp: hub, c: hc}
	e.startManager(t, hubAddr, "--artifacts-dir="+artifacts, "--node-agent-binary="+drover, "--zap-log-level=info")

	// worker-1 is reached over SSH: Drover installs its node agent (sshd runs in the
	// host, root's key in a Secret, the host key recorded on first use).
	sshHost := set.Hosts[6]
	clientKey := hosts.StartSSHD(t, sshHost).ClientKey
	g.Expect(hc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: DefaultNamespace, Name: "edge-1-ssh"},
		Data: map[string][]byte{"value": clientKey}})).To(Succeed())
	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}, Spec: v1alpha1.ManagedClusterSpec{
		Provisioning: &v1alpha1.ProvisioningSpec{KubernetesVersion: provisionVersion, SSHHosts: []v1alpha1.SSHHost{{
			Address: sshHost.IP.String(), User: "root", SSHKeySecretRef: v1alpha1.SecretKeyReference{Name: "edge-1-ssh"},
			Roles: []v1alpha1.NodeRole{v1alpha1.NodeRoleWorker}, NodeAgentArgs: []string{"--kubelet-cgroup-root=" + sshHost.Cgroup()}}}}}}
	g.Expect(hc.Create(ctx, mc)).To(Succeed())
	applied := time.Now()
	var command string
	g.Eventually(func(g Gomega) {
		g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		g.Expect(mc.Status.Provisioning).NotTo(BeNil())
		command = mc.Status.Provisioning.RegistrationCommand
		g.Expect(command).To(ContainSubstring("curl -fsSL --cacert drover-hub-ca.crt https://" + hubAddr + "/v1/nodes/"))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(mc.Status.Provisioning.Waiting).To(ContainSubstring("hosts to register"))

	// Each host runs the registration command, with its roles. There is no systemd in
	// the hosts, so the script runs the node agent in the foreground.
	install := strings.Replace(command, "--roles etcd,control-plane,worker", "", 1)
	agents := map[string]*hosts.Process{}
	for _, h := range set.Hosts[:6] {
		role := roles[strings.SplitN(h.Name, "-", 2)[0]]
		cmd := h.Command(ctx, "sh", "-c", install+" --roles "+role+" --kubelet-cgroup-root "+h.Cgroup())
		cmd.Dir = t.TempDir() // where the command writes drover-hub-ca.crt
		p, err := h.StartCommand(cmd)
		g.Expect(err).NotTo(HaveOccurred())
		agents[h.Name] = p
	}
	tiers := map[string]time.Duration{}
	var last string
	g.Eventually(func(g Gomega) {
		for name, p := range agents {
			select {
			case <-p.Done():
				t.Fatalf("node agent on %s exited: %v\n%s", name, p.Err(), p.Output())
			default:
			}
		}
		g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		p := mc.Status.Provisioning
		if _, ok := tiers[p.Tier]; !ok && p.Tier != "" {
			tiers[p.Tier] = time.Since(applied)
			t.Logf("%5.1fs after apply: tier %s", time.Since(applied).Seconds(), p.Tier)
		}
		if p.Waiting != last {
			last = p.Waiting
			t.Logf("%5.1fs after apply: waiting for %s", time.Since(applied).Seconds(), p.Waiting)
		}
		g.Expect(p.Tier).To(Equal(string(planner.TierReady)), "waiting for %s", p.Waiting)
	}, 6*time.Minute, time.Second).Should(Succeed(), func() string {
		installLog, _ := os.ReadFile(sshHost.Path("/var/log/drover-node-agent-install.log"))
		return nodeReport(ctx, hc) + "\nSSH host's install log:\n" + string(installLog)
	})
	t.Logf("provisioned 3 etcd + 2 control-plane + 2 worker nodes in %s after kubectl apply", time.Since(applied).Round(100*time.Millisecond))
	g.Expect(mc.Status.Provisioning.SSHHostKeys).To(HaveLen(1), "the SSH host's key is recorded; events: %v; status: %+v",
		eventReasons(g, hc, "edge-1"), mc.Status.Provisioning)
	g.Expect(mc.Status.Provisioning.SSHHostKeys[0].Key).To(HavePrefix("ssh-ed25519 "))

	// The hub's kubeconfig for the cluster, as the ManagedCluster controller uses it.
	var kc corev1.Secret
	g.Expect(hc.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: controllers.ProvisionedKubeconfigSecretName("edge-1")}, &kc)).To(Succeed())
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc.Data["value"])
	g.Expect(err).NotTo(HaveOccurred())
	cs, err := kubernetes.NewForConfig(cfg)
	g.Expect(err).NotTo(HaveOccurred())

	t.Run("etcd has three started members", func(t *testing.T) {
		out, err := set.Hosts[0].Run(ctx, filepath.Join(hosts.NodeBinDir(t), "etcdctl"),
			"--endpoints=https://"+set.Hosts[0].IP.String()+":2379", "--cacert=/etc/drover/pki/etcd/ca.crt",
			"--cert=/etc/drover/pki/etcd/healthcheck-client.crt", "--key=/etc/drover/pki/etcd/healthcheck-client.key", "member", "list")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if n := strings.Count(string(out), ", started, "); n != 3 {
			t.Fatalf("%d started members:\n%s", n, out)
		}
	})
	t.Run("both API servers answer", func(t *testing.T) {
		for _, h := range set.Hosts[3:5] {
			c := *cfg
			c.Host = "https://" + net.JoinHostPort(h.IP.String(), "6443")
			v, err := kubernetes.NewForConfigOrDie(&c).Discovery().ServerVersion()
			if err != nil || v.GitVersion != provisionVersion {
				t.Fatalf("%s: %v %v", c.Host, v, err)
			}
		}
	})
	t.Run("workers are Ready and run a pod", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func(g Gomega) {
			for _, h := range set.Hosts[5:] {
				n, err := cs.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
				g.Expect(err).NotTo(HaveOccurred())
				ready := false
				for _, c := range n.Status.Conditions {
					ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
				}
				g.Expect(ready).To(BeTrue(), "node %s: %v", h.Name, n.Status.Conditions)
			}
		}, 2*time.Minute, time.Second).Should(Succeed())
		g.Eventually(func() error {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		}, time.Minute, time.Second).Should(Succeed())
		_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "tiny", Namespace: "default"},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{
				Name: "tiny", Image: hosts.TinyImage, ImagePullPolicy: corev1.PullNever, Args: []string{"serve", ":8080"}}}},
		}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Eventually(func(g Gomega) {
			p, err := cs.CoreV1().Pods("default").Get(ctx, "tiny", metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning), "%v %v", p.Status.Conditions, p.Status.ContainerStatuses)
			g.Expect(p.Spec.NodeName).To(HavePrefix("worker-"))
		}, 2*time.Minute, time.Second).Should(Succeed())
	})
	t.Run("the ManagedCluster is Ready and an AccessBinding is allowed", func(t *testing.T) {
		g := NewWithT(t)
		// The agent, run outside the cluster as the tests do: the image is not
		// there to pull.
		kubeconfig := filepath.Join(t.TempDir(), "edge-1.kubeconfig")
		g.Expect(os.WriteFile(kubeconfig, kc.Data["value"], 0o600)).To(Succeed())
		runUntilStopped(t, "agent", func(ctx context.Context) error {
			return agent.Main(ctx, []string{"--kubeconfig=" + kubeconfig, "--cluster-name=edge-1", "--zap-log-level=error"})
		})
		g.Eventually(func(g Gomega) {
			g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			c := findCond(mc.Status.Conditions, v1alpha1.ReadyCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue), c.Message)
			g.Expect(mc.Status.NodesReady).To(Equal("2/2"))
		}, 2*time.Minute, time.Second).Should(Succeed())
		g.Expect(hc.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "edge-viewers"}, Spec: v1alpha1.AccessBindingSpec{
			Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "vera"}},
			RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
			Clusters: &v1alpha1.ClusterSelection{Names: []string{"edge-1"}}}})).To(Succeed())
		g.Eventually(func(g Gomega) {
			sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: "vera", ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: "default"}}}, metav1.CreateOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(sar.Status.Allowed).To(BeTrue())
		}, time.Minute, 200*time.Millisecond).Should(Succeed())
	})
	t.Run("deleting the ManagedCluster tears the nodes down", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(hc.Delete(ctx, mc)).To(Succeed())
		g.Eventually(func() bool {
			err := hc.Get(ctx, client.ObjectKeyFromObject(mc), &v1alpha1.ManagedCluster{})
			return err != nil
		}, 3*time.Minute, time.Second).Should(BeTrue(), func() string { return nodeReport(ctx, hc) })
		var list v1alpha1.ClusterNodeList
		g.Expect(hc.List(ctx, &list)).To(Succeed())
		g.Expect(list.Items).To(BeEmpty())
		// Every node agent ends (its credential is revoked), and what it ran with it.
		for name, p := range agents {
			select {
			case <-p.Done():
			case <-time.After(time.Minute):
				t.Fatalf("node agent on %s still runs", name)
			}
		}
		// What the plans wrote is gone, directories included.
		for _, h := range set.Hosts {
			if _, err := os.Stat(h.Path("/etc/drover")); err == nil {
				out, _ := exec.Command("find", h.Path("/etc/drover")).CombinedOutput()
				t.Errorf("host %s still holds /etc/drover:\n%s", h.Name, out)
			}
		}
	})
}

// nodeReport says what every ClusterNode reports, for a failure.
func nodeReport(ctx context.Context, c client.Client) string {
	var list v1alpha1.ClusterNodeList
	if err := c.List(ctx, &list); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, n := range list.Items {
		fmt.Fprintf(&b, "%s: %s", n.Name, n.Status.State)
		if f := n.Status.Failure; f != nil {
			fmt.Fprintf(&b, ", %s failed (attempt %d): %s", f.Step, f.Attempts, f.Message)
		}
		for _, p := range n.Status.Probes {
			if !p.Healthy {
				fmt.Fprintf(&b, ", probe %s: %s", p.Name, p.Message)
			}
		}
		for _, p := range n.Status.Processes {
			if !p.Running || p.Restarts > 0 {
				fmt.Fprintf(&b, ", process %s running=%v restarts=%d (%s)", p.Name, p.Running, p.Restarts, p.LastExit)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
