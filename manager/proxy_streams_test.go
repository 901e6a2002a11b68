package manager

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	upgradeproxy "k8s.io/apimachinery/pkg/util/proxy"
	translator "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	crifwd "k8s.io/cri-streaming/pkg/streaming/portforward"
	criexec "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/agent"
	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
)

// TestProxyStreams proves exec, attach, port-forward (each over SPDY and over
// websockets), logs -f, and plain kubectl's exec, cp and port-forward end to end
// through the authentication proxy, to a cluster dialled directly and to one behind
// the agent's tunnel. There is no kubelet yet: each target is a
// real API server behind a front that serves the pod subresources the way
// kube-apiserver does (websocket exec translated to SPDY, port-forward websockets
// tunnelled) towards a kubelet stand-in built from the CRI streaming server.
func TestProxyStreams(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	hub := startHub(t, "streams-hub")
	cps, err := controlplane.StartMany(2, "streams-target", controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, cp := range cps {
			_ = cp.Stop()
		}
	})
	direct, tunnelled := newStreamingFront(t, cps[0]), newStreamingFront(t, cps[1])

	// The direct target is registered with a kubeconfig for its front.
	g.Expect(hub.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "st-direct-kubeconfig", Namespace: DefaultNamespace},
		Data: map[string][]byte{"value": direct.kubeconfig(g)}})).To(Succeed())
	g.Expect(hub.c.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "st-direct"},
		Spec: v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: "st-direct-kubeconfig"}}}})).To(Succeed())
	// The other one through its agent, which talks to its API server through the front.
	scheme, _ := Scheme()
	tc, err := client.New(cps[1].Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hub.c.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "st-tunnel"},
		Spec: v1alpha1.ManagedClusterSpec{Registration: &v1alpha1.RegistrationSource{}}})).To(Succeed())
	var manifestURL string
	g.Eventually(func(g Gomega) {
		mc := getMC(g, hub.c, "st-tunnel")
		g.Expect(mc.Status.Registration).NotTo(BeNil())
		manifestURL = mc.Status.Registration.ManifestURL
		g.Expect(manifestURL).NotTo(BeEmpty())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	code, manifest := fetch(t, hub.hc, manifestURL)
	g.Expect(code).To(Equal(http.StatusOK))
	applyManifest(t, tc, manifest)
	frontKubeconfig := filepath.Join(t.TempDir(), "front.kubeconfig")
	g.Expect(os.WriteFile(frontKubeconfig, tunnelled.kubeconfig(g), 0o600)).To(Succeed())
	runUntilStopped(t, "agent", func(ctx context.Context) error {
		return agent.Main(ctx, []string{"--kubeconfig=" + frontKubeconfig, "--zap-log-level=error"})
	})
	waitReady(g, hub.c, "st-direct")
	waitReady(g, hub.c, "st-tunnel")

	// The hub's admin reaches both (hub permission on managedclusters/proxy); the
	// fronts do not authorize pod subresources, they record who asked. In the targets
	// it is only what an AccessBinding makes it (system:masters is never forwarded):
	// cluster-admin, for kubectl's reads of the pod.
	g.Expect(hub.c.Create(ctx, &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "admin-everywhere"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: v1alpha1.SubjectUser, Name: "drover-admin"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "cluster-admin"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{"st-direct", "st-tunnel"}}}})).To(Succeed())
	user := proxyConfig(g, hub, hub.cp.Kubeconfig(), "")
	for _, name := range []string{"st-direct", "st-tunnel"} {
		g.Eventually(func(g Gomega) {
			_, err := clientFor(g, user, name).CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
			g.Expect(err).NotTo(HaveOccurred())
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	}
	for _, tc := range []struct {
		cluster string
		front   *streamingFront
	}{{"st-direct", direct}, {"st-tunnel", tunnelled}} {
		cfg := rest.CopyConfig(user)
		cfg.Host = strings.TrimSuffix(user.Host, "/") + "/clusters/" + tc.cluster
		base, err := url.Parse(cfg.Host)
		g.Expect(err).NotTo(HaveOccurred())
		podURL := func(sub, query string) *url.URL {
			u := *base
			u.Path += "/api/v1/namespaces/default/pods/web/" + sub
			u.RawQuery = query
			return &u
		}
		execQuery := "command=echo&command=hi&stdin=true&stdout=true&container=app"

		t.Run(tc.cluster+"/exec over SPDY", func(t *testing.T) {
			g := NewWithT(t)
			ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", podURL("exec", execQuery))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(runExec(ex)).To(Equal("exec echo hi\nping"))
			g.Expect(tc.front.lastUser()).To(Equal("drover-admin"))
		})
		t.Run(tc.cluster+"/exec over websockets", func(t *testing.T) {
			g := NewWithT(t)
			ex, err := remotecommand.NewWebSocketExecutor(cfg, "GET", podURL("exec", execQuery).String())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(runExec(ex)).To(Equal("exec echo hi\nping"))
		})
		t.Run(tc.cluster+"/port-forward over SPDY", func(t *testing.T) {
			g := NewWithT(t)
			rt, upgrader, err := spdy.RoundTripperFor(cfg)
			g.Expect(err).NotTo(HaveOccurred())
			dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, "POST", podURL("portforward", ""))
			g.Expect(runPortForward(dialer)).To(Equal("port 8080:hello"))
		})
		t.Run(tc.cluster+"/port-forward over websockets", func(t *testing.T) {
			g := NewWithT(t)
			dialer, err := portforward.NewSPDYOverWebsocketDialerForStreaming(podURL("portforward", ""), cfg)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(runPortForward(dialer)).To(Equal("port 8080:hello"))
		})
		t.Run(tc.cluster+"/attach over SPDY and websockets", func(t *testing.T) {
			g := NewWithT(t)
			ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", podURL("attach", "stdin=true&stdout=true&container=app"))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(runExec(ex)).To(Equal("attached app\nping"))
			ex, err = remotecommand.NewWebSocketExecutor(cfg, "GET", podURL("attach", "stdin=true&stdout=true&container=app").String())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(runExec(ex)).To(Equal("attached app\nping"))
		})
		t.Run(tc.cluster+"/kubectl exec, cp and port-forward", func(t *testing.T) {
			g := NewWithT(t)
			if _, err := exec.LookPath("kubectl"); err != nil {
				t.Skip("kubectl is not installed")
			}
			kc := writeProxyKubeconfig(t, g, cfg)
			// kubectl reads the pod first: it exists (no kubelet runs it), Running.
			pc := tc.front.client
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/web"}}}}
			g.Expect(pc.Create(ctx, pod)).To(Succeed())
			pod.Status.Phase = corev1.PodRunning
			g.Expect(pc.Status().Update(ctx, pod)).To(Succeed())

			cmd := exec.Command("kubectl", "--kubeconfig="+kc, "exec", "-i", "web", "-c", "app", "--", "echo", "hi")
			cmd.Stdin = strings.NewReader("ping")
			out, err := cmd.CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), string(out))
			g.Expect(string(out)).To(Equal("exec echo hi\nping"))

			dst := filepath.Join(t.TempDir(), "copied")
			out, err = exec.Command("kubectl", "--kubeconfig="+kc, "cp", "-c", "app", "web:/tmp/data.txt", dst).CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), string(out))
			copied, err := os.ReadFile(dst)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(string(copied)).To(Equal("copied from /tmp/data.txt\n"))

			pf := exec.Command("kubectl", "--kubeconfig="+kc, "port-forward", "pod/web", ":8080")
			stdout, err := pf.StdoutPipe()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(pf.Start()).To(Succeed())
			defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			g.Expect(err).NotTo(HaveOccurred())
			// "Forwarding from 127.0.0.1:41234 -> 8080"
			local := strings.Fields(strings.TrimPrefix(line, "Forwarding from "))[0]
			conn, err := net.DialTimeout("tcp", local, 5*time.Second)
			g.Expect(err).NotTo(HaveOccurred())
			defer func() { _ = conn.Close() }()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			_, err = conn.Write([]byte("hello"))
			g.Expect(err).NotTo(HaveOccurred())
			_ = conn.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(conn)
			g.Expect(string(b)).To(Equal("port 8080:hello"))
		})
		t.Run(tc.cluster+"/logs -f streams as written", func(t *testing.T) {
			g := NewWithT(t)
			hc, err := rest.HTTPClientFor(cfg)
			g.Expect(err).NotTo(HaveOccurred())
			resp, err := hc.Get(podURL("log", "follow=true").String())
			g.Expect(err).NotTo(HaveOccurred())
			defer func() { _ = resp.Body.Close() }()
			r := bufio.NewReader(resp.Body)
			line, err := r.ReadString('\n')
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(line).To(Equal("line 1\n"))
			// The front writes the next line only once the first was read here.
			tc.front.next <- struct{}{}
			line, err = r.ReadString('\n')
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(line).To(Equal("line 2\n"))
		})
	}
}

