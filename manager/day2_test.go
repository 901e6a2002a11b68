package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controllers"
	"github.com/drover-io/drover/controlplane"
	"github.com/drover-io/drover/internal/fakes3"
	"github.com/drover-io/drover/internal/hosts"
	"github.com/drover-io/drover/planner"
)

// upgradeFrom is the release TestDay2 builds its cluster at before upgrading it to
// provisionVersion; `KUBE_VERSION=v1.36.1 hack/kubebin.sh node` builds it.
const upgradeFrom = "v1.36.1"

// TestDay2 runs the day-2 operations on a real provisioned cluster of four hosts
// (three etcd + control-plane, one worker), as a user would, by editing the
// ManagedCluster: a certificate rotation (new serials on every node), an etcd
// snapshot stored in S3 and its restore from there (a ConfigMap written after the
// snapshot is gone), an upgrade across a patch release with concurrency 1 (the API
// never out for longer than one control-plane restart), and the removal of an etcd node (two healthy
// members left; removing another, which would break quorum, is refused).
func TestDay2(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	if testing.Short() {
		t.Skip("builds a 4-node cluster and operates it")
	}
	hosts.RequireRoot(t)
	hosts.Require(t, "containerd", "ctr", "runc", "cni", "iptables")
	g := NewWithT(t)
	ctx := context.Background()
	start := time.Now()
	names := []string{"m-0", "m-1", "m-2", "worker-0"}
	set := hosts.NewForTest(t, len(names), hosts.Options{Names: names})
	artifacts := hosts.ArtifactSource(t, provisionVersion, planner.PauseImage)
	g.Expect(hosts.WriteArtifactSource(artifacts, hosts.NodeBinDirVersion(t, upgradeFrom), upgradeFrom, planner.PauseImage)).To(Succeed())
	drover := hosts.BuildDrover(t)
	t.Logf("%5.1fs hosts, artifact source (%s and %s) and drover ready", time.Since(start).Seconds(), upgradeFrom, provisionVersion)

	hub, _, hc := startBareHub(t, "day2-hub", DefaultNamespace)
	hubAddr := set.FreeGatewayAddr(t)
	e := &hubEnv{cp: hub, c: hc}
	// With the admission webhook, which refuses a removal that would break etcd's
	// quorum, and an upgrade that skips a minor version for some node.
	webhookAddr := freeAddr(t)
	managerArgs := []string{"--artifacts-dir=" + artifacts, "--node-agent-binary=" + drover, "--zap-log-level=info",
		"--webhook-bind-address=" + webhookAddr, "--webhook-url=https://" + webhookAddr}
	stopManager := e.startManager(t, hubAddr, managerArgs...)

	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "day2"}, Spec: v1alpha1.ManagedClusterSpec{
		Provisioning: &v1alpha1.ProvisioningSpec{KubernetesVersion: upgradeFrom,
			UpgradeStrategy: &v1alpha1.UpgradeStrategy{ControlPlaneConcurrency: 1, WorkerConcurrency: ptrIntStr(intstr.FromInt32(1))}}}}
	g.Expect(hc.Create(ctx, mc)).To(Succeed())
	var command string
	g.Eventually(func(g Gomega) {
		g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		g.Expect(mc.Status.Provisioning).NotTo(BeNil())
		command = mc.Status.Provisioning.RegistrationCommand
		g.Expect(command).NotTo(BeEmpty())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	install := strings.Replace(command, "--roles etcd,control-plane,worker", "", 1)
	var agents []*hosts.Process
	for _, h := range set.Hosts {
		role := "etcd,control-plane"
		if h.Name == "worker-0" {
			role = "worker"
		}
		cmd := h.Command(ctx, "sh", "-c", install+" --roles "+role+" --kubelet-cgroup-root "+h.Cgroup())
		cmd.Dir = t.TempDir()
		p, err := h.StartCommand(cmd)
		g.Expect(err).NotTo(HaveOccurred())
		agents = append(agents, p)
	}
	agentLogs := func() string {
		var b strings.Builder
		for i, p := range agents {
			out := p.Output()
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			fmt.Fprintf(&b, "\n--- node agent on %s (last lines):\n%s", set.Hosts[i].Name, out)
		}
		return b.String()
	}
	applied := time.Now()
	waitDay2 := func(what string, timeout time.Duration, check func(g Gomega, mc *v1alpha1.ManagedCluster)) {
		t.Helper()
		began := time.Now()
		var last string
		g.Eventually(func(g Gomega) {
			g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			if op := mc.Status.Provisioning.Operation; op != nil {
				if s := op.Type + " " + op.Phase + " " + op.Node + ": " + op.Message; s != last {
					last = s
					t.Logf("%5.1fs %s: %s", time.Since(began).Seconds(), what, s)
				}
			}
			check(g, mc)
		}, timeout, time.Second).Should(Succeed(), func() string {
			var list v1alpha1.ClusterNodeList
			_ = hc.List(ctx, &list)
			var b strings.Builder
			for _, n := range list.Items {
				b.WriteString(n.Name + " plan " + n.Status.PlanChecksum + " applied " + n.Status.AppliedChecksum + "\n")
			}
			return nodeReport(ctx, hc) + b.String() + agentLogs()
		})
		t.Logf("%s: %s", what, time.Since(began).Round(100*time.Millisecond))
	}
	ready := func(g Gomega, mc *v1alpha1.ManagedCluster) {
		g.Expect(mc.Status.Provisioning.Tier).To(Equal(string(planner.TierReady)), "waiting for %s", mc.Status.Provisioning.Waiting)
		g.Expect(mc.Status.Provisioning.Operation).To(BeNil())
	}
	succeeded := func(cond string) func(g Gomega, mc *v1alpha1.ManagedCluster) {
		return func(g Gomega, mc *v1alpha1.ManagedCluster) {
			c := findCond(mc.Status.Conditions, cond)
			g.Expect(c).NotTo(BeNil(), "condition %s", cond)
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonSucceeded), "%s: %s", cond, c.Message)
			ready(g, mc)
		}
	}
	waitDay2("provisioned at "+upgradeFrom, 6*time.Minute, func(g Gomega, mc *v1alpha1.ManagedCluster) {
		g.Expect(mc.Status.Provisioning.Nodes).To(HaveLen(len(names)), "every host registered")
		ready(g, mc)
	})
	t.Logf("provisioned in %s", time.Since(applied).Round(100*time.Millisecond))

	var kc corev1.Secret
	g.Expect(hc.Get(ctx, client.ObjectKey{Namespace: DefaultNamespace, Name: controllers.ProvisionedKubeconfigSecretName("day2")}, &kc)).To(Succeed())
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc.Data["value"])
	g.Expect(err).NotTo(HaveOccurred())
	cfg.Timeout = 5 * time.Second
	cs := kubernetes.NewForConfigOrDie(cfg)
	bump := func(mutate func(p *v1alpha1.ProvisioningSpec)) {
		t.Helper()
		g.Eventually(func() error {
			if err := hc.Get(ctx, client.ObjectKeyFromObject(mc), mc); err != nil {
				return err
			}
			mutate(mc.Spec.Provisioning)
			return hc.Update(ctx, mc)
		}, 10*time.Second, 200*time.Millisecond).Should(Succeed())
	}

	// runOnWorker runs a pod on the worker, for a drain to evict.
	runOnWorker := func(g Gomega, name string) {
		_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: "worker-0", TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{
				Name: "tiny", Image: hosts.TinyImage, ImagePullPolicy: corev1.PullNever, Args: []string{"serve", ":8080"}}}},
		}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Eventually(func() corev1.PodPhase {
			p, _ := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return p.Status.Phase
		}, 2*time.Minute, time.Second).Should(Equal(corev1.PodRunning))
	}

	outer := t // the manager restarted in a subtest outlives it
	t.Run("certificate rotation gives every node new serials", func(t *testing.T) {
		g := NewWithT(t)
		serials := func() map[string]string {
			out := map[string]string{}
			for _, h := range set.Hosts {
				files := []string{"/etc/drover/pki/apiserver.crt", "/etc/drover/pki/etcd/server.crt", "/etc/drover/pki/etcd/peer.crt"}
				if h.Name == "worker-0" {
					files = []string{"/etc/drover/pki/kubelet.crt"}
				}
				for _, f := range files {
					out[h.Name+":"+f] = serial(t, h.Path(f))
				}
			}
			return out
		}
		before := serials()
		bump(func(p *v1alpha1.ProvisioningSpec) { p.RotateCertificates = &v1alpha1.ActionGeneration{Generation: 1} })
		waitDay2("certificate rotation", 6*time.Minute, succeeded(v1alpha1.RotatingCertificatesCondition))
		after := serials()
		for k, v := range before {
			if after[k] == v {
				t.Errorf("%s kept serial %s", k, v)
			}
		}
		// What runs serves the new certificates: each component started again.
		for _, h := range set.Hosts {
			ports := map[string]string{"6443": "/etc/drover/pki/apiserver.crt", "2379": "/etc/drover/pki/etcd/server.crt"}
			if h.Name == "worker-0" {
				ports = map[string]string{"10250": "/etc/drover/pki/kubelet.crt"}
			}
			for port, file := range ports {
				g.Eventually(func() string { return servedSerial(net.JoinHostPort(h.IP.String(), port)) }, time.Minute, time.Second).
					Should(Equal(after[h.Name+":"+file]), "%s:%s serves the certificate in %s", h.Name, port, file)
			}
		}
	})

	// Snapshots also go to S3-compatible storage, which the nodes reach through
	// their gateway, over HTTPS with a CA of its own.
	store := fakes3.Start(outer, net.JoinHostPort(set.Gateway.String(), "0"), "etcd-backups")
	const s3Key, s3Secret = "AKIDDAY2", "day2-s3-secret-value"
	var snapshot string
	t.Run("snapshot to S3, write, lose the local file, restore from S3: the write is gone", func(t *testing.T) {
		g := NewWithT(t)
		// Credentials that are not there yet: the snapshot fails, naming the field.
		bump(func(p *v1alpha1.ProvisioningSpec) {
			p.EtcdSnapshotS3 = &v1alpha1.EtcdSnapshotS3{Endpoint: store.Endpoint, Bucket: "etcd-backups", Folder: "fleet/day2", Region: "us-east-1",
				CredentialsSecretRef: &v1alpha1.SecretReference{Name: "day2-s3"}, EndpointCA: string(store.CA)}
			p.EtcdSnapshotCreate = &v1alpha1.ActionGeneration{Generation: 1}
		})
		waitDay2("etcd snapshot without credentials", time.Minute, func(g Gomega, mc *v1alpha1.ManagedCluster) {
			c := findCond(mc.Status.Conditions, v1alpha1.SnapshottingEtcdCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(v1alpha1.ReasonFailed))
			g.Expect(c.Message).To(ContainSubstring("spec.provisioning.etcdSnapshotS3.credentialsSecretRef: Secret " + DefaultNamespace + "/day2-s3 does not exist"))
		})
		g.Expect(hc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: DefaultNamespace, Name: "day2-s3"},
			Data: map[string][]byte{"accessKeyID": []byte(s3Key), "secretAccessKey": []byte(s3Secret)}})).To(Succeed())
		bump(func(p *v1alpha1.ProvisioningSpec) { p.EtcdSnapshotCreate = &v1alpha1.ActionGeneration{Generation: 2} })
		waitDay2("etcd snapshot", 3*time.Minute, succeeded(v1alpha1.SnapshottingEtcdCondition))
		g.Expect(mc.Status.Provisioning.EtcdSnapshots).To(HaveLen(1))
		snap := mc.Status.Provisioning.EtcdSnapshots[0]
		snapshot = snap.Name
		g.Expect(snap.Name).To(HavePrefix("day2-"))
		g.Expect(snap.S3).To(Equal(&v1alpha1.EtcdSnapshotS3Location{Endpoint: store.Endpoint, Bucket: "etcd-backups", Key: "fleet/day2/" + snap.Name + ".db"}))
		host := set.Hosts[hostIndex(snap.Node)]
		local, err := os.ReadFile(host.Path(snap.Path))
		g.Expect(err).NotTo(HaveOccurred(), "the snapshot file is on node %s", snap.Node)
		g.Expect(store.Keys(t, "etcd-backups")).To(Equal([]string{snap.S3.Key}))
		g.Expect(bytes.Equal(store.Object(t, "etcd-backups", snap.S3.Key), local)).To(BeTrue(), "the stored snapshot is the node's file")
		g.Expect(store.SignedWith(s3Key)).To(BeTrue(), "the Secret's credentials signed the upload")
		// The credentials leave the node once the snapshot is taken, and are in no
		// event or status.
		g.Eventually(func() bool {
			_, err := os.Stat(host.Path(planner.S3ConfigPath(planner.DefaultLayout)))
			return os.IsNotExist(err)
		}, time.Minute, time.Second).Should(BeTrue(), "the S3 configuration file is removed from node %s", snap.Node)
		g.Expect(day2Events(ctx, hc)).NotTo(ContainSubstring(s3Secret))
		var nodeList v1alpha1.ClusterNodeList
		g.Expect(hc.List(ctx, &nodeList)).To(Succeed())
		raw, _ := json.Marshal(nodeList)
		g.Expect(string(raw)).NotTo(ContainSubstring(s3Secret))
		// The node loses its copy: the restore must come from S3.
		g.Expect(os.Remove(host.Path(snap.Path))).To(Succeed())
		g.Eventually(func() error {
			_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-snapshot"}}, metav1.CreateOptions{})
			return err
		}, time.Minute, time.Second).Should(Succeed())
		bump(func(p *v1alpha1.ProvisioningSpec) {
			p.EtcdSnapshotRestore = &v1alpha1.EtcdSnapshotRestore{Name: snapshot, Generation: 1}
		})
		// The manager is stopped once the restore is under way, and a new one
		// finishes it from what the status holds.
		waitDay2("etcd restore: etcd restored", 3*time.Minute, func(g Gomega, mc *v1alpha1.ManagedCluster) {
			op := mc.Status.Provisioning.Operation
			g.Expect(op).NotTo(BeNil())
			g.Expect(op.Phase).To(Equal(planner.RestoreEtcd))
		})
		stopManager()
		t.Log("manager stopped in the middle of the restore; starting another")
		stopManager = e.startManager(outer, hubAddr, managerArgs...)
		waitDay2("etcd restore", 4*time.Minute, succeeded(v1alpha1.RestoringEtcdCondition))
		g.Eventually(func() bool {
			_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "after-snapshot", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}, time.Minute, time.Second).Should(BeTrue(), "the ConfigMap written after the snapshot is gone")
	})

	t.Run("upgrade across a patch release, one node at a time", func(t *testing.T) {
		g := NewWithT(t)
		stopWatching := watchAPI(func() error { _, err := cs.Discovery().ServerVersion(); return err })
		// A pod on the worker, which the drain evicts before the worker moves.
		g.Eventually(func() error {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		}, time.Minute, time.Second).Should(Succeed())
		runOnWorker(g, "tiny")
		bump(func(p *v1alpha1.ProvisioningSpec) {
			p.KubernetesVersion = provisionVersion
			p.UpgradeStrategy.Drain = true
		})
		waitDay2("upgrade to "+provisionVersion, 8*time.Minute, succeeded(v1alpha1.UpgradingCondition))
		outages := stopWatching()
		for _, h := range set.Hosts[:3] {
			c := *cfg
			c.Host = "https://" + net.JoinHostPort(h.IP.String(), "6443")
			v, err := kubernetes.NewForConfigOrDie(&c).Discovery().ServerVersion()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(v.GitVersion).To(Equal(provisionVersion), "API server on %s", h.Name)
		}
		g.Eventually(func(g Gomega) {
			n, err := cs.CoreV1().Nodes().Get(ctx, "worker-0", metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(n.Status.NodeInfo.KubeletVersion).To(Equal(provisionVersion))
		}, time.Minute, time.Second).Should(Succeed())
		// kubectl get clusternodes shows the version each node runs.
		g.Eventually(func(g Gomega) {
			var list v1alpha1.ClusterNodeList
			g.Expect(hc.List(ctx, &list)).To(Succeed())
			for _, n := range list.Items {
				g.Expect(n.Status.KubernetesVersion).To(Equal(provisionVersion), "ClusterNode %s", n.Name)
			}
		}, time.Minute, time.Second).Should(Succeed())
		// The worker was drained (the pod evicted) and is schedulable again.
		_, err = cs.CoreV1().Pods("default").Get(ctx, "tiny", metav1.GetOptions{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the pod on the worker was evicted: %v", err)
		g.Eventually(func(g Gomega) {
			n, err := cs.CoreV1().Nodes().Get(ctx, "worker-0", metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(n.Spec.Unschedulable).To(BeFalse())
			g.Expect(n.Annotations).NotTo(HaveKey(controllers.CordonedAnnotation))
		}, time.Minute, time.Second).Should(Succeed())
		g.Expect(eventReasons(g, hc, "day2")).To(ContainElements("NodeCordoned", "NodeUncordoned"))
		// The hub reaches the cluster through the first control plane: only its own
		// restart may take the API away, once.
		t.Logf("API outages seen through the hub's endpoint during the upgrade: %v", outages)
		g.Expect(len(outages)).To(BeNumerically("<=", 1), "the API went away more than once: %v", outages)
	})

	t.Run("removing an etcd node leaves two healthy members; another removal is refused", func(t *testing.T) {
		g := NewWithT(t)
		// Each API server talks to its own member: the removal restarts none of
		// those that stay. Reads that reach etcd may fail for the moment etcd
		// takes to elect a leader, when the leaving member led it.
		started := func() map[string]string {
			out := map[string]string{}
			for _, h := range set.Hosts[:2] {
				c := *cfg
				c.Host = "https://" + net.JoinHostPort(h.IP.String(), "6443")
				b, err := kubernetes.NewForConfigOrDie(&c).CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
				g.Expect(err).NotTo(HaveOccurred(), "metrics of the API server on %s", h.Name)
				for _, line := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(line, "process_start_time_seconds ") {
						out[h.Name] = line
					}
				}
				g.Expect(out).To(HaveKey(h.Name), "process_start_time_seconds of the API server on %s", h.Name)
			}
			return out
		}
		before := started()
		stopWatching := watchAPI(func() error {
			_, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			return err
		})
		leaving := &v1alpha1.ClusterNode{ObjectMeta: metav1.ObjectMeta{Name: "day2-m-2"}}
		g.Expect(hc.Delete(ctx, leaving)).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(hc.Get(ctx, client.ObjectKeyFromObject(leaving), leaving))
		}, 4*time.Minute, time.Second).Should(BeTrue(), func() string { return nodeReport(ctx, hc) })
		outages := stopWatching()
		t.Logf("API outages seen through the hub's endpoint during the removal: %v", outages)
		g.Expect(started()).To(Equal(before), "the API servers that stay did not restart")
		for _, o := range outages {
			g.Expect(o).To(BeNumerically("<", 10*time.Second), "an outage longer than an etcd leader election: %v", outages)
		}
		out, err := set.Hosts[0].Run(ctx, filepath.Join(hosts.NodeBinDir(t), "etcdctl"),
			"--endpoints=https://"+set.Hosts[0].IP.String()+":2379", "--cacert=/etc/drover/pki/etcd/ca.crt",
			"--cert=/etc/drover/pki/etcd/healthcheck-client.crt", "--key=/etc/drover/pki/etcd/healthcheck-client.key", "endpoint", "health", "--cluster")
		g.Expect(err).NotTo(HaveOccurred(), "%s", out)
		g.Expect(strings.Count(string(out), "is healthy")).To(Equal(2), "%s", out)
		another := &v1alpha1.ClusterNode{ObjectMeta: metav1.ObjectMeta{Name: "day2-m-1"}}
		err = hc.Delete(ctx, another)
		g.Expect(err).To(HaveOccurred(), "removing a second etcd member of two is refused")
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		g.Expect(err.Error()).To(ContainSubstring("would leave 1 of 2 members, fewer than the 2 etcd needs for quorum"))
		g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(another), another)).To(Succeed())
		g.Expect(another.DeletionTimestamp.IsZero()).To(BeTrue())
		// A version two minors ahead is refused at admission (CEL).
		g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		mc.Spec.Provisioning.KubernetesVersion = "v1.38.0"
		err = hc.Update(ctx, mc)
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("one minor version at a time"))
	})

	t.Run("snapshots on a schedule", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(hc.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		before := len(mc.Status.Provisioning.EtcdSnapshots)
		bump(func(p *v1alpha1.ProvisioningSpec) { p.EtcdSnapshotSchedule = "* * * * *" })
		waitDay2("scheduled snapshot", 3*time.Minute, func(g Gomega, mc *v1alpha1.ManagedCluster) {
			g.Expect(len(mc.Status.Provisioning.EtcdSnapshots)).To(BeNumerically(">", before))
		})
		bump(func(p *v1alpha1.ProvisioningSpec) { p.EtcdSnapshotSchedule = "" })
		last := mc.Status.Provisioning.EtcdSnapshots[len(mc.Status.Provisioning.EtcdSnapshots)-1]
		g.Expect(last.Node).To(BeElementOf("day2-m-0", "day2-m-1"))
		g.Expect(last.S3).NotTo(BeNil())
		g.Expect(store.Keys(t, "etcd-backups")).To(ContainElement(last.S3.Key))
	})

	t.Run("removing the worker drains it, and its Node leaves the cluster", func(t *testing.T) {
		g := NewWithT(t)
		runOnWorker(g, "leaving")
		worker := &v1alpha1.ClusterNode{ObjectMeta: metav1.ObjectMeta{Name: "day2-worker-0"}}
		g.Expect(hc.Delete(ctx, worker)).To(Succeed())
		began := time.Now()
		last := ""
		g.Eventually(func() bool {
			if err := hc.Get(ctx, client.ObjectKeyFromObject(mc), mc); err == nil && mc.Status.Provisioning.Operation != nil {
				op := mc.Status.Provisioning.Operation
				if s := op.Type + " " + op.Phase + " " + op.Node + ": " + op.Message; s != last {
					last = s
					t.Logf("%5.1fs removing the worker: %s", time.Since(began).Seconds(), s)
				}
			}
			return apierrors.IsNotFound(hc.Get(ctx, client.ObjectKeyFromObject(worker), worker))
		}, 3*time.Minute, time.Second).Should(BeTrue(), func() string { return nodeReport(ctx, hc) + day2Events(ctx, hc) })
		t.Logf("worker removed in %s", time.Since(began).Round(100*time.Millisecond))
		if time.Since(began) > time.Minute {
			// A drain or a teardown that ran into its 2-minute bound says so in
			// an event (NodeNotDrained, NodeGivenUp).
			t.Logf("slow removal; events:\n%s%s", day2Events(ctx, hc), agentLogs())
		}
		if p, err := cs.CoreV1().Pods("default").Get(ctx, "leaving", metav1.GetOptions{}); err == nil {
			t.Logf("pod leaving: deletionTimestamp %v, phase %s; events:\n%s", p.DeletionTimestamp, p.Status.Phase, day2Events(ctx, hc))
		}
		_, err = cs.CoreV1().Pods("default").Get(ctx, "leaving", metav1.GetOptions{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the pod was evicted: %v", err)
		_, err = cs.CoreV1().Nodes().Get(ctx, "worker-0", metav1.GetOptions{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Node left the cluster: %v", err)
		g.Expect(eventReasons(g, hc, "day2")).To(ContainElement("NodeRemovalSucceeded"))
	})
}

// watchAPI polls the API with probe every 250 ms until the returned func is
// called, which returns how long each outage lasted (one still under way
// included).
func watchAPI(probe func() error) func() []time.Duration {
	var mu sync.Mutex
	var outages []time.Duration
	var down time.Time
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			err := probe()
			mu.Lock()
			switch {
			case err != nil && down.IsZero():
				down = time.Now()
			case err == nil && !down.IsZero():
				outages = append(outages, time.Since(down))
				down = time.Time{}
			}
			mu.Unlock()
		}
	}()
	return func() []time.Duration {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if !down.IsZero() {
			outages = append(outages, time.Since(down))
		}
		return outages
	}
}

// day2Events lists the events of ManagedCluster day2, for a failure.
func day2Events(ctx context.Context, c client.Client) string {
	var list eventsv1.EventList
	if err := c.List(ctx, &list); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range list.Items {
		if e.Regarding.Name == "day2" {
			fmt.Fprintf(&b, "%s %s: %s\n", e.CreationTimestamp.Format(time.TimeOnly), e.Reason, e.Note)
		}
	}
	return b.String()
}

func ptrIntStr(v intstr.IntOrString) *intstr.IntOrString { return &v }

func hostIndex(node string) int {
	switch strings.TrimPrefix(node, "day2-") {
	case "m-0":
		return 0
	case "m-1":
		return 1
	case "m-2":
		return 2
	}
	return 3
}

// servedSerial is the serial of the certificate served at addr ("" when it cannot
// be reached).
func servedSerial(addr string) string {
	var got string
	cfg := &tls.Config{InsecureSkipVerify: true, //nolint:gosec // reads the certificate only
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if c, err := x509.ParseCertificate(raw[0]); err == nil {
				got = c.SerialNumber.String()
			}
			return nil
		}}
	// A server that wants a client certificate (etcd) ends the handshake after
	// presenting its own; that is all this needs.
	if conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg); err == nil {
		_ = conn.Close()
	}
	return got
}

// serial reads a certificate file's serial number.
func serial(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}
