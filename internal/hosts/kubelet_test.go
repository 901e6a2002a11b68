package hosts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// TestKubeletJoins runs a control plane in one host (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) and a worker in another (Debian's
// containerd and runc, the CNI bridge plugin, kubelet and kube-proxy). It checks that
// the kubelet registers a Ready Node; that a pod, placed by the scheduler, runs with
// the ServiceAccount token the controller manager and API server give it, gets an
// address from CNI and answers; and that kube-proxy takes a Service's ClusterIP to it.
//
// Simulated, because no registry is reachable: the images. The pause image and the
// pod's image are one static Go binary (./tiny), assembled into OCI archives and
// loaded with `ctr images import`.
func TestKubeletJoins(t *testing.T) {
	RequireRoot(t)
	Require(t, "containerd", "ctr", "runc", "cni", "iptables")
	bin := NodeBinDir(t)
	Tiny(t)
	s := NewForTest(t, 2, Options{Names: []string{"cp-0", "node-0"}})
	cp, node := s.Hosts[0], s.Hosts[1]
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	began := time.Now()
	since := func() time.Duration { return time.Since(began).Round(10 * time.Millisecond) }

	c := &testCluster{cp: cp, bin: bin, pki: newTestPKI(t, cp.IP)}
	c.startAPIServer(t, node.Name)
	startContainerd(t, node)
	t.Logf("%s: containerd up, images imported", since())
	kubelet := c.startWorker(t, node)
	cs := c.client(t)
	eventually(t, ctx, func() error {
		return cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	})
	t.Logf("%s: kube-apiserver ready", since())
	c.startControllers(t)

	eventually(t, ctx, func() error {
		select {
		case <-kubelet.Done():
			t.Fatalf("kubelet exited: %v\n%s", kubelet.Err(), lastLines(kubelet.Output(), 30))
		default:
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status != corev1.ConditionTrue {
					return fmt.Errorf("node %s is not Ready: %s: %s", n.Name, cond.Reason, cond.Message)
				}
				return nil
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", n.Name)
	})
	t.Logf("%s: Node %s Ready", since(), node.Name)
	n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var internalIP string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			internalIP = a.Address
		}
	}
	if internalIP != node.IP.String() || n.Status.NodeInfo.KubeletVersion == "" || !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://") {
		t.Errorf("node %s: InternalIP %q (want %s), kubelet %q, runtime %q", n.Name, internalIP, node.IP,
			n.Status.NodeInfo.KubeletVersion, n.Status.NodeInfo.ContainerRuntimeVersion)
	}

	// A pod that the scheduler places, with the ServiceAccount token that the
	// controller manager (the default ServiceAccount, kube-root-ca.crt) and the API
	// server (TokenRequest) make possible, and a Service in front of it.
	eventually(t, ctx, func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	t.Logf("%s: ServiceAccount default/default made by kube-controller-manager", since())
	labels := map[string]string{"app": "tiny"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tiny", Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "tiny", Image: TinyImage, ImagePullPolicy: corev1.PullNever,
				Args:  []string{"serve", ":8080"},
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			}},
		},
	}
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "tiny", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var podIP string
	eventually(t, ctx, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "tiny", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod tiny is %s on %q, IP %q: %v %v", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		if p.Spec.NodeName != node.Name {
			t.Fatalf("pod tiny was placed on %q", p.Spec.NodeName)
		}
		if len(p.Spec.Volumes) == 0 || p.Spec.Volumes[0].Projected == nil {
			t.Fatalf("pod tiny has no ServiceAccount token volume: %v", p.Spec.Volumes)
		}
		podIP = p.Status.PodIP
		return nil
	})
	t.Logf("%s: pod tiny Running at %s", since(), podIP)

	// The pod answers on its CNI address, from its node, and on the Service's
	// ClusterIP, which only kube-proxy's rules in the node's network lead to it.
	for _, addr := range []string{podIP + "/8080", svc.Spec.ClusterIP + "/80"} {
		eventually(t, ctx, func() error {
			out, err := node.Run(ctx, "bash", "-c", "exec 3<>/dev/tcp/"+addr+" && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3")
			if err != nil {
				return err
			}
			if !strings.Contains(string(out), "tiny on tiny") {
				return fmt.Errorf("%s answered %q", addr, out)
			}
			return nil
		})
	}
	t.Logf("%s: pod tiny answers on %s and behind Service tiny on %s", since(), podIP, svc.Spec.ClusterIP)
	if testing.Verbose() {
		p, _ := cs.CoreV1().Pods("default").Get(ctx, "tiny", metav1.GetOptions{})
		t.Logf("node %s: %+v\npod: %+v\nkubelet:\n%s", n.Name, n.Status.NodeInfo, p.Status.ContainerStatuses, lastLines(kubelet.Output(), 15))
	}
	// Its containers are in the host's cgroup, under the kubelet's kubepods.
	out, err := node.Run(ctx, "sh", "-c", "cat /sys/fs/cgroup/pids"+node.Cgroup()+"/kubepods/besteffort/pod*/*/cgroup.procs")
	if err != nil || len(strings.Fields(string(out))) == 0 {
		t.Errorf("no pod processes under %s/kubepods: %v", node.Cgroup(), err)
	}
}

