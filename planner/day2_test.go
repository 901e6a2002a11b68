package planner

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-io/drover/nodeplan"
	"github.com/drover-io/drover/snapshotstore"
)

// ready walks a simulated cluster to Ready.
func ready(t *testing.T, nodes []Node) *sim {
	t.Helper()
	s := newSim(t, nodes)
	s.in.Cluster.KubernetesVersion = "v1.36.3"
	for range 12 {
		s.step()
	}
	if s.out.Tier != TierReady {
		t.Fatalf("tier %s, waiting %q", s.out.Tier, s.out.Waiting)
	}
	return s
}

func versions(s *sim) map[string]string {
	out := map[string]string{}
	for _, n := range s.in.Nodes {
		out[n.Name] = n.Version
	}
	return out
}

// An upgrade moves the etcd members one at a time, then the control planes, then
// the workers, and never a worker before every control plane.
func TestUpgradeRollsOutInOrder(t *testing.T) {
	s := ready(t, topology())
	s.in.Cluster.KubernetesVersion = "v1.36.4"
	s.in.Cluster.WorkerConcurrency = "100%"
	var order []string
	seen := map[string]bool{}
	for range 40 {
		out := s.step()
		if out.Rollout == nil {
			break
		}
		if out.Rollout.Kind != "Upgrade" {
			t.Fatalf("kind %s", out.Rollout.Kind)
		}
		if out.Rollout.Phase == "etcd" && len(out.Rollout.Nodes) > 1 {
			t.Fatalf("etcd members move together: %v", out.Rollout.Nodes)
		}
		for name, st := range out.Nodes {
			if st.Version == "v1.36.4" && !seen[name] {
				seen[name] = true
				order = append(order, name)
			}
		}
		// No kubelet newer than a control plane.
		v := versions(s)
		if (v["c1-w-1"] == "v1.36.4" || v["c1-w-2"] == "v1.36.4") && (v["c1-cp-1"] != "v1.36.4" || v["c1-cp-2"] != "v1.36.4") {
			t.Fatalf("a worker moved before the control planes: %v", v)
		}
	}
	if len(order) != 7 || !slices.Equal(order[:3], []string{"c1-etcd-1", "c1-etcd-2", "c1-etcd-3"}) {
		t.Fatalf("order %v", order)
	}
	if s.out.Tier != TierReady || s.out.Rollout != nil {
		t.Fatalf("tier %s rollout %+v", s.out.Tier, s.out.Rollout)
	}
	if got := s.out.Plans["c1-w-1"].Processes[1].Path; !strings.Contains(got, "kubelet") {
		t.Fatalf("kubelet %s", got)
	}
}

// A node that does not come back healthy stops the rollout there.
func TestUpgradeWaitsForAnUnhealthyNode(t *testing.T) {
	s := ready(t, topology())
	s.in.Cluster.KubernetesVersion = "v1.36.4"
	s.sick["c1-etcd-1/etcd"] = true
	for range 10 {
		s.step()
	}
	v := versions(s)
	if v["c1-etcd-1"] != "v1.36.4" || v["c1-etcd-2"] != "" && v["c1-etcd-2"] != "v1.36.3" && v["c1-etcd-2"] != s.in.Nodes[1].Version {
		t.Fatalf("versions %v", v)
	}
	if v["c1-etcd-2"] == "v1.36.4" {
		t.Fatalf("the rollout went past an unhealthy member: %v", v)
	}
	// The API servers stay planned although an etcd member is unhealthy.
	if got := processes(s.out.Plans["c1-cp-1"]); !slices.Contains(got, "kube-apiserver") {
		t.Fatalf("cp-1 runs %v while etcd-1 is unhealthy", got)
	}
	if s.out.Rollout == nil || s.out.Rollout.Phase != "etcd" || !slices.Equal(s.out.Rollout.Nodes, []string{"c1-etcd-1"}) {
		t.Fatalf("rollout %+v", s.out.Rollout)
	}
}

// Worker concurrency: a number or a percentage of the workers, at least one.
func TestWorkerConcurrency(t *testing.T) {
	for _, tc := range []struct {
		s       string
		workers int
		want    int
	}{{"", 8, 2}, {"25%", 3, 1}, {"50%", 10, 5}, {"3", 10, 3}, {"100%", 4, 4}, {"x", 4, 1}} {
		if got := workerConcurrency(tc.s, tc.workers); got != tc.want {
			t.Errorf("%q of %d: %d, want %d", tc.s, tc.workers, got, tc.want)
		}
	}
}

