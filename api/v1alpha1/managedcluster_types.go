package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeletionPolicy says what happens in a target cluster when its ManagedCluster is deleted.
// +kubebuilder:validation:Enum=Delete;Orphan
type DeletionPolicy string

const (
	// DeletionPolicyDelete removes everything Drover put into the cluster (the default).
	DeletionPolicyDelete DeletionPolicy = "Delete"
	// DeletionPolicyOrphan leaves the cluster untouched.
	DeletionPolicyOrphan DeletionPolicy = "Orphan"
)

// DefaultKubeconfigKey is the Secret key read when spec.kubeconfig.secretRef.key is
// empty; it follows the Cluster API kubeconfig Secret convention.
const DefaultKubeconfigKey = "value"

// Distribution is the Kubernetes distribution a cluster runs, as detected by Drover.
// +kubebuilder:validation:Enum=k3s;rke2;eks;gke;aks;kubeadm;unknown
type Distribution string

// Distributions Drover recognises.
const (
	DistributionK3s     Distribution = "k3s"
	DistributionRKE2    Distribution = "rke2"
	DistributionEKS     Distribution = "eks"
	DistributionGKE     Distribution = "gke"
	DistributionAKS     Distribution = "aks"
	DistributionKubeadm Distribution = "kubeadm"
	DistributionUnknown Distribution = "unknown"
)

