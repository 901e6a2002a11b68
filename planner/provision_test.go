package planner_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/drover-io/drover/internal/hosts"
	"github.com/drover-io/drover/nodeagent"
	"github.com/drover-io/drover/planner"
)

// TestProvisionEtcdAndControlPlanes builds a real cluster on this machine, without
// root: three etcd members and two control planes, each node a node agent (package
// nodeagent) of its own with its own directories and loopback address, driven by the
// planner exactly as the hub drives node agents: plan, publish the plans that
// changed, read back what the nodes report, again. Workers need root (containerd,
// kubelet); the host harness's tests cover them.
func TestProvisionEtcdAndControlPlanes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	bin := hosts.NodeBinDir(t)
	for _, b := range []string{"etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("%s: %v (run hack/kubebin.sh node)", b, err)
		}
	}
	// Loopback addresses of their own, so that two runs on one machine do not meet.
	prefix := fmt.Sprintf("127.66.%d.", os.Getpid()%250)
	root := t.TempDir()
	type node struct {
		planner.Node
		agent    *nodeagent.Agent
		plans    chan nodeagent.Signed
		sent     string
		failures int
		layout   planner.Layout
	}
	var nodes []*node
	ctx, cancel := context.WithCancel(context.Background())
	var stopped []chan struct{}
	t.Cleanup(func() {
		cancel()
		for _, c := range stopped {
			<-c
		}
	})
	add := func(name string, addr int, roles ...planner.Role) {
		dir := filepath.Join(root, name)
		a, err := nodeagent.New(nodeagent.Options{DataDir: filepath.Join(dir, "agent"), RetryMin: 200 * time.Millisecond,
			RetryMax: 2 * time.Second, StopTimeout: 5 * time.Second, Log: logr.Discard()})
		if err != nil {
			t.Fatal(err)
		}
		n := &node{Node: planner.Node{Name: "lab-" + name, Hostname: name, Address: prefix + fmt.Sprint(addr), Roles: roles},
			agent: a, plans: make(chan nodeagent.Signed, 8),
			layout: planner.Layout{Bin: bin, Etc: filepath.Join(dir, "etc"), Var: filepath.Join(dir, "var"), Run: filepath.Join(dir, "run")}}
		done := make(chan struct{})
		stopped = append(stopped, done)
		go func() {
			defer close(done)
			_ = a.Run(ctx, n.plans)
		}()
		nodes = append(nodes, n)
	}
	add("etcd-1", 11, planner.RoleEtcd)
	add("etcd-2", 12, planner.RoleEtcd)
	add("etcd-3", 13, planner.RoleEtcd)
	add("cp-1", 21, planner.RoleControlPlane)
	add("cp-2", 22, planner.RoleControlPlane)

	start := time.Now()
	in := planner.Input{Cluster: planner.Cluster{Name: "lab"}, Now: time.Now(), LayoutOf: func(name string) planner.Layout {
		for _, n := range nodes {
			if n.Name == name {
				return n.layout
			}
		}
		return planner.DefaultLayout
	}}
	var out *planner.Output
	tiers := map[planner.Tier]time.Duration{}
	for {
		in.Nodes = nil
		for _, n := range nodes {
			st := n.agent.Status()
			n.AppliedChecksum = st.AppliedChecksum
			n.Healthy = map[string]bool{}
			for _, p := range st.Probes {
				n.Healthy[p.Name] = p.Healthy
			}
			if f := st.Failure; f != nil && f.Attempts != n.failures {
				n.failures = f.Attempts
				t.Logf("%6.1fs node %s: %s failed (attempt %d): %s", time.Since(start).Seconds(), n.Name, f.Step, f.Attempts, lastLine(f.Message))
			}
			in.Nodes = append(in.Nodes, n.Node)
		}
		var err error
		out, err = planner.Plan(in)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Problems) > 0 {
			t.Fatalf("problems: %v", out.Problems)
		}
		in.Certs, in.Members = out.Certs, out.Members
		if _, ok := tiers[out.Tier]; !ok {
			tiers[out.Tier] = time.Since(start)
			t.Logf("%6.1fs tier %s (%s)", time.Since(start).Seconds(), out.Tier, out.Waiting)
		}
		if out.Tier == planner.TierReady {
			break
		}
		if time.Since(start) > 4*time.Minute {
			for _, n := range nodes {
				logs, _ := exec.Command("sh", "-c", "tail -n 5 "+filepath.Join(root, strings.TrimPrefix(n.Name, "lab-"), "agent", "logs", "*.log")).CombinedOutput()
				t.Logf("node %s: %+v\n%s", n.Name, n.agent.Status(), logs)
			}
			t.Fatalf("not provisioned after 4 minutes: tier %s, waiting for %s", out.Tier, out.Waiting)
		}
		for _, n := range nodes {
			if sum := out.Checksums[n.Name]; sum != n.sent {
				n.plans <- nodeagent.Signed{Data: out.Encoded[n.Name], Checksum: sum}
				n.sent = sum
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("provisioned 3 etcd members and 2 control planes in %s", time.Since(start).Round(100*time.Millisecond))

	// etcd: three started members.
	etcd := nodes[0].layout.Etc + "/pki/etcd"
	list, err := exec.Command(filepath.Join(bin, "etcdctl"), "--endpoints=https://"+prefix+"11:2379", "--cacert="+etcd+"/ca.crt",
		"--cert="+etcd+"/healthcheck-client.crt", "--key="+etcd+"/healthcheck-client.key", "member", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl member list: %v\n%s", err, list)
	}
	if got := strings.Count(string(list), ", started, "); got != 3 {
		t.Fatalf("%d started members:\n%s", got, list)
	}
	// Both API servers answer the hub's admin kubeconfig, and share the cluster.
	cfg, err := clientcmd.RESTConfigFromKubeConfig(out.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"21", "22"} {
		cfg.Host = "https://" + prefix + addr + ":6443"
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		name := "from-" + addr
		if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("API server %s: %v", cfg.Host, err)
		}
	}
	cs, _ := kubernetes.NewForConfig(cfg)
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "from-21", metav1.GetOptions{}); err != nil {
		t.Fatalf("the second API server does not see what the first wrote: %v", err)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
