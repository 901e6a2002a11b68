package clusterfacts_test

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/clusterfacts"
)

// node builds a Node with a provider ID and labels given as key, value pairs.
func node(providerID string, labels ...string) corev1.Node {
	n := corev1.Node{Spec: corev1.NodeSpec{ProviderID: providerID}}
	if len(labels) > 0 {
		n.Labels = map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			n.Labels[labels[i]] = labels[i+1]
		}
	}
	return n
}

func kubeadmControlPlane() corev1.Node {
	n := node("", "node-role.kubernetes.io/control-plane", "")
	n.Annotations = map[string]string{"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock"}
	return n
}

func TestDetectDistribution(t *testing.T) {
	const upstream = "v1.36.3"
	tests := []struct {
		name    string
		version string
		nodes   []corev1.Node
		want    v1alpha1.Distribution
	}{
		// Version signals.
		{"k3s version", "v1.30.4+k3s1", nil, v1alpha1.DistributionK3s},
		{"rke2 version", "v1.30.4+rke2r1", nil, v1alpha1.DistributionRKE2},
		{"eks version", "v1.30.4-eks-a737599", nil, v1alpha1.DistributionEKS},
		{"gke version", "v1.30.5-gke.1014001", nil, v1alpha1.DistributionGKE},
		{"eks version with plain aws provider", "v1.30.4-eks-a737599", []corev1.Node{node("aws:///us-east-1a/i-0abc")}, v1alpha1.DistributionEKS},
		{"version wins over nodes", "v1.30.4+k3s1", []corev1.Node{node("aws:///us-east-1a/i-0abc", "eks.amazonaws.com/nodegroup", "ng-1")}, v1alpha1.DistributionK3s},
		{"gke version wins over kubeadm nodes", "v1.30.5-gke.1014001", []corev1.Node{kubeadmControlPlane()}, v1alpha1.DistributionGKE},

		// Node signals.
		{"k3s provider id", upstream, []corev1.Node{node("k3s://server-0")}, v1alpha1.DistributionK3s},
		{"k3s instance type", upstream, []corev1.Node{node("", "node.kubernetes.io/instance-type", "k3s")}, v1alpha1.DistributionK3s},
		{"rke2 provider id", upstream, []corev1.Node{node("rke2://server-0")}, v1alpha1.DistributionRKE2},
		{"rke2 instance type", upstream, []corev1.Node{node("", "node.kubernetes.io/instance-type", "rke2")}, v1alpha1.DistributionRKE2},
		{"eks nodegroup label", upstream, []corev1.Node{node("aws:///us-east-1a/i-0abc", "eks.amazonaws.com/nodegroup", "ng-1")}, v1alpha1.DistributionEKS},
		{"eksctl cluster label", upstream, []corev1.Node{node("aws:///us-east-1a/i-0abc", "alpha.eksctl.io/cluster-name", "prod")}, v1alpha1.DistributionEKS},
		{"eks label without aws provider", upstream, []corev1.Node{node("", "eks.amazonaws.com/nodegroup", "ng-1")}, v1alpha1.DistributionUnknown},
		{"plain aws provider", upstream, []corev1.Node{node("aws:///us-east-1a/i-0abc")}, v1alpha1.DistributionUnknown},
		{"gke nodepool label", upstream, []corev1.Node{node("gce://proj/europe-west1-b/gke-node", "cloud.google.com/gke-nodepool", "default-pool")}, v1alpha1.DistributionGKE},
		{"plain gce provider", upstream, []corev1.Node{node("gce://proj/europe-west1-b/vm")}, v1alpha1.DistributionUnknown},
		{"aks cluster label", upstream, []corev1.Node{node("azure:///subscriptions/x/vm-0", "kubernetes.azure.com/cluster", "MC_rg_aks_westeurope")}, v1alpha1.DistributionAKS},
		{"aks agentpool label", upstream, []corev1.Node{node("azure:///subscriptions/x/vm-0", "kubernetes.azure.com/agentpool", "nodepool1")}, v1alpha1.DistributionAKS},
		{"plain azure provider", upstream, []corev1.Node{node("azure:///subscriptions/x/vm-0")}, v1alpha1.DistributionUnknown},
		{"aks label without azure provider", upstream, []corev1.Node{node("", "kubernetes.azure.com/agentpool", "nodepool1")}, v1alpha1.DistributionUnknown},
		{"kubeadm control plane", upstream, []corev1.Node{node(""), kubeadmControlPlane()}, v1alpha1.DistributionKubeadm},
		{"control plane without kubeadm annotation", upstream, []corev1.Node{node("", "node-role.kubernetes.io/control-plane", "true")}, v1alpha1.DistributionUnknown},
		{"kubeadm on aws is kubeadm", upstream, []corev1.Node{node("aws:///us-east-1a/i-0abc"), kubeadmControlPlane()}, v1alpha1.DistributionKubeadm},
		{"k3s wins over kubeadm regardless of node order", upstream, []corev1.Node{kubeadmControlPlane(), node("k3s://agent-0")}, v1alpha1.DistributionK3s},

		// Nothing to go on.
		{"upstream version, no nodes", upstream, nil, v1alpha1.DistributionUnknown},
		{"empty version, no nodes", "", nil, v1alpha1.DistributionUnknown},
		{"bare node", upstream, []corev1.Node{node("")}, v1alpha1.DistributionUnknown},
		{"aks version alone is not enough", "v1.30.4-aks", nil, v1alpha1.DistributionUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clusterfacts.DetectDistribution(tt.version, tt.nodes); got != tt.want {
				t.Errorf("DetectDistribution(%q, ...) = %q, want %q", tt.version, got, tt.want)
			}
		})
	}
}