// ManagedClusterSpec is how Drover reaches one target cluster and what it may do there.
// At most one connection mode (kubeconfig, registration, provisioning) may be set.
// +kubebuilder:validation:XValidation:rule="[has(self.kubeconfig), has(self.registration), has(self.provisioning)].filter(x, x).size() <= 1",message="set at most one connection mode: spec.kubeconfig, spec.registration or spec.provisioning"
// +kubebuilder:validation:XValidation:rule="has(self.provisioning) == has(oldSelf.provisioning)",message="spec.provisioning cannot be added to or removed from an existing ManagedCluster: Drover either builds a cluster from the start or never does"
type ManagedClusterSpec struct {
	// displayName is a human-friendly name for the cluster.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	DisplayName string `json:"displayName,omitempty"`

	// kubeconfig connects the hub to the cluster: the hub dials the cluster's API server
	// with the kubeconfig held in a Secret in the operator's namespace (drover-system).
	// +optional
	Kubeconfig *KubeconfigSource `json:"kubeconfig,omitempty"`

	// registration connects the cluster to the hub the other way round: the agent
	// dials the hub, for clusters behind NAT. The hub keeps a bootstrap token in
	// Secret <name>-registration (key token) unless tokenSecretRef names another,
	// and publishes the command that installs the agent in status.registration.
	// +optional
	Registration *RegistrationSource `json:"registration,omitempty"`

	// provisioning makes Drover build the cluster, RKE-style, on hosts that run its
	// node agent; the hub then reaches it like a kubeconfig cluster, with a
	// kubeconfig it keeps in Secret <name>-kubeconfig.
	// +optional
	Provisioning *ProvisioningSpec `json:"provisioning,omitempty"`

	// paused stops all reconciliation for this cluster while true.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// deletionPolicy says what happens in the cluster when this object is deleted.
	// Delete (the default) removes the agent and everything Drover put into the
	// cluster; Orphan leaves the cluster untouched.
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// KubeconfigSource points at a kubeconfig held in a Secret in the operator's namespace.
type KubeconfigSource struct {
	// secretRef names the Secret and the key within it that holds the kubeconfig.
	// +required
	SecretRef SecretKeyReference `json:"secretRef"`
}

// SecretKeyReference names a key in a Secret in the operator's namespace.
type SecretKeyReference struct {
	// name of the Secret, in the operator's namespace (drover-system by default).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key within the Secret's data. Defaults to "value", the Cluster API convention.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// KeyOrDefault returns the Secret key, resolving the default in code rather than in the object.
func (r SecretKeyReference) KeyOrDefault() string {
	if r.Key == "" {
		return DefaultKubeconfigKey
	}
	return r.Key
}

// RegistrationSource is the agent-dials-hub connection mode.
type RegistrationSource struct {
	// tokenSecretRef names the Secret, in the operator's namespace, holding the
	// bootstrap token the agent presents when it registers (key defaults to
	// "token"). Without it the hub creates Secret <cluster>-registration. Deleting
	// or changing the token revokes the old one, and the manifest URL changes.
	// +optional
	TokenSecretRef *SecretKeyReference `json:"tokenSecretRef,omitempty"`
}

// DefaultTokenKey is the key of the bootstrap token in its Secret.
const DefaultTokenKey = "token"

// RegistrationStatus says how to install the agent of a cluster registered with
// spec.registration.
type RegistrationStatus struct {
	// manifestURL serves the agent's manifest for this cluster: apply it in the
	// cluster. It embeds a value derived from the bootstrap token, so treat it as
	// a secret; it changes when the token does.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	ManifestURL string `json:"manifestURL,omitempty"`
	// command installs the agent: run it with a kubeconfig for the cluster.
	// +optional
	// +kubebuilder:validation:MaxLength=2100
	Command string `json:"command,omitempty"`
}

// NodeCounts counts a cluster's nodes.
type NodeCounts struct {
	// ready counts the nodes whose Ready condition is True.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Ready int32 `json:"ready"`
	// total counts all nodes.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Total int32 `json:"total"`
}

// AgentStatus is what the hub knows of the agent in the cluster.
type AgentStatus struct {
	// version the agent reports.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Version string `json:"version,omitempty"`
	// lastHeartbeatTime is when the agent last renewed its Lease.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`
}

// ManagedClusterStatus is what Drover observed of the cluster.
type ManagedClusterStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Connected, AgentReady, Synced, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// kubernetesVersion is the cluster API server's git version, e.g. v1.36.3.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`

	// distribution is the detected Kubernetes distribution.
	// +optional
	Distribution Distribution `json:"distribution,omitempty"`

	// apiEndpoint is the URL the hub dials.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	APIEndpoint string `json:"apiEndpoint,omitempty"`

	// nodes counts the cluster's nodes.
	// +optional
	Nodes *NodeCounts `json:"nodes,omitempty"`

	// nodesReady is nodes as "ready/total", for display.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	NodesReady string `json:"nodesReady,omitempty"`

	// capacity sums the capacity of all nodes.
	// +optional
	Capacity ResourceList `json:"capacity,omitempty"`

	// allocatable sums the allocatable resources of all nodes.
	// +optional
	Allocatable ResourceList `json:"allocatable,omitempty"`

	// clusterID identifies the target cluster itself: the UID of its kube-system
	// namespace, read on the first connection. Two ManagedClusters with the same
	// clusterID point at the same cluster; the younger one is Stalled with reason
	// DuplicateCluster and writes nothing there.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ClusterID string `json:"clusterID,omitempty"`

	// agent is what the hub knows of the agent.
	// +optional
	Agent *AgentStatus `json:"agent,omitempty"`

	// registration says how to install the agent (spec.registration only).
	// +optional
	Registration *RegistrationStatus `json:"registration,omitempty"`

	// provisioning says how building the cluster goes (spec.provisioning only).
	// +optional
	Provisioning *ProvisioningStatus `json:"provisioning,omitempty"`
}

// ManagedCluster is a target cluster that Drover manages: how to reach it, and what
// Drover observed of it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mc,categories=drover
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.kubernetesVersion`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.nodesReady`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Endpoint",type=string,priority=10,JSONPath=`.status.apiEndpoint`
// +kubebuilder:printcolumn:name="Distribution",type=string,priority=10,JSONPath=`.status.distribution`
// +kubebuilder:printcolumn:name="Message",type=string,priority=10,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Operation",type=string,priority=10,JSONPath=`.status.provisioning.operation.type`
// +kubebuilder:printcolumn:name="Target",type=string,priority=10,JSONPath=`.status.provisioning.operation.target`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: Drover uses it as a label value in target clusters"
type ManagedCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says how to reach the cluster.
	// +required
	Spec ManagedClusterSpec `json:"spec"`

	// status is what Drover observed.
	// +optional
	Status ManagedClusterStatus `json:"status,omitempty"`
}

// DeletionPolicyOrDefault resolves the default deletion policy in code.
func (c *ManagedCluster) DeletionPolicyOrDefault() DeletionPolicy {
	if c.Spec.DeletionPolicy == "" {
		return DeletionPolicyDelete
	}
	return c.Spec.DeletionPolicy
}

// GetConditions returns the status conditions (for condition helpers).
func (c *ManagedCluster) GetConditions() []metav1.Condition { return c.Status.Conditions }

// SetConditions replaces the status conditions (for condition helpers).
func (c *ManagedCluster) SetConditions(conds []metav1.Condition) { c.Status.Conditions = conds }

// ManagedClusterList is a list of ManagedClusters.
//
// +kubebuilder:object:root=true
type ManagedClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ManagedCluster `json:"items"`
}

func init() {
	register(&ManagedCluster{}, &ManagedClusterList{})
}
