package planner

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-io/drover/nodeplan"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func topology() []Node {
	n := func(name, addr string, roles ...Role) Node {
		return Node{Name: "c1-" + name, Hostname: name, Address: addr, Roles: roles, Healthy: map[string]bool{}}
	}
	return []Node{
		n("etcd-1", "10.0.0.11", RoleEtcd), n("etcd-2", "10.0.0.12", RoleEtcd), n("etcd-3", "10.0.0.13", RoleEtcd),
		n("cp-1", "10.0.0.21", RoleControlPlane), n("cp-2", "10.0.0.22", RoleControlPlane),
		n("w-1", "10.0.0.31", RoleWorker), n("w-2", "10.0.0.32", RoleWorker),
	}
}

// sim plays the nodes: each applies its plan and reports the probes of what it runs
// healthy, unless told otherwise.
type sim struct {
	t       *testing.T
	in      Input
	out     *Output
	sick    map[string]bool // node/probe that stays unhealthy
	ignored map[string]bool // nodes that never apply anything
}

func newSim(t *testing.T, nodes []Node) *sim {
	return &sim{t: t, in: Input{Cluster: Cluster{Name: "c1"}, Nodes: nodes, Now: now}, sick: map[string]bool{}, ignored: map[string]bool{}}
}

// step plans, then lets every node apply and report.
func (s *sim) step() *Output {
	s.t.Helper()
	out, err := Plan(s.in)
	if err != nil {
		s.t.Fatal(err)
	}
	s.out = out
	s.in.Certs, s.in.Members, s.in.Reached = out.Certs, out.Members, out.Reached
	for i := range s.in.Nodes {
		n := &s.in.Nodes[i]
		if st, ok := out.Nodes[n.Name]; ok {
			n.Version, n.CertificatesGeneration = st.Version, st.CertificatesGeneration
		}
		if s.ignored[n.Name] {
			continue
		}
		plan, ok := out.Plans[n.Name]
		if !ok {
			continue
		}
		n.AppliedChecksum = out.Checksums[n.Name]
		n.Healthy = map[string]bool{}
		for _, p := range plan.Probes {
			n.Healthy[p.Name] = !s.sick[n.Name+"/"+p.Name]
		}
	}
	return out
}

func processes(p *nodeplan.Plan) []string {
	var out []string
	for _, pr := range p.Processes {
		out = append(out, pr.Name)
	}
	return out
}

func arg(p *nodeplan.Plan, process, flag string) string {
	for _, pr := range p.Processes {
		if pr.Name != process {
			continue
		}
		for _, a := range pr.Args {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v
			}
		}
	}
	return ""
}

func TestTiers(t *testing.T) {
	s := newSim(t, topology())
	out := s.step()
	if out.Tier != TierEtcdInit || out.Waiting != "node c1-etcd-1 to apply its first plan" {
		t.Fatalf("first: %s, %q", out.Tier, out.Waiting)
	}
	if got := processes(out.Plans["c1-etcd-1"]); !slices.Equal(got, []string{"etcd"}) {
		t.Fatalf("init node runs %v", got)
	}
	if p := out.Plans["c1-etcd-1"]; arg(p, "etcd", "--initial-cluster-state") != "new" || arg(p, "etcd", "--initial-cluster") != "etcd-1=https://10.0.0.11:2380" || len(p.Instructions) != 0 {
		t.Fatalf("init node's etcd: %+v", p.Processes)
	}
	for _, n := range []string{"c1-etcd-2", "c1-cp-1", "c1-w-1"} {
		if len(out.Plans[n].Processes) != 0 || len(out.Plans[n].Files) != 0 {
			t.Fatalf("%s has a plan before its tier: %+v", n, out.Plans[n])
		}
	}

	// The init node is healthy: etcd-2 joins, with its member-add instruction.
	out = s.step()
	if out.Tier != TierEtcdJoin || !slices.Equal(out.Members, []string{"c1-etcd-1", "c1-etcd-2"}) {
		t.Fatalf("join: %s %v", out.Tier, out.Members)
	}
	p2 := out.Plans["c1-etcd-2"]
	if arg(p2, "etcd", "--initial-cluster-state") != "existing" ||
		arg(p2, "etcd", "--initial-cluster") != "etcd-1=https://10.0.0.11:2380,etcd-2=https://10.0.0.12:2380" {
		t.Fatalf("joiner's etcd: %v", p2.Processes[0].Args)
	}
	if len(p2.Instructions) != 1 || !strings.Contains(p2.Instructions[0].Args[1], "member add etcd-2 --peer-urls=https://10.0.0.12:2380") ||
		!strings.Contains(p2.Instructions[0].Args[1], "--endpoints=https://10.0.0.11:2379 ") {
		t.Fatalf("joiner's instruction: %+v", p2.Instructions)
	}
	if len(out.Plans["c1-etcd-3"].Processes) != 0 {
		t.Fatal("etcd-3 joins at the same time as etcd-2")
	}
	initPlan := out.Checksums["c1-etcd-1"]

	out = s.step() // etcd-3 joins
	if !slices.Equal(out.Members, []string{"c1-etcd-1", "c1-etcd-2", "c1-etcd-3"}) || out.Checksums["c1-etcd-1"] != initPlan {
		t.Fatalf("members %v; the init node's plan changed: %v", out.Members, out.Checksums["c1-etcd-1"] != initPlan)
	}
	out = s.step() // control planes
	if out.Tier != TierControlPlane {
		t.Fatalf("tier %s, waiting %q", out.Tier, out.Waiting)
	}
	cp := out.Plans["c1-cp-1"]
	if got := processes(cp); !slices.Equal(got, []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"}) {
		t.Fatalf("control plane runs %v", got)
	}
	if got := arg(cp, "kube-apiserver", "--etcd-servers"); got != "https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379" {
		t.Fatalf("etcd servers %q", got)
	}
	if out.Server != "https://10.0.0.21:6443" || !strings.Contains(string(out.AdminKubeconfig), "server: https://10.0.0.21:6443") {
		t.Fatalf("server %q", out.Server)
	}
	if len(out.Plans["c1-w-1"].Processes) != 0 {
		t.Fatal("workers before an API server is ready")
	}
	out = s.step() // workers: containerd first
	if out.Tier != TierWorkers || !slices.Equal(processes(out.Plans["c1-w-1"]), []string{"containerd"}) {
		t.Fatalf("%s: worker runs %v", out.Tier, processes(out.Plans["c1-w-1"]))
	}
	out = s.step() // then kubelet
	if !slices.Equal(processes(out.Plans["c1-w-1"]), []string{"containerd", "kubelet", "kube-proxy"}) || out.Tier != TierWorkers {
		t.Fatalf("%s: worker runs %v", out.Tier, processes(out.Plans["c1-w-1"]))
	}
	out = s.step()
	if out.Tier != TierReady || out.Waiting != "" {
		t.Fatalf("tier %s, waiting %q", out.Tier, out.Waiting)
	}

	// Nothing changes from here: the same plans, no new certificate.
	before := out.Checksums
	out = s.step()
	if out.CertsChanged || out.Tier != TierReady {
		t.Fatalf("certs changed %v, tier %s", out.CertsChanged, out.Tier)
	}
	for n, sum := range before {
		if out.Checksums[n] != sum {
			t.Errorf("plan of %s changed with nothing to change it", n)
		}
	}
}