var distributions = []v1alpha1.Distribution{
	v1alpha1.DistributionK3s,
	v1alpha1.DistributionRKE2,
	v1alpha1.DistributionEKS,
	v1alpha1.DistributionGKE,
	v1alpha1.DistributionAKS,
	v1alpha1.DistributionKubeadm,
	v1alpha1.DistributionUnknown,
}

func FuzzDetectDistribution(f *testing.F) {
	seeds := []struct{ version, providerID, labelKey, labelValue string }{
		{"v1.30.4+k3s1", "k3s://server-0", "node.kubernetes.io/instance-type", "k3s"},
		{"v1.30.4+rke2r1", "rke2://server-0", "node.kubernetes.io/instance-type", "rke2"},
		{"v1.30.4-eks-a737599", "aws:///us-east-1a/i-0abc", "eks.amazonaws.com/nodegroup", "ng-1"},
		{"v1.30.5-gke.1014001", "gce://proj/zone/vm", "cloud.google.com/gke-nodepool", "default-pool"},
		{"v1.30.4", "azure:///subscriptions/x/vm-0", "kubernetes.azure.com/cluster", "MC_rg"},
		{"v1.36.3", "", "node-role.kubernetes.io/control-plane", ""},
		{"", "", "", ""},
		{"+k3s-eks--gke.+rke2", "aws://", "alpha.eksctl.io/cluster-name", "x"},
	}
	for _, s := range seeds {
		f.Add(s.version, s.providerID, s.labelKey, s.labelValue)
	}
	f.Fuzz(func(t *testing.T, version, providerID, labelKey, labelValue string) {
		n := node(providerID, labelKey, labelValue)
		n.Annotations = map[string]string{labelValue: labelKey}
		for _, nodes := range [][]corev1.Node{nil, {n}, {node(""), n}} {
			got := clusterfacts.DetectDistribution(version, nodes)
			if !slices.Contains(distributions, got) {
				t.Fatalf("DetectDistribution(%q, provider %q, label %q=%q) = %q, not a known distribution",
					version, providerID, labelKey, labelValue, got)
			}
		}
	})
}

// readyNode builds a node with the given Ready condition status (none when empty),
// capacity and allocatable.
func readyNode(ready corev1.ConditionStatus, capacity, allocatable corev1.ResourceList) corev1.Node {
	n := corev1.Node{Status: corev1.NodeStatus{Capacity: capacity, Allocatable: allocatable}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}}
	if ready != "" {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: ready})
	}
	return n
}

