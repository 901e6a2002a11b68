package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/planner"
	"github.com/drover-io/drover/snapshotstore"
)

func TestSnapshotDue(t *testing.T) {
	created := time.Date(2026, 11, 26, 10, 7, 0, 0, time.UTC)
	at := func(h, m int) time.Time { return time.Date(2026, 11, 26, h, m, 0, 0, time.UTC) }
	snap := func(tm time.Time) []v1alpha1.EtcdSnapshot {
		t := metav1.NewTime(tm)
		return []v1alpha1.EtcdSnapshot{{Name: "s", CreatedAt: &t}}
	}
	for _, tc := range []struct {
		name      string
		schedule  string
		snapshots []v1alpha1.EtcdSnapshot
		now       time.Time
		due       bool
		next      time.Time
		err       string
	}{
		{"not yet", "0 */6 * * *", nil, at(11, 0), false, at(12, 0), ""},
		{"due since the first slot after creation", "0 */6 * * *", nil, at(12, 1), true, at(18, 0), ""},
		{"taken", "0 */6 * * *", snap(at(12, 1)), at(13, 0), false, at(18, 0), ""},
		{"missed several: one now", "@hourly", snap(at(11, 0)), at(15, 30), true, at(16, 0), ""},
		{"bad", "61 * * * *", nil, at(11, 0), false, time.Time{}, "spec.provisioning.etcdSnapshotSchedule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, next, err := snapshotDue(tc.schedule, created, tc.snapshots, tc.now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil || due != tc.due || !next.Equal(tc.next) {
				t.Fatalf("due %v next %v err %v; want %v %v", due, next, err, tc.due, tc.next)
			}
		})
	}
}

func TestKeptSnapshots(t *testing.T) {
	s3 := func(name, folder string) v1alpha1.EtcdSnapshot {
		return v1alpha1.EtcdSnapshot{Name: name, Node: "n1", S3: &v1alpha1.EtcdSnapshotS3Location{Endpoint: "s3", Bucket: "b", Key: folder + "/" + name + ".db"}}
	}
	local := func(name, node string) v1alpha1.EtcdSnapshot { return v1alpha1.EtcdSnapshot{Name: name, Node: node} }
	names := func(s []v1alpha1.EtcdSnapshot) string {
		var n []string
		for _, x := range s {
			n = append(n, x.Name)
		}
		return strings.Join(n, ",")
	}
	for _, tc := range []struct {
		name string
		in   []v1alpha1.EtcdSnapshot
		want string
	}{
		{"per node", []v1alpha1.EtcdSnapshot{local("a", "n1"), local("b", "n2"), local("c", "n1"), local("d", "n1")}, "b,c,d"},
		{"s3 counts apart from the node", []v1alpha1.EtcdSnapshot{s3("a", "f"), local("b", "n1"), s3("c", "f"), s3("d", "f"), local("e", "n1")}, "b,c,d,e"},
		{"per folder", []v1alpha1.EtcdSnapshot{s3("a", "f"), s3("b", "g"), s3("c", "f"), s3("d", "f")}, "b,c,d"},
	} {
		if got := names(keptSnapshots(tc.in, 2)); got != tc.want {
			t.Errorf("%s: kept %s, want %s", tc.name, got, tc.want)
		}
	}
}

// A snapshot in S3 is restored by its node if it is still a member, else by
// another member; the spec's credentials go only to the endpoint they are for.
func TestRestoreFromS3(t *testing.T) {
	node := func(name string, deleting bool) v1alpha1.ClusterNode {
		n := v1alpha1.ClusterNode{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if deleting {
			now := metav1.Now()
			n.DeletionTimestamp = &now
		}
		return n
	}
	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "c1"}, Spec: v1alpha1.ManagedClusterSpec{Provisioning: &v1alpha1.ProvisioningSpec{
		EtcdSnapshotS3: &v1alpha1.EtcdSnapshotS3{Endpoint: "s3.example.com", Bucket: "new", Folder: "now", Region: "eu-west-1"}}}}
	d := &day2{mc: mc, status: &v1alpha1.ProvisioningStatus{EtcdMembers: []string{"c1-a", "c1-b", "c1-c"}},
		nodes: []v1alpha1.ClusterNode{node("c1-a", true), node("c1-b", false), node("c1-c", false)}}
	d.s3 = &snapshotstore.Config{Endpoint: "s3.example.com", Bucket: "new", Folder: "now", Region: "eu-west-1", AccessKeyID: "AKID", SecretAccessKey: "secret"}
	snap := v1alpha1.EtcdSnapshot{Name: "c1-20261126-120000", Node: "c1-gone",
		S3: &v1alpha1.EtcdSnapshotS3Location{Endpoint: "s3.example.com", Bucket: "old", Key: "then/c1-20261126-120000.db"}}

	if n, problem := d.restoreNode(snap); n != "c1-b" || problem != "" {
		t.Fatalf("restored by %q (%s), want c1-b, the first member that is not leaving", n, problem)
	}
	snap.Node = "c1-c"
	if n, _ := d.restoreNode(snap); n != "c1-c" {
		t.Fatalf("restored by %q, want its own node c1-c", n)
	}
	cfg := d.restoreS3(snap)
	if cfg.Bucket != "old" || cfg.Folder != "then" || cfg.AccessKeyID != "AKID" || cfg.Region != "eu-west-1" {
		t.Fatalf("config %+v", cfg)
	}
	snap.S3 = &v1alpha1.EtcdSnapshotS3Location{Endpoint: "elsewhere.example.com", Bucket: "old", Key: "c1-20261126-120000.db"}
	if cfg := d.restoreS3(snap); cfg.AccessKeyID != "" || cfg.Endpoint != "elsewhere.example.com" || cfg.Folder != "" {
		t.Fatalf("credentials went to another endpoint: %+v", cfg)
	}

	local := v1alpha1.EtcdSnapshot{Name: "c1-20261126-120000", Node: "c1-a"}
	if _, problem := d.restoreNode(local); !strings.Contains(problem, "no longer an etcd member") {
		t.Fatalf("problem %q", problem)
	}
	d.s3Problem = "spec.provisioning.etcdSnapshotS3.credentialsSecretRef: Secret drover-system/x does not exist"
	if _, problem := d.restoreNode(snap); !strings.Contains(problem, "does not exist") || !strings.Contains(problem, "s3://old/c1-20261126-120000.db") {
		t.Fatalf("problem %q", problem)
	}
}