// A tier waits for an unhealthy node, and says which node and probe.
func TestWaitsNamingNodeAndProbe(t *testing.T) {
	s := newSim(t, topology())
	s.sick["c1-etcd-2/etcd"] = true
	for range 5 {
		s.step()
	}
	if s.out.Tier != TierEtcdJoin || s.out.Waiting != "node c1-etcd-2: probe etcd to be healthy" || len(s.out.Members) != 2 {
		t.Fatalf("tier %s, waiting %q, members %v", s.out.Tier, s.out.Waiting, s.out.Members)
	}
	delete(s.sick, "c1-etcd-2/etcd")
	s.ignored["c1-cp-1"] = true
	for range 5 {
		s.step()
	}
	// One API server is enough for the workers to start; Ready waits for both.
	if s.out.Tier != TierWorkers || s.out.Waiting != "node c1-cp-1: probe kube-apiserver to be healthy" {
		t.Fatalf("tier %s, waiting %q", s.out.Tier, s.out.Waiting)
	}
}

// Nodes with several roles: the plan grows tier by tier and never shrinks back.
func TestCombinedRolesAreStable(t *testing.T) {
	nodes := []Node{
		{Name: "c1-a", Hostname: "a", Address: "10.0.0.1", Roles: []Role{RoleEtcd, RoleControlPlane, RoleWorker}},
		{Name: "c1-b", Hostname: "b", Address: "10.0.0.2", Roles: []Role{RoleEtcd, RoleControlPlane, RoleWorker}},
		{Name: "c1-c", Hostname: "c", Address: "10.0.0.3", Roles: []Role{RoleEtcd, RoleWorker}},
	}
	s := newSim(t, nodes)
	last := 0
	for range 10 {
		out := s.step()
		n := len(out.Plans["c1-a"].Processes)
		if n < last {
			t.Fatalf("c1-a's plan shrank from %d to %d processes", last, n)
		}
		last = n
	}
	if s.out.Tier != TierReady {
		t.Fatalf("tier %s, waiting %q", s.out.Tier, s.out.Waiting)
	}
	if got := processes(s.out.Plans["c1-a"]); !slices.Equal(got, []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}) {
		t.Fatalf("c1-a runs %v", got)
	}
}

