package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NamespaceDeletionPolicy says what happens to a project namespace in the targets when
// it leaves the project or the project is deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type NamespaceDeletionPolicy string

const (
	// NamespaceRetain releases the namespace: Drover removes its quota, limits, policy,
	// bindings and labels, and keeps the namespace and its data (the default).
	NamespaceRetain NamespaceDeletionPolicy = "Retain"
	// NamespaceDelete deletes the namespace and everything in it.
	NamespaceDelete NamespaceDeletionPolicy = "Delete"
)

// ProjectNamespace is one namespace of a project, created (or adopted) in every cluster
// the project is placed on.
// +kubebuilder:validation:XValidation:rule="!(self.name in ['kube-system', 'kube-public', 'kube-node-lease', 'default', 'drover-system'])",message="namespace name is reserved: kube-system, kube-public, kube-node-lease, default and drover-system cannot belong to a project"
type ProjectNamespace struct {
	// name of the namespace, a DNS label.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// adopt lets the project take over a namespace that already exists in a target and
	// is not owned by Drover. Without it such a namespace is reported as a conflict and
	// left alone. A namespace owned by another project is never taken.
	// +optional
	Adopt bool `json:"adopt,omitempty"`

	// labels Drover sets on the namespace, besides its own.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`

	// annotations Drover sets on the namespace.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`
}

// QuotaSpec is a set of hard limits, as in a ResourceQuota.
// +kubebuilder:validation:XValidation:rule="self.hard.size() > 0",message="hard needs at least one resource, such as requests.cpu: \"8\""
type QuotaSpec struct {
	// hard limits per resource name, such as requests.cpu: "8" or pods: "100".
	// +required
	Hard ResourceList `json:"hard"`
}

// ContainerDefaults become a LimitRange (type Container) in each project namespace.
// +kubebuilder:validation:XValidation:rule="has(self.default) || has(self.defaultRequest) || has(self.max) || has(self.min)",message="containerDefaults needs at least one of default, defaultRequest, max and min"
type ContainerDefaults struct {
	// default limits for containers that set none.
	// +optional
	Default ResourceList `json:"default,omitempty"`
	// defaultRequest: requests for containers that set none.
	// +optional
	DefaultRequest ResourceList `json:"defaultRequest,omitempty"`
	// max a container may ask for.
	// +optional
	Max ResourceList `json:"max,omitempty"`
	// min a container must ask for.
	// +optional
	Min ResourceList `json:"min,omitempty"`
}

// ClusterProjectSpec is a set of namespaces, with quotas, default limits, isolation and
// project-scoped access, placed on one or many clusters.
//
// Whether the namespace quotas fit the project quota (namespaceDefaultQuota times the
// number of namespaces <= resourceQuota) is checked by the controller and reported as a
// condition: a CRD CEL rule over resource quantities exceeds the API server's cost budget.
// Which resources are limited is checked here, at admission.
//
// +kubebuilder:validation:XValidation:rule="!has(self.resourceQuota) || has(self.namespaceDefaultQuota)",message="spec.resourceQuota needs spec.namespaceDefaultQuota: the project-wide limit is enforced through a quota in each namespace",fieldPath=".resourceQuota"
// +kubebuilder:validation:XValidation:rule="!has(self.resourceQuota) || !has(self.namespaceDefaultQuota) || self.resourceQuota.hard.all(k, k in self.namespaceDefaultQuota.hard)",message="every resource in spec.resourceQuota.hard must also be limited in spec.namespaceDefaultQuota.hard, or a namespace could use it without bound",fieldPath=".namespaceDefaultQuota.hard"
type ClusterProjectSpec struct {
	// displayName is a human-friendly name for the project.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	DisplayName string `json:"displayName,omitempty"`

	// clusters the project is placed on, by name and/or labels.
	// +required
	Clusters ClusterSelection `json:"clusters"`

	// namespaces of the project, created in every placed cluster.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=100
	Namespaces []ProjectNamespace `json:"namespaces,omitempty"`

	// resourceQuota is the project-wide limit, per cluster: the namespace quotas together
	// may not exceed it.
	// +optional
	ResourceQuota *QuotaSpec `json:"resourceQuota,omitempty"`

	// namespaceDefaultQuota becomes a ResourceQuota in each project namespace.
	// +optional
	NamespaceDefaultQuota *QuotaSpec `json:"namespaceDefaultQuota,omitempty"`

	// containerDefaults become a LimitRange in each project namespace.
	// +optional
	ContainerDefaults *ContainerDefaults `json:"containerDefaults,omitempty"`

	// networkIsolation puts a NetworkPolicy in each project namespace that admits
	// ingress only from the project's own namespaces; DNS stays reachable.
	// +optional
	NetworkIsolation bool `json:"networkIsolation,omitempty"`

	// namespaceDeletionPolicy says what happens to a namespace that leaves the project,
	// or to all of them when the project is deleted. Retain (the default) releases the
	// namespace and keeps its data; Delete deletes it.
	// +optional
	NamespaceDeletionPolicy NamespaceDeletionPolicy `json:"namespaceDeletionPolicy,omitempty"`
}