// writeProxyKubeconfig writes a kubeconfig for kubectl from a client configuration
// through the proxy.
func writeProxyKubeconfig(t *testing.T, g Gomega, cfg *rest.Config) string {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u", Namespace: "default"}
	kc.CurrentContext = "c"
	b, err := clientcmd.Write(*kc)
	g.Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(t.TempDir(), "proxy.kubeconfig")
	g.Expect(os.WriteFile(path, b, 0o600)).To(Succeed())
	return path
}

func runExec(ex remotecommand.Executor) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("ping"), Stdout: &out})
	return out.String(), err
}

// runPortForward forwards a local port to the pod's port 8080 and exchanges one
// message with what listens there.
func runPortForward(dialer streamhttp.Dialer) (string, error) {
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fw, err := portforward.NewForStreaming(dialer, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return "", err
	case <-time.After(20 * time.Second):
		return "", fmt.Errorf("port-forward not ready")
	}
	ports, err := fw.GetPorts()
	if err != nil {
		return "", err
	}
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		return "", err
	}
	if cw, ok := conn.(*net.TCPConn); ok {
		_ = cw.CloseWrite()
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

// streamingFront stands in front of a real API server: pod exec, port-forward and
// log go to a kubelet stand-in, the way kube-apiserver serves them; everything else
// goes to the API server, with the front's own (admin) credentials and the caller's
// impersonation headers. It accepts only its own bearer token, so requests that
// reach it carry the connection's credentials, never a caller's.
type streamingFront struct {
	srv   *httptest.Server
	token string
	next  chan struct{}
	// client is an admin client of the API server behind the front.
	client client.Client

	mu   sync.Mutex
	user string
}

func newStreamingFront(t *testing.T, cp *controlplane.ControlPlane) *streamingFront {
	t.Helper()
	kubelet := httptest.NewServer(kubeletStandIn())
	t.Cleanup(kubelet.Close)
	kubeletURL, _ := url.Parse(kubelet.URL)
	apiURL, _ := url.Parse(cp.Config.Host)
	apiTransport, err := rest.TransportFor(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	api := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(apiURL)
			pr.Out.Host = apiURL.Host
		},
		Transport:     apiTransport,
		FlushInterval: -1,
	}
	admin, err := client.New(cp.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &streamingFront{token: "front-secret", next: make(chan struct{}, 1), client: admin}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{pod}/{sub}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.user = r.Header.Get("Impersonate-User")
		f.mu.Unlock()
		loc := *kubeletURL
		loc.Path = "/" + r.PathValue("sub")
		loc.RawQuery = r.URL.RawQuery
		upgrade := upgradeproxy.NewUpgradeAwareHandler(&loc, http.DefaultTransport, false, true, errorResponder{})
		switch r.PathValue("sub") {
		case "exec", "attach":
			q := r.URL.Query()
			opts := translator.Options{Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true",
				Stderr: q.Get("stderr") == "true", Tty: q.Get("tty") == "true"}
			translating := translator.NewTranslatingHandler(upgrade, translator.NewStreamTranslatorHandler(&loc, http.DefaultTransport, 0, opts),
				wsstream.IsWebSocketRequestWithStreamCloseProtocol)
			translating.ServeHTTP(w, r)
		case "portforward":
			translator.NewTranslatingHandler(upgrade, translator.NewTunnelingHandler(upgrade),
				wsstream.IsWebSocketRequestWithTunnelingProtocol).ServeHTTP(w, r)
		case "log":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "line 1\n")
			w.(http.Flusher).Flush()
			select {
			case <-f.next:
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Second):
			}
			_, _ = io.WriteString(w, "line 2\n")
		default:
			api.ServeHTTP(w, r)
		}
	})
	mux.Handle("/", api)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			http.Error(w, "the front accepts only its own token", http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization")
		mux.ServeHTTP(w, r)
	}))
	// As kube-apiserver does, the front speaks HTTP/2 to whoever offers it.
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(func() {
		// The manager's and the agent's watches through the front may still be open.
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

func (f *streamingFront) lastUser() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.user
}

// kubeconfig is how the hub, or the agent, reaches the front.
func (f *streamingFront) kubeconfig(g Gomega) []byte {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["front"] = &clientcmdapi.Cluster{Server: f.srv.URL, CertificateAuthorityData: ca}
	cfg.AuthInfos["front"] = &clientcmdapi.AuthInfo{Token: f.token}
	cfg.Contexts["front"] = &clientcmdapi.Context{Cluster: "front", AuthInfo: "front"}
	cfg.CurrentContext = "front"
	b, err := clientcmd.Write(*cfg)
	g.Expect(err).NotTo(HaveOccurred())
	return b
}

// kubeletStandIn serves exec (echoes the command, then stdin) and port-forward
// (greets with the port, then echoes) with the CRI streaming server's own handlers.
func kubeletStandIn() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/exec", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		opts := &criexec.Options{Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true",
			Stderr: q.Get("stderr") == "true", TTY: q.Get("tty") == "true"}
		criexec.ServeExec(w, r, echoExec{}, "web", "", q.Get("container"), q["command"], opts,
			time.Minute, 30*time.Second, criexec.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/attach", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		opts := &criexec.Options{Stdin: q.Get("stdin") == "true", Stdout: q.Get("stdout") == "true",
			Stderr: q.Get("stderr") == "true", TTY: q.Get("tty") == "true"}
		criexec.ServeAttach(w, r, echoExec{}, "web", "", q.Get("container"), opts,
			time.Minute, 30*time.Second, criexec.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/portforward", func(w http.ResponseWriter, r *http.Request) {
		crifwd.ServePortForward(w, r, echoForward{}, "web", "", nil, time.Minute, 30*time.Second, crifwd.SupportedProtocols)
	})
	return mux
}