// Certificates that end within 60 days start a rotation, once, and only when no
// other operation or rollout runs.
func TestCertificatesRenewedBeforeTheyEnd(t *testing.T) {
	now := time.Date(2027, 10, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		expire  time.Time
		op      *v1alpha1.ProvisioningOperation
		rollout *planner.Rollout
		tier    string
		renew   bool
	}{
		{"61 days left", now.Add(61 * 24 * time.Hour), nil, nil, string(planner.TierReady), false},
		{"59 days left", now.Add(59 * 24 * time.Hour), nil, nil, string(planner.TierReady), true},
		{"already ended", now.Add(-time.Hour), nil, nil, string(planner.TierReady), true},
		{"not built yet", now.Add(59 * 24 * time.Hour), nil, nil, string(planner.TierWorkers), false},
		{"another operation", now.Add(59 * 24 * time.Hour), &v1alpha1.ProvisioningOperation{Type: v1alpha1.OperationEtcdSnapshot}, nil, string(planner.TierReady), false},
		{"a rollout under way", now.Add(59 * 24 * time.Hour), nil, &planner.Rollout{Kind: "Upgrade"}, string(planner.TierReady), false},
		{"nothing issued", time.Time{}, nil, nil, string(planner.TierReady), false},
		{"a node unhealthy", now.Add(59 * 24 * time.Hour), nil, nil, "unsettled", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := int64(3)
			mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "c1"}, Spec: v1alpha1.ManagedClusterSpec{
				Provisioning: &v1alpha1.ProvisioningSpec{KubernetesVersion: "v1.36.3"}}}
			d := &day2{mc: mc, now: now, results: map[string]metav1.Condition{},
				status: &v1alpha1.ProvisioningStatus{ReachedTier: tc.tier, CertificatesGeneration: &g, Operation: tc.op}}
			settled := tc.tier != "unsettled"
			if !settled {
				d.status.ReachedTier = string(planner.TierReady)
			}
			changed, err := d.advance(context.Background(), nil, &planner.Output{CertificatesExpire: tc.expire, Rollout: tc.rollout, Settled: settled})
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.renew || (gen(d.status.CertificatesGeneration) == 4) != tc.renew {
				t.Fatalf("changed %v, generation %d; want renewal %v", changed, gen(d.status.CertificatesGeneration), tc.renew)
			}
			if tc.renew && (len(d.events) != 1 || d.events[0].reason != "CertificatesExpiring") {
				t.Fatalf("events %+v", d.events)
			}
		})
	}
}

// A scheduled snapshot that failed is tried again at the next time the schedule
// names, not at once: a broken storage must not have the node save snapshot after
// snapshot.
func TestFailedScheduledSnapshotWaitsForTheNextSlot(t *testing.T) {
	created := metav1.NewTime(time.Date(2026, 11, 26, 10, 7, 0, 0, time.UTC))
	attempt := metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 30, 0, time.UTC))
	now := time.Date(2026, 11, 26, 12, 10, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		attempt *metav1.Time
		begins  bool
	}{
		{"never tried: due", nil, true},
		{"tried at 12:00 and failed: waits for 13:00", &attempt, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "c1", CreationTimestamp: created}, Spec: v1alpha1.ManagedClusterSpec{
				Provisioning: &v1alpha1.ProvisioningSpec{KubernetesVersion: "v1.36.3", EtcdSnapshotSchedule: "@hourly"}}}
			zero := int64(0)
			d := &day2{mc: mc, now: now, results: map[string]metav1.Condition{}, status: &v1alpha1.ProvisioningStatus{
				ReachedTier: string(planner.TierReady), EtcdSnapshotScheduledAt: tc.attempt,
				EtcdSnapshotCreateGeneration: &zero, EtcdSnapshotRestoreGeneration: &zero, RotateCertificatesGeneration: &zero, CertificatesGeneration: &zero}}
			d.start(nil)
			// With no healthy member the snapshot fails at once; what matters is
			// whether one was attempted, which records the attempt.
			attempted := d.status.EtcdSnapshotScheduledAt != nil && !d.status.EtcdSnapshotScheduledAt.Equal(tc.attempt)
			if attempted != tc.begins {
				t.Fatalf("attempted %v, want %v (results %v)", attempted, tc.begins, d.results)
			}
			if !tc.begins && !d.nextSnapshot.Equal(time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)) {
				t.Fatalf("next snapshot %v", d.nextSnapshot)
			}
		})
	}
}
