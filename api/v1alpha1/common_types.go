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
