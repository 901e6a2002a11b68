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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// TestKubeletJoins runs a control plane (etcd and kube-apiserver) in one host and a
// worker in another: Debian's containerd and runc, the CNI bridge plugin, and a real
// kubelet. It checks that the kubelet registers a Ready Node, and that a pod bound to
// it runs, gets an address from CNI and answers over the network.
//
// Simulated, because no registry is reachable: the images. The pause image and the
// pod's image are one static Go binary (./tiny), assembled into OCI archives and
// loaded with `ctr images import`. Not run, to save time on 2 cores:
// kube-controller-manager and kube-scheduler (the pod is bound to the node by
// spec.nodeName; the namespace's default ServiceAccount is created by the test).
func TestKubeletJoins(t *testing.T) {
	RequireRoot(t)
	Require(t, "containerd", "ctr", "runc", "cni", "iptables")
	bin := NodeBinDir(t)
	Tiny(t)
	s := NewForTest(t, 2, Options{Names: []string{"cp-0", "node-0"}})
	cp, node := s.Hosts[0], s.Hosts[1]
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()

	// The control plane.
	pki := newTestPKI(t, cp.IP)
	const adminToken, nodeToken = "drover-hosts-admin-token", "drover-hosts-node-token"
	files := map[string][]byte{
		"/etc/kubernetes/pki/ca.crt":        pki.caCert,
		"/etc/kubernetes/pki/apiserver.crt": pki.serverCert,
		"/etc/kubernetes/pki/apiserver.key": pki.serverKey,
		"/etc/kubernetes/pki/sa.key":        pki.saKey,
		"/etc/kubernetes/pki/sa.pub":        pki.saPub,
		"/etc/kubernetes/tokens.csv": []byte(fmt.Sprintf("%s,admin,admin,system:masters\n%s,system:node:%s,node-%s,system:nodes\n",
			adminToken, nodeToken, node.Name, node.Name)),
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

	// The worker's container runtime. Processes here lack CAP_SYS_RESOURCE and may
	// not set a negative OOM score adjustment: restrict_oom_score_adj keeps
	// containerd from trying.
	const sock = "/run/containerd/containerd.sock"
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
`, sock, PauseImage)
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
		if _, err := os.Stat(node.Path(sock)); err == nil {
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
			t.Skipf("containerd did not listen on %s within 30s here:\n%s", sock, lastLines(containerd.Output(), 20))
		}
	}
	ImportImages(t, node, sock)

	// The kubelet, in the host's cgroup, on cgroup v1 as this machine has it.
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: hosts
  cluster: {server: "https://%s:6443", certificate-authority: /etc/kubernetes/pki/ca.crt}
users:
- name: kubelet
  user: {token: %s}
contexts:
- name: hosts
  context: {cluster: hosts, user: kubelet}
current-context: hosts
`, cp.IP, nodeToken)
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
`, node.Cgroup(), sock, node.IP)
	for p, b := range map[string]string{
		"/etc/kubernetes/kubelet.conf": kubeconfig,
		"/etc/kubernetes/kubelet.yaml": kubeletConfig,
		"/etc/kubernetes/pki/ca.crt":   string(pki.caCert),
	} {
		if err := node.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubelet, err := node.Start(filepath.Join(bin, "kubelet"), "--config", "/etc/kubernetes/kubelet.yaml",
		"--kubeconfig", "/etc/kubernetes/kubelet.conf", "--node-ip", node.IP.String())
	if err != nil {
		t.Fatal(err)
	}

	cfg := &rest.Config{
		Host:            "https://" + net.JoinHostPort(cp.IP.String(), "6443"),
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: pki.caCert},
		Timeout:         10 * time.Second,
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
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
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status != corev1.ConditionTrue {
					return fmt.Errorf("node %s is not Ready: %s: %s", n.Name, c.Reason, c.Message)
				}
				return nil
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", n.Name)
	})
	t.Logf("Node %s Ready %s after the kubelet started", node.Name, time.Since(start).Round(time.Millisecond))
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

	// A pod on that node, which the ServiceAccount admission plugin admits once the
	// namespace has its default ServiceAccount.
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tiny", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      node.Name,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "tiny", Image: TinyImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"serve", ":8080"},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var podIP string
	eventually(t, ctx, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "tiny", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod tiny is %s, IP %q: %v", p.Status.Phase, p.Status.PodIP, p.Status.ContainerStatuses)
		}
		podIP = p.Status.PodIP
		return nil
	})
	t.Logf("pod tiny Running at %s %s after it was created", podIP, time.Since(start).Round(time.Millisecond))

	// The pod answers on its CNI address, from its node.
	eventually(t, ctx, func() error {
		out, err := node.Run(ctx, "bash", "-c", "exec 3<>/dev/tcp/"+podIP+"/8080 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "tiny on tiny") {
			return fmt.Errorf("the pod answered %q", out)
		}
		return nil
	})
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
