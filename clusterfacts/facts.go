// Package clusterfacts derives the facts the hub reports in a ManagedCluster's status
// from what it reads in the target cluster: the API server's git version and the
// Node objects.
//
// # Distribution detection
//
// DetectDistribution looks at the version first; a version signal always wins over
// node signals. Within each step the first matching rule wins, in this order:
//
// Version signals (the API server's gitVersion):
//
//   - k3s: contains "+k3s" (v1.30.4+k3s1).
//   - rke2: contains "+rke2" (v1.30.4+rke2r1).
//   - eks: contains "-eks-" (v1.30.4-eks-a737599).
//   - gke: contains "-gke." (v1.30.5-gke.1014001).
//
// AKS and kubeadm clusters run upstream version strings, so they are only ever
// detected from nodes.
//
// Node signals, each satisfied when any node matches, so that the result does not
// depend on the order of the nodes:
//
//   - k3s: provider ID starts with "k3s://", or label
//     "node.kubernetes.io/instance-type" is "k3s".
//   - rke2: provider ID starts with "rke2://", or label
//     "node.kubernetes.io/instance-type" is "rke2".
//   - eks: provider ID starts with "aws://" and the node has an EKS label
//     ("eks.amazonaws.com/nodegroup", "eks.amazonaws.com/compute-type",
//     "alpha.eksctl.io/cluster-name" or "alpha.eksctl.io/nodegroup-name"). A plain
//     aws:// provider ID is also what self-managed clusters on EC2 report, so on
//     its own it is not enough; with an -eks- version the version rule applies.
//   - gke: provider ID starts with "gce://" and the node has a GKE label
//     ("cloud.google.com/gke-nodepool" or "cloud.google.com/gke-os-distribution");
//     as with EKS, gce:// alone is what self-managed clusters on GCE report.
//   - aks: provider ID starts with "azure://" and the node has label
//     "kubernetes.azure.com/cluster" or "kubernetes.azure.com/agentpool".
//   - kubeadm: a node has label "node-role.kubernetes.io/control-plane" (any value)
//     and annotation "kubeadm.alpha.kubernetes.io/cri-socket". k3s and RKE2 label
//     their servers as control planes too, but do not set the kubeadm annotation.
//
// Anything else is unknown.
package clusterfacts

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// Node labels, annotations and provider ID prefixes that identify distributions.
const (
	labelInstanceType        = "node.kubernetes.io/instance-type"
	labelControlPlane        = "node-role.kubernetes.io/control-plane"
	annotationKubeadmCRISock = "kubeadm.alpha.kubernetes.io/cri-socket"

	providerK3s   = "k3s://"
	providerRKE2  = "rke2://"
	providerAWS   = "aws://"
	providerGCE   = "gce://"
	providerAzure = "azure://"
)

var (
	eksLabels = []string{
		"eks.amazonaws.com/nodegroup",
		"eks.amazonaws.com/compute-type",
		"alpha.eksctl.io/cluster-name",
		"alpha.eksctl.io/nodegroup-name",
	}
	gkeLabels = []string{
		"cloud.google.com/gke-nodepool",
		"cloud.google.com/gke-os-distribution",
	}
	aksLabels = []string{
		"kubernetes.azure.com/cluster",
		"kubernetes.azure.com/agentpool",
	}
)

// versionRules map substrings of the API server's git version to distributions, in
// order of precedence.
var versionRules = []struct {
	substr string
	dist   v1alpha1.Distribution
}{
	{"+k3s", v1alpha1.DistributionK3s},
	{"+rke2", v1alpha1.DistributionRKE2},
	{"-eks-", v1alpha1.DistributionEKS},
	{"-gke.", v1alpha1.DistributionGKE},
}