// The cluster in TestKubeletJoins. Every component authenticates with a static
// token, as the user that Kubernetes' bootstrap RBAC policy grants its rights to.
const (
	adminToken        = "drover-hosts-admin"
	containerdAddress = "/run/containerd/containerd.sock"
)

type testCluster struct {
	cp  *Host
	bin string
	pki testPKI
}

// kubeconfig reaches the API server on the control-plane host with token.
func (c *testCluster) kubeconfig(token string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: hosts
  cluster: {server: "https://%s:6443", certificate-authority: /etc/kubernetes/pki/ca.crt}
users:
- name: user
  user: {token: %s}
contexts:
- name: hosts
  context: {cluster: hosts, user: user}
current-context: hosts
`, c.cp.IP, token))
}

func (c *testCluster) client(t *testing.T) *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(&rest.Config{
		Host:            "https://" + net.JoinHostPort(c.cp.IP.String(), "6443"),
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.caCert},
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// startAPIServer starts etcd and kube-apiserver on the control-plane host, which
// knows the kubelet of node by its token.
func (c *testCluster) startAPIServer(t *testing.T, node string) {
	cp, bin, pki := c.cp, c.bin, c.pki
	tokens := fmt.Sprintf(`%s,admin,admin,system:masters
drover-hosts-node,system:node:%s,node,system:nodes
drover-hosts-kcm,system:kube-controller-manager,kcm
drover-hosts-scheduler,system:kube-scheduler,scheduler
drover-hosts-proxy,system:kube-proxy,proxy
`, adminToken, node)
	files := map[string][]byte{
		"/etc/kubernetes/pki/ca.crt":              pki.caCert,
		"/etc/kubernetes/pki/apiserver.crt":       pki.serverCert,
		"/etc/kubernetes/pki/apiserver.key":       pki.serverKey,
		"/etc/kubernetes/pki/sa.key":              pki.saKey,
		"/etc/kubernetes/pki/sa.pub":              pki.saPub,
		"/etc/kubernetes/tokens.csv":              []byte(tokens),
		"/etc/kubernetes/controller-manager.conf": c.kubeconfig("drover-hosts-kcm"),
		"/etc/kubernetes/scheduler.conf":          c.kubeconfig("drover-hosts-scheduler"),
	}
	for p, b := range files {
		if err := cp.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Start(filepath.Join(bin, "etcd"), "--data-dir", "/var/lib/etcd",
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--log-level", "warn"); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Start(filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", cp.IP.String(), "--advertise-address", cp.IP.String(), "--secure-port", "6443",
		"--tls-cert-file", "/etc/kubernetes/pki/apiserver.crt", "--tls-private-key-file", "/etc/kubernetes/pki/apiserver.key",
		"--client-ca-file", "/etc/kubernetes/pki/ca.crt",
		"--token-auth-file", "/etc/kubernetes/tokens.csv",
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", "/etc/kubernetes/pki/sa.pub",
		"--service-account-signing-key-file", "/etc/kubernetes/pki/sa.key",
		"--service-cluster-ip-range", "10.215.0.0/24",
		"--kubelet-preferred-address-types", "InternalIP",
	); err != nil {
		t.Fatal(err)
	}
}

// startControllers starts kube-controller-manager and kube-scheduler. They exit if
// the API server refuses them, as it does until its bootstrap RBAC policy is in:
// start them once it is ready.
func (c *testCluster) startControllers(t *testing.T) {
	cp, bin := c.cp, c.bin
	if _, err := cp.Start(filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig", "/etc/kubernetes/controller-manager.conf",
		"--authentication-kubeconfig", "/etc/kubernetes/controller-manager.conf",
		"--authorization-kubeconfig", "/etc/kubernetes/controller-manager.conf",
		"--root-ca-file", "/etc/kubernetes/pki/ca.crt",
		"--service-account-private-key-file", "/etc/kubernetes/pki/sa.key",
		"--service-cluster-ip-range", "10.215.0.0/24",
		"--use-service-account-credentials", // each controller as its own ServiceAccount, as kubeadm runs it
		"--leader-elect=false", "--bind-address", "127.0.0.1",
	); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Start(filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig", "/etc/kubernetes/scheduler.conf",
		"--authentication-kubeconfig", "/etc/kubernetes/scheduler.conf",
		"--authorization-kubeconfig", "/etc/kubernetes/scheduler.conf",
		"--leader-elect=false", "--bind-address", "127.0.0.1",
	); err != nil {
		t.Fatal(err)
	}
}

// startContainerd starts containerd on node and imports the images, or skips t if
// containerd cannot run on this machine.
func startContainerd(t *testing.T, node *Host) {
	// The worker's container runtime. Processes here lack CAP_SYS_RESOURCE and may
	// not set a negative OOM score adjustment: restrict_oom_score_adj keeps
	// containerd from trying.
	containerdConfig := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`, containerdAddress, PauseImage)
	cni := `{"cniVersion": "1.0.0", "name": "drover-hosts", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.214.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
]}
`
	if err := node.WriteFile("/etc/containerd/config.toml", []byte(containerdConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := node.WriteFile("/etc/cni/net.d/10-drover-hosts.conflist", []byte(cni), 0o644); err != nil {
		t.Fatal(err)
	}
	containerd, err := node.Start("containerd", "--config", "/etc/containerd/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(node.Path(containerdAddress)); err == nil {
			break
		}
		select {
		case <-containerd.Done():
			// containerd exiting by itself means this machine cannot run it; killed
			// by a signal, it is the harness that failed.
			var exit *exec.ExitError
			if errors.As(containerd.Err(), &exit) && exit.ExitCode() > 0 {
				t.Skipf("containerd cannot start here: %v\n%s", containerd.Err(), lastLines(containerd.Output(), 20))
			}
			t.Fatalf("containerd: %v\n%s", containerd.Err(), lastLines(containerd.Output(), 20))
		default:
		}
		if time.Since(start) > 30*time.Second {
			t.Skipf("containerd did not listen on %s within 30s here:\n%s", containerdAddress, lastLines(containerd.Output(), 20))
		}
	}
	ImportImages(t, node, containerdAddress)
}