// A certificate rotation issues new certificates to one node at a time, the
// certificates nodes shared included.
func TestCertificateRotation(t *testing.T) {
	s := ready(t, topology())
	before := map[string][]byte{}
	for name, p := range s.out.Plans {
		for _, f := range p.Files {
			if strings.HasSuffix(f.Path, ".crt") && !strings.HasSuffix(f.Path, "ca.crt") {
				before[name+f.Path] = f.Content
			}
		}
	}
	s.in.Cluster.CertificatesGeneration = 1
	out := s.step()
	if out.Rollout == nil || out.Rollout.Kind != "CertificateRotation" || !slices.Equal(out.Rollout.Nodes, []string{"c1-etcd-1"}) {
		t.Fatalf("rollout %+v", out.Rollout)
	}
	changed := func(name string) bool {
		for _, f := range s.out.Plans[name].Files {
			if old, ok := before[name+f.Path]; ok && string(old) != string(f.Content) {
				return true
			}
		}
		return false
	}
	if !changed("c1-etcd-1") || changed("c1-etcd-2") || changed("c1-cp-1") {
		t.Fatal("the first step changes more than etcd-1's certificates")
	}
	// etcd starts again, to read them.
	if env := s.out.Plans["c1-etcd-1"].Processes[0].Env; !slices.Contains(env, "DROVER_CERTIFICATES_GENERATION=1") {
		t.Fatalf("etcd-1's etcd env %v", env)
	}
	for range 30 {
		if s.step().Rollout == nil {
			break
		}
	}
	for name := range s.out.Plans {
		if !changed(name) {
			t.Errorf("%s kept its certificates", name)
		}
	}
	if s.out.Tier != TierReady {
		t.Fatalf("tier %s", s.out.Tier)
	}
}

// A restore stops every etcd member and API server, restores on the node that holds
// the snapshot, and the other members join it again one by one.
func TestRestore(t *testing.T) {
	s := ready(t, topology())
	s.in.Restore = &Restore{Generation: 1, Phase: RestoreStop, Node: "c1-etcd-2", Path: "/var/lib/drover-cluster/etcd-snapshots/x.db"}
	out := s.step()
	for _, name := range []string{"c1-etcd-1", "c1-cp-1"} {
		if got := processes(out.Plans[name]); len(got) != 0 {
			t.Fatalf("%s runs %v while stopped", name, got)
		}
	}
	if got := processes(out.Plans["c1-w-1"]); !slices.Contains(got, "kubelet") {
		t.Fatalf("worker runs %v", got)
	}
	s.step()
	if !s.out.Stopped {
		t.Fatal("not stopped")
	}
	s.in.Restore.Phase = RestoreEtcd
	s.in.Members = []string{"c1-etcd-2"} // as the caller starts the phase
	out = s.step()
	if !slices.Equal(out.Members, []string{"c1-etcd-2"}) {
		t.Fatalf("members %v", out.Members)
	}
	names := func(name string) []string {
		var n []string
		for _, in := range out.Plans[name].Instructions {
			n = append(n, in.Name)
		}
		return n
	}
	if got := names("c1-etcd-2"); !slices.Contains(got, "etcd-restore") {
		t.Fatalf("etcd-2 instructions %v", got)
	}
	if got := names("c1-etcd-1"); !slices.Equal(got, []string{"etcd-reset"}) {
		t.Fatalf("etcd-1 instructions %v", got)
	}
	if got := processes(out.Plans["c1-cp-1"]); len(got) != 0 {
		t.Fatalf("cp-1 runs %v before etcd is whole", got)
	}
	// Workers keep running through the whole restore.
	if got := processes(out.Plans["c1-w-1"]); !slices.Contains(got, "kubelet") {
		t.Fatalf("worker runs %v while etcd is restored", got)
	}
	for range 12 {
		s.step()
	}
	if !slices.Equal(s.out.Members, []string{"c1-etcd-2", "c1-etcd-1", "c1-etcd-3"}) || s.out.Tier != TierReady {
		t.Fatalf("members %v tier %s waiting %q", s.out.Members, s.out.Tier, s.out.Waiting)
	}
	if got := arg(s.out.Plans["c1-etcd-1"], "etcd", "--initial-cluster-state"); got != "existing" {
		t.Fatalf("etcd-1 rejoins with %q", got)
	}
}