// nodeRules map node properties to distributions, in order of precedence.
var nodeRules = []struct {
	match func(*corev1.Node) bool
	dist  v1alpha1.Distribution
}{
	{func(n *corev1.Node) bool {
		return strings.HasPrefix(n.Spec.ProviderID, providerK3s) || n.Labels[labelInstanceType] == "k3s"
	}, v1alpha1.DistributionK3s},
	{func(n *corev1.Node) bool {
		return strings.HasPrefix(n.Spec.ProviderID, providerRKE2) || n.Labels[labelInstanceType] == "rke2"
	}, v1alpha1.DistributionRKE2},
	{func(n *corev1.Node) bool {
		return strings.HasPrefix(n.Spec.ProviderID, providerAWS) && hasAnyLabel(n, eksLabels)
	}, v1alpha1.DistributionEKS},
	{func(n *corev1.Node) bool {
		return strings.HasPrefix(n.Spec.ProviderID, providerGCE) && hasAnyLabel(n, gkeLabels)
	}, v1alpha1.DistributionGKE},
	{func(n *corev1.Node) bool {
		return strings.HasPrefix(n.Spec.ProviderID, providerAzure) && hasAnyLabel(n, aksLabels)
	}, v1alpha1.DistributionAKS},
	{func(n *corev1.Node) bool {
		_, controlPlane := n.Labels[labelControlPlane]
		_, kubeadm := n.Annotations[annotationKubeadmCRISock]
		return controlPlane && kubeadm
	}, v1alpha1.DistributionKubeadm},
}

// DetectDistribution guesses the Kubernetes distribution from the API server's git
// version and the cluster's nodes, following the rules in the package documentation.
// It returns DistributionUnknown when nothing matches; nodes may be empty.
func DetectDistribution(gitVersion string, nodes []corev1.Node) v1alpha1.Distribution {
	for _, r := range versionRules {
		if strings.Contains(gitVersion, r.substr) {
			return r.dist
		}
	}
	for _, r := range nodeRules {
		for i := range nodes {
			if r.match(&nodes[i]) {
				return r.dist
			}
		}
	}
	return v1alpha1.DistributionUnknown
}

func hasAnyLabel(n *corev1.Node, keys []string) bool {
	for _, k := range keys {
		if _, ok := n.Labels[k]; ok {
			return true
		}
	}
	return false
}

// NodeSummary counts a cluster's nodes and sums their resources.
type NodeSummary struct {
	// Ready counts the nodes whose Ready condition is True.
	Ready int32
	// Total counts all nodes.
	Total int32
	// Capacity sums the nodes' status.capacity per resource; nil when there is none.
	Capacity v1alpha1.ResourceList
	// Allocatable sums the nodes' status.allocatable per resource; nil when there is none.
	Allocatable v1alpha1.ResourceList
}

// SummarizeNodes counts the ready nodes and sums capacity and allocatable resources
// over all nodes. It does not modify nodes.
func SummarizeNodes(nodes []corev1.Node) NodeSummary {
	var s NodeSummary
	for i := range nodes {
		n := &nodes[i]
		s.Total++
		if isReady(n) {
			s.Ready++
		}
		s.Capacity = addResources(s.Capacity, n.Status.Capacity)
		s.Allocatable = addResources(s.Allocatable, n.Status.Allocatable)
	}
	return s
}

// NodesReadyString renders the node counts as "ready/total", e.g. "2/3".
func NodesReadyString(s NodeSummary) string {
	return strconv.FormatInt(int64(s.Ready), 10) + "/" + strconv.FormatInt(int64(s.Total), 10)
}

func isReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// addResources adds in to sum, allocating sum on first use. Quantities are deep
// copied before they are added to: a Quantity may share its decimal with the node's,
// and Add would otherwise modify the node.
func addResources(sum v1alpha1.ResourceList, in corev1.ResourceList) v1alpha1.ResourceList {
	for name, q := range in {
		if sum == nil {
			sum = make(v1alpha1.ResourceList, len(in))
		}
		total, ok := sum[name]
		if !ok {
			sum[name] = q.DeepCopy()
			continue
		}
		total.Add(q)
		sum[name] = total
	}
	return sum
}
