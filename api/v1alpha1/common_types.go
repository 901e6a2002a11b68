package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterSelection selects ManagedClusters by name, by labels, or both. A cluster is
// selected when its name is listed or its labels match the selector. An empty
// selector ({}) selects every cluster.
// +kubebuilder:validation:XValidation:rule="has(self.names) || has(self.selector)",message="a cluster selection needs names or a selector"
// +kubebuilder:validation:XValidation:rule="!has(self.selector) || !has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="selector.matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist (case-sensitive)"
// +kubebuilder:validation:XValidation:rule="!has(self.selector) || !has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && e.values.size() > 0))",message="selector.matchExpressions[]: operators In and NotIn need at least one value"
// +kubebuilder:validation:XValidation:rule="!has(self.selector) || !has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || e.values.size() == 0)",message="selector.matchExpressions[]: operators Exists and DoesNotExist take no values"
type ClusterSelection struct {
	// names lists ManagedClusters by name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Names []string `json:"names,omitempty"`

	// selector selects ManagedClusters by their labels.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// ClusterFailure names one target cluster where an intent could not be applied,
// and says why.
type ClusterFailure struct {
	// cluster is the name of the ManagedCluster.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster"`

	// reason is a CamelCase word for the failure, such as Disconnected.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`

	// message says what went wrong, for a person.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// MaxReportedFailures bounds the failure lists in status, so that a fleet-wide outage
// does not grow an object without limit.
const MaxReportedFailures = 20

// ResourceList maps resource names (cpu, memory, requests.cpu, pods, ...) to quantities,
// as a core/v1 ResourceList does. Convert with corev1.ResourceList(r).
// +kubebuilder:validation:MaxProperties=64
type ResourceList map[corev1.ResourceName]resource.Quantity

// ShardStatus is one shard's account of an intent, when the hub runs several shards
// (--shard=K/N, docs/sharding.md). The replica that holds shard K writes entry K,
// about the clusters of shard K only, with server-side apply and field manager
// drover-shard-K; the replica that holds shard 0 sums the entries into the rest of
// status. An unsharded hub writes no entries.
type ShardStatus struct {
	// shard is the shard's number, K of --shard=K/N.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=63
	Shard int32 `json:"shard"`

	// observedGeneration is the intent's metadata.generation this entry describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// clusters counts the clusters of this shard that the intent selects.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Clusters int32 `json:"clusters,omitempty"`

	// synced counts those that hold the intent at observedGeneration.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Synced int32 `json:"synced,omitempty"`

	// pending counts those not synced yet since the intent changed.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Pending int32 `json:"pending,omitempty"`

	// retrying counts those whose sync failed and is retried.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Retrying int32 `json:"retrying,omitempty"`

	// stalled counts those where a person must act.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Stalled int32 `json:"stalled,omitempty"`

	// notConnected counts those that are not connected, paused, being deleted or duplicates.
	// +optional
	// +kubebuilder:validation:Minimum=0
	NotConnected int32 `json:"notConnected,omitempty"`

	// failures names the first of this shard's clusters (by name) that do not hold
	// the intent, and why (at most 20).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Failures []ClusterFailure `json:"failures,omitempty"`

	// projectClusters is, for a ClusterProject, the state of the project in each of
	// this shard's clusters (at most 100, by name).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	ProjectClusters []ProjectClusterStatus `json:"projectClusters,omitempty"`
}

// MaxShards bounds the number of shards a hub runs (--shard=K/N with N <= 64).
const MaxShards = 64
