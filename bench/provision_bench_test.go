package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/internal/hosts"
	"github.com/drover-io/drover/planner"
)

// BenchmarkProvision measures building a cluster, as a user does it: kubectl apply
// of a ManagedCluster with spec.provisioning, then the registration command run on
// seven hosts (network and mount namespaces of this machine, package internal/hosts)
// with their roles: three etcd, two control planes, two workers. It reports the time
// from the apply to each tier and to Ready (every node running its whole plan, every
// probe healthy), and to the hub's Connected=True.
//
// Target: Ready within 3 minutes on 2 cores. Needs root; skipped otherwise.
func BenchmarkProvision(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the hosts are namespaces of this machine")
	}
	hosts.Require(b, "containerd", "ctr", "runc", "cni", "iptables")
	const version = "v1.36.3"
	names := []string{"etcd-0", "etcd-1", "etcd-2", "cp-0", "cp-1", "worker-0", "worker-1"}
	set := hosts.NewForTest(b, len(names), hosts.Options{Names: names})
	artifacts := hosts.ArtifactSource(b, version, planner.PauseImage)
	drover := hosts.BuildDrover(b)
	e := setup(b, 0)
	hubAddr := set.FreeGatewayAddr(b)
	e.startManagerWith(b, hubAddr, "--artifacts-dir="+artifacts, "--node-agent-binary="+drover)
	ctx := context.Background()

	b.ResetTimer()
	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "bench-edge"}, Spec: v1alpha1.ManagedClusterSpec{
		Provisioning: &v1alpha1.ProvisioningSpec{KubernetesVersion: version}}}
	if err := e.hubc.Create(ctx, mc); err != nil {
		b.Fatal(err)
	}
	applied := time.Now()
	b.Cleanup(func() {
		// Deprovision, and wait for it, so the hosts' teardown finds nothing running.
		_ = e.hubc.Delete(ctx, mc)
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			if err := e.hubc.Get(ctx, client.ObjectKeyFromObject(mc), &v1alpha1.ManagedCluster{}); err != nil {
				return
			}
		}
	})
	command := ""
	for command == "" {
		if time.Since(applied) > time.Minute {
			b.Fatal("no registration command after a minute")
		}
		if err := e.hubc.Get(ctx, client.ObjectKeyFromObject(mc), mc); err == nil && mc.Status.Provisioning != nil {
			command = mc.Status.Provisioning.RegistrationCommand
		}
		time.Sleep(20 * time.Millisecond)
	}
	install := strings.Replace(command, "--roles etcd,control-plane,worker", "", 1)
	roles := map[string]string{"etcd": "etcd", "cp": "control-plane", "worker": "worker"}
	for _, h := range set.Hosts {
		cmd := h.Command(ctx, "sh", "-c", install+" --roles "+roles[strings.SplitN(h.Name, "-", 2)[0]]+" --kubelet-cgroup-root "+h.Cgroup())
		cmd.Dir = b.TempDir()
		if _, err := h.StartCommand(cmd); err != nil {
			b.Fatal(err)
		}
	}
	tiers := map[string]time.Duration{}
	var connected time.Duration
	for connected == 0 || tiers[string(planner.TierReady)] == 0 {
		if time.Since(applied) > 6*time.Minute {
			b.Fatalf("not Ready after 6 minutes: %+v", mc.Status.Provisioning)
		}
		if err := e.hubc.Get(ctx, client.ObjectKeyFromObject(mc), mc); err != nil {
			b.Fatal(err)
		}
		if p := mc.Status.Provisioning; p != nil && p.Tier != "" {
			if _, ok := tiers[p.Tier]; !ok {
				tiers[p.Tier] = time.Since(applied)
				b.Logf("%6.1fs tier %s", time.Since(applied).Seconds(), p.Tier)
			}
		}
		for _, c := range mc.Status.Conditions {
			if c.Type == v1alpha1.ConnectedCondition && c.Status == metav1.ConditionTrue && connected == 0 {
				connected = time.Since(applied)
				b.Logf("%6.1fs Connected", connected.Seconds())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.StopTimer()
	for _, t := range []planner.Tier{planner.TierEtcdJoin, planner.TierControlPlane, planner.TierWorkers, planner.TierReady} {
		b.ReportMetric(tiers[string(t)].Seconds(), strings.ToLower(string(t))+"-s")
	}
	b.ReportMetric(connected.Seconds(), "connected-s")
	b.Logf("3 etcd + 2 control-plane + 2 worker nodes: Ready %.1f s after kubectl apply (etcd joining from %.1f s, control planes from %.1f s, workers from %.1f s), hub Connected at %.1f s",
		tiers[string(planner.TierReady)].Seconds(), tiers[string(planner.TierEtcdJoin)].Seconds(), tiers[string(planner.TierControlPlane)].Seconds(),
		tiers[string(planner.TierWorkers)].Seconds(), connected.Seconds())
}