// startWorker starts kubelet and kube-proxy on node.
func (c *testCluster) startWorker(t *testing.T, node *Host) *Process {
	bin := c.bin
	// The kubelet, in the host's cgroup, on cgroup v1 as this machine has it.
	kubeletConfig := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
address: %s
readOnlyPort: 0
resolvConf: ""
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization: {mode: Webhook}
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, node.Cgroup(), containerdAddress, node.IP)
	// kube-proxy in a network namespace may not size the machine's conntrack table:
	// the zeros leave the kernel's settings alone, as kind does.
	proxyConfig := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: /etc/kubernetes/proxy.conf}
hostnameOverride: %s
mode: iptables
clusterCIDR: 10.214.0.0/24
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, node.Name)
	for p, b := range map[string][]byte{
		"/etc/kubernetes/kubelet.conf": c.kubeconfig("drover-hosts-node"),
		"/etc/kubernetes/kubelet.yaml": []byte(kubeletConfig),
		"/etc/kubernetes/proxy.conf":   c.kubeconfig("drover-hosts-proxy"),
		"/etc/kubernetes/proxy.yaml":   []byte(proxyConfig),
		"/etc/kubernetes/pki/ca.crt":   c.pki.caCert,
	} {
		if err := node.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubelet, err := node.Start(filepath.Join(bin, "kubelet"), "--config", "/etc/kubernetes/kubelet.yaml",
		"--kubeconfig", "/etc/kubernetes/kubelet.conf", "--node-ip", node.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Start(filepath.Join(bin, "kube-proxy"), "--config", "/etc/kubernetes/proxy.yaml"); err != nil {
		t.Fatal(err)
	}

	return kubelet
}

type testPKI struct {
	caCert, serverCert, serverKey, saKey, saPub []byte
}

// newTestPKI makes a CA, a serving certificate for the API server at ip, and a
// service-account signing key.
func newTestPKI(t *testing.T, ip netip.Addr) testPKI {
	t.Helper()
	key := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	now := time.Now()
	caKey, _ := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "drover-hosts-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, srvKeyPEM := key()
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{ip.AsSlice(), net.ParseIP("10.215.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saKeyPEM := key()
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{
		caCert:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		serverCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		serverKey:  srvKeyPEM,
		saKey:      saKeyPEM,
		saPub:      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
	}
}