func resources(kv ...string) corev1.ResourceList {
	rl := corev1.ResourceList{}
	for i := 0; i+1 < len(kv); i += 2 {
		rl[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return rl
}

func TestSummarizeNodes(t *testing.T) {
	tests := []struct {
		name                  string
		nodes                 []corev1.Node
		ready, total          int32
		capacity, allocatable corev1.ResourceList // nil: want a nil map
		readyString           string
	}{
		{name: "no nodes", readyString: "0/0"},
		{
			name:        "nodes without resources",
			nodes:       []corev1.Node{readyNode(corev1.ConditionTrue, nil, nil), readyNode(corev1.ConditionTrue, corev1.ResourceList{}, nil)},
			ready:       2,
			total:       2,
			readyString: "2/2",
		},
		{
			name: "mixed readiness and resources",
			nodes: []corev1.Node{
				readyNode(corev1.ConditionTrue, resources("cpu", "4", "memory", "16Gi", "pods", "110"), resources("cpu", "3800m", "memory", "15Gi", "pods", "110")),
				readyNode(corev1.ConditionFalse, resources("cpu", "2", "memory", "8Gi", "pods", "110"), resources("cpu", "1900m", "memory", "7Gi", "pods", "110")),
				readyNode(corev1.ConditionUnknown, resources("cpu", "500m", "nvidia.com/gpu", "1"), nil),
				readyNode("", nil, resources("ephemeral-storage", "100Gi")),
				readyNode(corev1.ConditionTrue, resources("cpu", "1"), resources("cpu", "1")),
			},
			ready:       2,
			total:       5,
			capacity:    resources("cpu", "7500m", "memory", "24Gi", "pods", "220", "nvidia.com/gpu", "1"),
			allocatable: resources("cpu", "6700m", "memory", "22Gi", "pods", "220", "ephemeral-storage", "100Gi"),
			readyString: "2/5",
		},
		{
			// Quantities whose mantissa does not fit in int64 are held as decimals,
			// which Add modifies in place.
			name: "large quantities",
			nodes: []corev1.Node{
				readyNode(corev1.ConditionTrue, resources("memory", "123456789012345678901234567890"), resources("memory", "1.5")),
				readyNode(corev1.ConditionTrue, resources("memory", "876543210987654321098765432110"), resources("memory", "123456789012345678901234567890")),
			},
			ready:       2,
			total:       2,
			capacity:    resources("memory", "1000000000000000000000000000000"),
			allocatable: resources("memory", "123456789012345678901234567891.5"),
			readyString: "2/2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := make([]corev1.Node, len(tt.nodes))
			for i := range tt.nodes {
				tt.nodes[i].DeepCopyInto(&before[i])
			}

			got := clusterfacts.SummarizeNodes(tt.nodes)

			if got.Ready != tt.ready || got.Total != tt.total {
				t.Errorf("Ready/Total = %d/%d, want %d/%d", got.Ready, got.Total, tt.ready, tt.total)
			}
			if s := clusterfacts.NodesReadyString(got); s != tt.readyString {
				t.Errorf("NodesReadyString = %q, want %q", s, tt.readyString)
			}
			assertResources(t, "Capacity", got.Capacity, tt.capacity)
			assertResources(t, "Allocatable", got.Allocatable, tt.allocatable)

			// The inputs are untouched.
			for i := range tt.nodes {
				assertResources(t, "node capacity", v1alpha1.ResourceList(tt.nodes[i].Status.Capacity), before[i].Status.Capacity)
				assertResources(t, "node allocatable", v1alpha1.ResourceList(tt.nodes[i].Status.Allocatable), before[i].Status.Allocatable)
			}
			// Nor does a later change to the summary reach them.
			for name, q := range got.Capacity {
				q.Add(resource.MustParse("1E40"))
				got.Capacity[name] = q
			}
			for i := range tt.nodes {
				assertResources(t, "node capacity after changing the summary", v1alpha1.ResourceList(tt.nodes[i].Status.Capacity), before[i].Status.Capacity)
			}
		})
	}
}

func assertResources(t *testing.T, what string, got v1alpha1.ResourceList, want corev1.ResourceList) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("%s = %v, want nil", what, got)
		}
		return
	}
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok || g.Cmp(w) != 0 {
			t.Errorf("%s[%s] = %s, want %s", what, name, g.String(), w.String())
		}
	}
}

func TestNodesReadyString(t *testing.T) {
	if got := clusterfacts.NodesReadyString(clusterfacts.NodeSummary{Ready: 2, Total: 3}); got != "2/3" {
		t.Errorf("NodesReadyString = %q, want %q", got, "2/3")
	}
}