// Removing an etcd member: another member removes it from etcd, then it gets an
// empty plan.
func TestMemberRemoval(t *testing.T) {
	s := ready(t, topology())
	s.in.Nodes[2].Removing = true // c1-etcd-3
	out := s.step()
	if out.MemberRemoval != "c1-etcd-1" || len(out.Plans["c1-etcd-3"].Processes) == 0 {
		t.Fatalf("removal by %q; etcd-3 runs %v", out.MemberRemoval, processes(out.Plans["c1-etcd-3"]))
	}
	s.in.Nodes[2].MemberRemoved = true
	out = s.step()
	if len(out.Plans["c1-etcd-3"].Processes) != 0 || slices.Contains(out.Members, "c1-etcd-3") || out.MemberRemoval != "" {
		t.Fatalf("etcd-3 runs %v, members %v", processes(out.Plans["c1-etcd-3"]), out.Members)
	}
	s.in.Nodes[6].Removing = true // c1-w-2
	out = s.step()
	if len(out.Plans["c1-w-2"].Processes) != 0 {
		t.Fatalf("w-2 runs %v", processes(out.Plans["c1-w-2"]))
	}
}

// A snapshot is an instruction on the member that takes it, naming the snapshot.
func TestSnapshot(t *testing.T) {
	s := ready(t, topology())
	s.in.Snapshot = &Snapshot{Name: "c1-20261126-120000", Node: "c1-etcd-1", Retention: 3}
	out := s.step()
	p := out.Plans["c1-etcd-1"]
	if len(p.Instructions) == 0 || p.Instructions[len(p.Instructions)-1].Name != "etcd-snapshot" {
		t.Fatalf("instructions %+v", p.Instructions)
	}
	script := p.Instructions[len(p.Instructions)-1].Args[1]
	if !strings.Contains(script, "snapshot save /var/lib/drover-cluster/etcd-snapshots/c1-20261126-120000.db.part") || !strings.Contains(script, "tail -n +4") {
		t.Fatal(script)
	}
	if _, err := Plan(Input{Cluster: s.in.Cluster, Nodes: s.in.Nodes, Certs: s.in.Certs, Members: s.in.Members, Now: now, Reached: s.in.Reached,
		Snapshot: &Snapshot{Name: "x", Node: "c1-w-1"}}); err == nil {
		t.Fatal("a worker took a snapshot")
	}
}

func TestQuorumRefusal(t *testing.T) {
	all := func(string) bool { return true }
	for _, tc := range []struct {
		member  string
		members []string
		healthy func(string) bool
		refused string
	}{
		{"a", []string{"a", "b", "c"}, all, ""},
		{"a", []string{"a", "b"}, all, "would leave 1 of 2 members"},
		{"a", []string{"a"}, all, "would leave 0 of 1 members"},
		{"a", []string{"a", "b", "c"}, func(m string) bool { return m != "b" }, "would leave 1 healthy members of 3"},
		{"a", []string{"a", "b", "c", "d", "e"}, func(m string) bool { return m != "b" }, ""},
	} {
		got := QuorumRefusal(tc.member, tc.members, tc.healthy)
		if (tc.refused == "") != (got == "") || !strings.Contains(got, tc.refused) {
			t.Errorf("removing %s of %v: %q, want %q", tc.member, tc.members, got, tc.refused)
		}
	}
}

// With drain, a worker moves only once it is drained, and the rollout asks for it.
func TestUpgradeDrainsWorkers(t *testing.T) {
	s := ready(t, topology())
	s.in.Cluster.KubernetesVersion = "v1.36.4"
	s.in.Drain = true
	for range 20 {
		if out := s.step(); out.Rollout != nil && out.Rollout.Phase == "workers" {
			break
		}
	}
	out := s.step()
	if out.Rollout == nil || !slices.Equal(out.Rollout.Drain, []string{"c1-w-1"}) || versions(s)["c1-w-1"] == "v1.36.4" {
		t.Fatalf("rollout %+v, versions %v", out.Rollout, versions(s))
	}
	s.in.Drained = map[string]bool{"c1-w-1": true}
	s.step()
	if versions(s)["c1-w-1"] != "v1.36.4" || versions(s)["c1-w-2"] == "v1.36.4" {
		t.Fatalf("versions %v", versions(s))
	}
}