// The init node stays the init node when a node that sorts first registers later.
func TestMembersKeepTheirOrder(t *testing.T) {
	nodes := topology()
	s := newSim(t, nodes)
	for range 8 {
		s.step()
	}
	init := s.out.Checksums["c1-etcd-1"]
	s.in.Nodes = append(s.in.Nodes, Node{Name: "c1-etcd-0", Hostname: "etcd-0", Address: "10.0.0.10", Roles: []Role{RoleEtcd}, Healthy: map[string]bool{}})
	out := s.step()
	if out.Members[0] != "c1-etcd-1" || out.Members[3] != "c1-etcd-0" || out.Checksums["c1-etcd-1"] != init {
		t.Fatalf("members %v", out.Members)
	}
	if got := arg(out.Plans["c1-etcd-0"], "etcd", "--initial-cluster-state"); got != "existing" {
		t.Fatalf("the late node starts a cluster of its own: %q", got)
	}
}

func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes func([]Node) []Node
		want  string
	}{
		{"no etcd", func(n []Node) []Node { return n[3:] }, "no node has the etcd role"},
		{"no control plane", func(n []Node) []Node { return append(n[:3:3], n[5:]...) }, "no node has the control-plane role"},
		{"same hostname", func(n []Node) []Node { n[1].Hostname = "etcd-1"; return n }, `nodes c1-etcd-1 and c1-etcd-2 have the same hostname "etcd-1"`},
		{"same address", func(n []Node) []Node { n[1].Address = n[0].Address; return n }, "have the same address 10.0.0.11"},
		{"bad address", func(n []Node) []Node { n[0].Address = "etcd-1.local"; return n }, `node c1-etcd-1: hostname "etcd-1" and address "etcd-1.local"`},
		{"no role", func(n []Node) []Node { n[6].Roles = nil; return n }, "node c1-w-2 has no role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Plan(Input{Cluster: Cluster{Name: "c1"}, Nodes: tc.nodes(topology()), Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(out.Problems, func(p string) bool { return strings.Contains(p, tc.want) }) || len(out.Plans) != 0 {
				t.Fatalf("problems %q, %d plans; want %q and none", out.Problems, len(out.Plans), tc.want)
			}
		})
	}
}

// Certificates are kept while valid, and issued again near their end.
func TestCertificateRenewal(t *testing.T) {
	s := newSim(t, topology())
	for range 8 {
		s.step()
	}
	certs := s.out.Certs
	s.in.Now = now.Add(leafValidity - renewBefore + time.Hour)
	out := s.step()
	if !out.CertsChanged || string(out.Certs["apiserver-c1-cp-1"].Cert) == string(certs["apiserver-c1-cp-1"].Cert) {
		t.Fatal("a certificate near its end was not renewed")
	}
	if string(out.Certs[KubernetesCA].Cert) != string(certs[KubernetesCA].Cert) {
		t.Fatal("the CA was replaced with its leaves")
	}
}

func TestNodePodCIDR(t *testing.T) {
	if got, err := nodePodCIDR(DefaultPodCIDR, "192.168.7.42"); err != nil || got != "10.244.42.0/24" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := nodePodCIDR("10.244.0.0/24", "10.0.0.1"); err == nil {
		t.Fatal("a /24 pod range accepted")
	}
}

func TestArtifacts(t *testing.T) {
	arts := map[string]string{}
	for _, b := range []string{"etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		arts["v1.36.3/"+b] = strings.Repeat("a", 64)
	}
	arts["images/pause.tar"] = strings.Repeat("b", 64)
	s := newSim(t, topology())
	s.in.Cluster.KubernetesVersion, s.in.Artifacts = "v1.36.3", arts
	for range 8 {
		s.step()
	}
	if s.out.Tier != TierReady {
		t.Fatalf("tier %s, waiting %q, problems %v", s.out.Tier, s.out.Waiting, s.out.Problems)
	}
	w := s.out.Plans["c1-w-1"]
	var names []string
	for _, a := range w.Artifacts {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, []string{"images/pause.tar", "v1.36.3/kubelet", "v1.36.3/kube-proxy"}) {
		t.Fatalf("worker downloads %v", names)
	}
	if got := w.Processes[1].Path; got != "/var/lib/drover/bin/v1.36.3/kubelet" {
		t.Fatalf("kubelet runs from %s", got)
	}
	// A version the source does not have: planning stops and says what is missing.
	s.in.Cluster.KubernetesVersion = "v1.37.0"
	out, err := Plan(s.in)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Problems) == 0 || !strings.Contains(strings.Join(out.Problems, "; "), "the artifact source has no v1.37.0/etcd:") || len(out.Plans) != 0 {
		t.Fatalf("problems %v", out.Problems)
	}
}

// With a mirror, each artifact carries its URL there; the sha256 stays what decides.
func TestArtifactsFromAMirror(t *testing.T) {
	arts := map[string]string{}
	for _, b := range []string{"etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		arts["v1.36.3/"+b] = strings.Repeat("a", 64)
	}
	s := newSim(t, topology())
	s.in.Cluster.KubernetesVersion, s.in.Artifacts, s.in.ArtifactsURL = "v1.36.3", arts, "https://mirror.example/drover/"
	s.step()
	a := s.out.Plans["c1-etcd-1"].Artifacts
	if len(a) == 0 || a[0].URL != "https://mirror.example/drover/v1.36.3/etcd" {
		t.Fatalf("artifacts %+v", a)
	}
}
