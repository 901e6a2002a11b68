package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SubjectKind is the kind of a subject that an AccessBinding grants a role to.
// +kubebuilder:validation:Enum=User;Group;ServiceAccount
type SubjectKind string

// Subject kinds, as in rbac/v1.
const (
	SubjectUser           SubjectKind = "User"
	SubjectGroup          SubjectKind = "Group"
	SubjectServiceAccount SubjectKind = "ServiceAccount"
)

// Subject is a user, group or service account in the target clusters.
// +kubebuilder:validation:XValidation:rule="self.kind != 'ServiceAccount' || has(self.namespace)",message="a ServiceAccount subject needs a namespace"
// +kubebuilder:validation:XValidation:rule="self.kind == 'ServiceAccount' || !has(self.namespace)",message="namespace is only allowed for a ServiceAccount subject"
// +kubebuilder:validation:XValidation:rule="self.kind == 'ServiceAccount' || !has(self.apiGroup) || self.apiGroup == 'rbac.authorization.k8s.io'",message="apiGroup of a User or Group subject must be rbac.authorization.k8s.io (or left out)"
// +kubebuilder:validation:XValidation:rule="self.kind != 'ServiceAccount' || !has(self.apiGroup) || self.apiGroup.size() == 0",message="apiGroup of a ServiceAccount subject must be empty (or left out)"
// +kubebuilder:validation:XValidation:rule="self.kind != 'ServiceAccount' || self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="a ServiceAccount name must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
type Subject struct {
	// kind is User, Group or ServiceAccount.
	// +required
	Kind SubjectKind `json:"kind"`

	// apiGroup is accepted as rbac/v1 writes it, so that subjects can be copied from
	// a RoleBinding: rbac.authorization.k8s.io for User and Group, empty for
	// ServiceAccount. Drover renders the right value whether or not it is set.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	APIGroup string `json:"apiGroup,omitempty"`

	// name of the user, group or service account, as the target clusters' authenticators name it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`

	// namespace of a ServiceAccount subject; not allowed for User and Group.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// RoleRefKind is the kind of role an AccessBinding grants.
// +kubebuilder:validation:Enum=RoleTemplate;ClusterRole
type RoleRefKind string

const (
	// RoleRefRoleTemplate grants a Drover RoleTemplate (ClusterRole drover:<name> in the targets).
	RoleRefRoleTemplate RoleRefKind = "RoleTemplate"
	// RoleRefClusterRole grants a ClusterRole that already exists in the targets, such as view.
	RoleRefClusterRole RoleRefKind = "ClusterRole"
)

// RoleRef names the role an AccessBinding grants.
type RoleRef struct {
	// kind is RoleTemplate (a Drover RoleTemplate) or ClusterRole (one that exists in
	// the target clusters, such as view, edit, admin or cluster-admin).
	// +required
	Kind RoleRefKind `json:"kind"`

	// name of the RoleTemplate or ClusterRole.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9]([-a-zA-Z0-9_.:]*[a-zA-Z0-9])?$`
	Name string `json:"name"`
}

// AccessBindingSpec grants a role to subjects, either cluster-wide in selected clusters
// or in the namespaces of one project. Exactly one of project and clusters is set.
// +kubebuilder:validation:XValidation:rule="has(self.project) != has(self.clusters)",message="set exactly one of spec.project (project scope) and spec.clusters (cluster scope)"
// +kubebuilder:validation:XValidation:rule="self.roleRef.kind != 'RoleTemplate' || self.roleRef.name.size() <= 63",message="spec.roleRef.name: a RoleTemplate name is at most 63 characters"
type AccessBindingSpec struct {
	// subjects receive the role.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	Subjects []Subject `json:"subjects"`

	// roleRef is the role granted.
	// +required
	RoleRef RoleRef `json:"roleRef"`

	// project scope: the role is granted by a RoleBinding in every namespace of this
	// ClusterProject, on every cluster the project is placed on.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Project string `json:"project,omitempty"`

	// clusters scope: the role is granted by a ClusterRoleBinding in every selected cluster.
	// +optional
	Clusters *ClusterSelection `json:"clusters,omitempty"`
}

// AccessBindingStatus says where the binding holds.
type AccessBindingStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// selectedClusters counts the clusters the binding selects.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SelectedClusters int32 `json:"selectedClusters,omitempty"`

	// syncedClusters counts the selected clusters that hold the binding at its current generation.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SyncedClusters int32 `json:"syncedClusters,omitempty"`

	// synced is syncedClusters/selectedClusters, for display (e.g. 2/3).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Synced string `json:"synced,omitempty"`

	// failures names the selected clusters that do not hold the binding, and why (at most 20).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Failures []ClusterFailure `json:"failures,omitempty"`

	// shards holds each shard's account of the clusters it syncs, when the hub runs
	// several shards (docs/sharding.md); the fields above sum them.
	// +optional
	// +listType=map
	// +listMapKey=shard
	// +kubebuilder:validation:MaxItems=64
	Shards []ShardStatus `json:"shards,omitempty"`
}

// AccessBinding grants a role to users, groups or service accounts, in selected
// clusters or in a project's namespaces.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ab,categories=drover
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.roleRef.name`
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Synced",type=string,JSONPath=`.status.synced`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Role Kind",type=string,priority=10,JSONPath=`.spec.roleRef.kind`
// +kubebuilder:printcolumn:name="Message",type=string,priority=10,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: Drover uses it as a label value in target clusters"
// +kubebuilder:validation:XValidation:rule="self.metadata.name != 'agent'",message="metadata.name 'agent' is reserved: drover:agent names the agent's own ClusterRole and ClusterRoleBinding in every target"
type AccessBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the grant.
	// +required
	Spec AccessBindingSpec `json:"spec"`

	// status says where the grant holds.
	// +optional
	Status AccessBindingStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (b *AccessBinding) GetConditions() []metav1.Condition { return b.Status.Conditions }

// SetConditions replaces the status conditions.
func (b *AccessBinding) SetConditions(conds []metav1.Condition) { b.Status.Conditions = conds }

// AccessBindingList is a list of AccessBindings.
//
// +kubebuilder:object:root=true
type AccessBindingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessBinding `json:"items"`
}

func init() {
	register(&AccessBinding{}, &AccessBindingList{})
}