// With S3, the member that takes the snapshot also uploads it, and the one that
// restores it downloads it first; the credentials reach only that node, in a
// file of its plan that only root reads, never in a command line.
func TestSnapshotS3(t *testing.T) {
	store := &snapshotstore.Config{Endpoint: "s3.example.com", Bucket: "etcd", Folder: "c1", AccessKeyID: "AKID", SecretAccessKey: "s3cr3t-value"}
	s := ready(t, topology())
	s.in.Snapshot = &Snapshot{Name: "c1-20261126-120000", Node: "c1-etcd-1", Retention: 3, S3: store}
	out := s.step()
	checkS3 := func(node, instruction string, want ...string) {
		t.Helper()
		p := out.Plans[node]
		i := slices.IndexFunc(p.Instructions, func(in nodeplan.Instruction) bool { return in.Name == instruction })
		if i < 0 {
			t.Fatalf("%s has no %s: %+v", node, instruction, p.Instructions)
		}
		script := p.Instructions[i].Args[1]
		for _, w := range want {
			if !strings.Contains(script, w) {
				t.Fatalf("%s script lacks %q:\n%s", instruction, w, script)
			}
		}
		raw, _ := json.Marshal(p.Instructions)
		if strings.Contains(string(raw), "s3cr3t-value") {
			t.Fatal("the secret is in an instruction")
		}
		f := slices.IndexFunc(p.Files, func(f nodeplan.File) bool { return f.Path == "/etc/drover/etcd-snapshot-s3.json" })
		if f < 0 || p.Files[f].Mode != 0o600 {
			t.Fatalf("%s: no S3 configuration file with mode 0600: %+v", node, p.Files)
		}
		var got snapshotstore.Config
		if err := json.Unmarshal(p.Files[f].Content, &got); err != nil || got != *store {
			t.Fatalf("configuration file %+v (%v)", got, err)
		}
		for other, op := range out.Plans {
			if other != node && slices.ContainsFunc(op.Files, func(f nodeplan.File) bool { return strings.Contains(f.Path, "s3") }) {
				t.Fatalf("%s also holds the S3 credentials", other)
			}
		}
	}
	checkS3("c1-etcd-1", "etcd-snapshot",
		`"${DROVER_BIN:?the node agent is too old for etcdSnapshotS3}" etcd-snapshot-s3 upload --config=/etc/drover/etcd-snapshot-s3.json --file=/var/lib/drover-cluster/etcd-snapshots/c1-20261126-120000.db --name=c1-20261126-120000 --cluster=c1 --retention=3`)
	// The local clean-up runs before the upload: a failing upload leaves no
	// more than Retention files behind.
	script := out.Plans["c1-etcd-1"].Instructions[len(out.Plans["c1-etcd-1"].Instructions)-1].Args[1]
	if strings.Index(script, "xargs -r rm -f") > strings.Index(script, "upload") {
		t.Fatalf("the clean-up runs after the upload:\n%s", script)
	}

	// Restore: the snapshot is downloaded while everything still runs, then the
	// control plane stops, then the downloaded file is restored.
	s.in.Snapshot = nil
	s.in.Restore = &Restore{Generation: 1, Phase: RestoreDownload, Node: "c1-etcd-3", Name: "c1-20261126-120000", S3: store}
	out = s.step()
	checkS3("c1-etcd-3", "etcd-snapshot-download",
		`"${DROVER_BIN:?the node agent is too old for etcdSnapshotS3}" etcd-snapshot-s3 download --config=/etc/drover/etcd-snapshot-s3.json --file=/var/lib/drover-cluster/etcd-restore/c1-20261126-120000.db --name=c1-20261126-120000`)
	for _, name := range []string{"c1-etcd-1", "c1-etcd-3", "c1-cp-1"} {
		if got := processes(out.Plans[name]); len(got) == 0 {
			t.Fatalf("%s stopped while the snapshot downloads", name)
		}
	}
	s.in.Restore.Phase = RestoreStop
	s.step()
	s.step()
	s.in.Restore.Phase = RestoreEtcd
	s.in.Members = []string{"c1-etcd-3"}
	out = s.step()
	p := out.Plans["c1-etcd-3"]
	restore := p.Instructions[slices.IndexFunc(p.Instructions, func(in nodeplan.Instruction) bool { return in.Name == "etcd-restore" })].Args[1]
	for _, w := range []string{"snapshot restore /var/lib/drover-cluster/etcd-restore/c1-20261126-120000.db", "rm -f /var/lib/drover-cluster/etcd-restore/c1-20261126-120000.db"} {
		if !strings.Contains(restore, w) {
			t.Fatalf("restore script lacks %q:\n%s", w, restore)
		}
	}
	if slices.ContainsFunc(p.Files, func(f nodeplan.File) bool { return strings.Contains(f.Path, "s3") }) {
		t.Fatal("the S3 credentials stay on the node after the download")
	}

	// A configuration that cannot work is refused by the planner too.
	s.in.Restore = nil
	s.in.Snapshot = &Snapshot{Name: "c1-20261126-130000", Node: "c1-etcd-1", S3: &snapshotstore.Config{Endpoint: "https://s3.example.com", Bucket: "etcd"}}
	if _, err := Plan(s.in); err == nil || !strings.Contains(err.Error(), "without a scheme") {
		t.Fatalf("err = %v", err)
	}
}