// ProjectClusterStatus is the project's state in one cluster.
type ProjectClusterStatus struct {
	// cluster is the ManagedCluster's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster"`

	// synced is true when the cluster holds the project at its current generation.
	// +optional
	Synced bool `json:"synced"`

	// reason is a CamelCase word for the state, such as Synced or Disconnected.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// message says more, for a person.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// used sums the usage of the project's namespace quotas in this cluster.
	// +optional
	Used ResourceList `json:"used,omitempty"`

	// hard sums the hard limits of the project's namespace quotas in this cluster.
	// +optional
	Hard ResourceList `json:"hard,omitempty"`
}

// ClusterProjectStatus says where the project holds.
type ClusterProjectStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// placedClusters counts the clusters the project is placed on.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PlacedClusters int32 `json:"placedClusters,omitempty"`

	// syncedClusters counts the placed clusters holding the project's current generation.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SyncedClusters int32 `json:"syncedClusters,omitempty"`

	// synced is syncedClusters/placedClusters, for display (e.g. 2/2).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Synced string `json:"synced,omitempty"`

	// namespaceCount counts the project's namespaces.
	// +optional
	// +kubebuilder:validation:Minimum=0
	NamespaceCount int32 `json:"namespaceCount,omitempty"`

	// clusters summarises the project per placed cluster (at most 100 entries).
	// +optional
	// +listType=map
	// +listMapKey=cluster
	// +kubebuilder:validation:MaxItems=100
	Clusters []ProjectClusterStatus `json:"clusters,omitempty"`

	// shards holds each shard's account of the clusters it syncs, when the hub runs
	// several shards (docs/sharding.md); the fields above sum them.
	// +optional
	// +listType=map
	// +listMapKey=shard
	// +kubebuilder:validation:MaxItems=64
	Shards []ShardStatus `json:"shards,omitempty"`
}

// ClusterProject groups namespaces, in one or many clusters, under one set of quotas,
// default limits, network isolation and access bindings.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cproj,categories=drover
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.status.synced`
// +kubebuilder:printcolumn:name="Namespaces",type=integer,JSONPath=`.status.namespaceCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Display Name",type=string,priority=10,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Message",type=string,priority=10,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: Drover uses it as a label value in target clusters"
type ClusterProject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the project.
	// +required
	Spec ClusterProjectSpec `json:"spec"`

	// status says where the project holds.
	// +optional
	Status ClusterProjectStatus `json:"status,omitempty"`
}

// NamespaceDeletionPolicyOrDefault resolves the default policy in code.
func (p *ClusterProject) NamespaceDeletionPolicyOrDefault() NamespaceDeletionPolicy {
	if p.Spec.NamespaceDeletionPolicy == "" {
		return NamespaceRetain
	}
	return p.Spec.NamespaceDeletionPolicy
}

// GetConditions returns the status conditions.
func (p *ClusterProject) GetConditions() []metav1.Condition { return p.Status.Conditions }

// SetConditions replaces the status conditions.
func (p *ClusterProject) SetConditions(conds []metav1.Condition) { p.Status.Conditions = conds }

// ClusterProjectList is a list of ClusterProjects.
//
// +kubebuilder:object:root=true
type ClusterProjectList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterProject `json:"items"`
}

func init() {
	register(&ClusterProject{}, &ClusterProjectList{})
}