type echoExec struct{}

func (echoExec) AttachContainer(_ context.Context, _, _, container string, in io.Reader, out, _ io.WriteCloser,
	_ bool, _ <-chan criexec.TerminalSize) error {
	_, _ = fmt.Fprintf(out, "attached %s\n", container)
	if in != nil {
		_, _ = io.Copy(out, in)
	}
	return nil
}

func (echoExec) ExecInContainer(_ context.Context, _, _, _ string, cmd []string, in io.Reader, out, _ io.WriteCloser,
	_ bool, _ <-chan criexec.TerminalSize, _ time.Duration) error {
	if len(cmd) == 4 && cmd[0] == "tar" && cmd[1] == "cf" && cmd[2] == "-" {
		// What `kubectl cp pod:/path` runs: the file, as a tar stream.
		tw := tar.NewWriter(out)
		body := "copied from " + cmd[3] + "\n"
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(cmd[3], "/"), Mode: 0o644, Size: int64(len(body))}); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return err
		}
		return tw.Close()
	}
	_, _ = fmt.Fprintf(out, "exec %s\n", strings.Join(cmd, " "))
	if in != nil {
		_, _ = io.Copy(out, in)
	}
	return nil
}

type echoForward struct{}

func (echoForward) PortForward(_ context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	defer func() { _ = stream.Close() }()
	b, _ := io.ReadAll(stream)
	_, err := fmt.Fprintf(stream, "port %d:%s", port, b)
	return err
}

type errorResponder struct{}

func (errorResponder) Error(w http.ResponseWriter, _ *http.Request, err error) {
	http.Error(w, err.Error(), http.StatusBadGateway)
}