// In a stacked cluster (etcd and control plane on the same nodes) each API server
// talks to its own member, so removing another member changes no API server's
// plan: they do not all restart at once.
func TestStackedControlPlanesSurviveMembershipChanges(t *testing.T) {
	n := func(name, addr string, roles ...Role) Node {
		return Node{Name: "c1-" + name, Hostname: name, Address: addr, Roles: roles, Healthy: map[string]bool{}}
	}
	s := ready(t, []Node{n("m-1", "10.0.0.11", RoleEtcd, RoleControlPlane), n("m-2", "10.0.0.12", RoleEtcd, RoleControlPlane),
		n("m-3", "10.0.0.13", RoleEtcd, RoleControlPlane), n("w-1", "10.0.0.31", RoleWorker)})
	before := map[string]string{}
	for _, name := range []string{"c1-m-1", "c1-m-2"} {
		before[name] = arg(s.out.Plans[name], "kube-apiserver", "--etcd-servers")
	}
	if before["c1-m-1"] != "https://10.0.0.11:2379" || before["c1-m-2"] != "https://10.0.0.12:2379" {
		t.Fatalf("etcd servers %v", before)
	}
	apiserver := func(p *nodeplan.Plan) string {
		for _, pr := range p.Processes {
			if pr.Name == "kube-apiserver" {
				b, _ := json.Marshal(pr)
				return string(b)
			}
		}
		return ""
	}
	was := map[string]string{"c1-m-1": apiserver(s.out.Plans["c1-m-1"]), "c1-m-2": apiserver(s.out.Plans["c1-m-2"])}
	s.in.Nodes[2].Removing = true
	s.step()
	s.in.Nodes[2].MemberRemoved = true
	out := s.step()
	if slices.Contains(out.Members, "c1-m-3") {
		t.Fatalf("members %v", out.Members)
	}
	for name, w := range was {
		if got := apiserver(out.Plans[name]); got != w {
			t.Fatalf("%s's API server changed with the membership:\n%s\n%s", name, w, got)
		}
	}
}

// The plans say when the first certificate in use ends; a rotation issues every
// one anew, so that afterwards none ends soon (the controller rotates when one
// would, and must not find one still ending soon after).
func TestCertificatesExpire(t *testing.T) {
	s := ready(t, topology())
	if want := now.Add(leafValidity); !s.out.CertificatesExpire.Equal(want) {
		t.Fatalf("certificates expire %v, want %v", s.out.CertificatesExpire, want)
	}
	later := now.Add(leafValidity - 45*24*time.Hour)
	s.in.Now = later
	s.step()
	if !s.out.CertificatesExpire.Equal(now.Add(leafValidity)) || s.out.CertsChanged {
		t.Fatalf("45 days before their end: expire %v, changed %v", s.out.CertificatesExpire, s.out.CertsChanged)
	}
	s.in.Cluster.CertificatesGeneration = 1
	for range 20 {
		s.step()
	}
	if s.out.Rollout != nil {
		t.Fatalf("rotation still under way: %+v", s.out.Rollout)
	}
	if want := later.Add(leafValidity); !s.out.CertificatesExpire.Equal(want) {
		t.Fatalf("after the rotation the first certificate ends %v, want %v", s.out.CertificatesExpire, want)
	}
}

// Removing the first etcd member changes the others' join instructions, which then
// run again before their etcd starts again: they must find the node a member
// without a leader (a serializable read), or the cluster never gets one back.
func TestRemovingTheFirstMemberNeedsNoLeaderToRejoin(t *testing.T) {
	s := ready(t, topology())
	s.in.Nodes[0].Removing = true // c1-etcd-1, the first member
	s.step()
	s.in.Nodes[0].MemberRemoved = true
	out := s.step()
	if slices.Contains(out.Members, "c1-etcd-1") {
		t.Fatalf("members %v", out.Members)
	}
	for _, name := range out.Members[1:] {
		p := out.Plans[name]
		i := slices.IndexFunc(p.Instructions, func(in nodeplan.Instruction) bool { return in.Name == "etcd-member-add" })
		if i < 0 || !strings.Contains(p.Instructions[i].Args[1], "member list --consistency=s |") {
			t.Fatalf("%s: join instruction %+v", name, p.Instructions)
		}
	}
}
