package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RoleTemplateContext says where a RoleTemplate may be bound.
// +kubebuilder:validation:Enum=Cluster;Project
type RoleTemplateContext string

const (
	// ContextCluster templates are bound cluster-wide, by AccessBindings with spec.clusters.
	ContextCluster RoleTemplateContext = "Cluster"
	// ContextProject templates are bound in a project's namespaces, by AccessBindings with spec.project.
	ContextProject RoleTemplateContext = "Project"
)

// PolicyRule is an rbac/v1 PolicyRule with validation: it becomes a rule of the
// ClusterRole that Drover installs in every target cluster.
// +kubebuilder:validation:XValidation:rule="!has(self.nonResourceURLs) || (!has(self.resources) && !has(self.apiGroups) && !has(self.resourceNames))",message="a rule applies either to resources (apiGroups, resources) or to nonResourceURLs, not both"
// +kubebuilder:validation:XValidation:rule="has(self.nonResourceURLs) || (has(self.resources) && has(self.apiGroups))",message="a resource rule needs apiGroups (\"\" for the core group) and resources"
type PolicyRule struct {
	// verbs the rule allows, such as get, list, watch, create, update, patch, delete, or "*".
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-zA-Z]+)$`
	Verbs []string `json:"verbs"`

	// apiGroups the resources belong to; "" is the core group, "*" all groups.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$`
	APIGroups []string `json:"apiGroups,omitempty"`

	// resources the rule applies to, such as pods, pods/log, or "*".
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9.*-]+(/[a-z0-9.*-]+)?)$`
	Resources []string `json:"resources,omitempty"`

	// resourceNames restricts the rule to objects with these names.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	ResourceNames []string `json:"resourceNames,omitempty"`

	// nonResourceURLs such as /healthz or /metrics/*; only meaningful in Cluster-context templates.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:items:Pattern=`^(\*|/.*)$`
	NonResourceURLs []string `json:"nonResourceURLs,omitempty"`
}

// RoleTemplateSpec is a role that Drover installs in every connected target cluster as
// the ClusterRole drover:<name>.
// +kubebuilder:validation:XValidation:rule="self.context == 'Cluster' || !has(self.rules) || self.rules.all(r, !has(r.nonResourceURLs))",message="nonResourceURLs are only allowed in a RoleTemplate whose context is Cluster"
type RoleTemplateSpec struct {
	// displayName is a human-friendly name for the role.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	DisplayName string `json:"displayName,omitempty"`

	// context says where the template may be bound: Cluster (cluster-wide, by an
	// AccessBinding with spec.clusters) or Project (in a project's namespaces, by an
	// AccessBinding with spec.project).
	// +required
	Context RoleTemplateContext `json:"context"`

	// rules the role grants, as in rbac/v1.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Rules []PolicyRule `json:"rules,omitempty"`

	// inherits names other RoleTemplates whose rules this one includes. Cycles and
	// missing templates are reported in status, never looped on.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Inherits []string `json:"inherits,omitempty"`
}

// RoleTemplateStatus is where the template is installed.
type RoleTemplateStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// clusters counts the connected clusters.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Clusters int32 `json:"clusters,omitempty"`

	// installedClusters counts the clusters holding the template's current generation.
	// +optional
	// +kubebuilder:validation:Minimum=0
	InstalledClusters int32 `json:"installedClusters,omitempty"`

	// installed is installedClusters/clusters, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Installed string `json:"installed,omitempty"`

	// failures names clusters where the template could not be installed (at most 20).
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

// RoleTemplate is a named set of RBAC rules, installed in every target cluster and
// granted to users and groups by AccessBindings.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=rt,categories=drover
// +kubebuilder:printcolumn:name="Context",type=string,JSONPath=`.spec.context`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Installed",type=string,JSONPath=`.status.installed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Display Name",type=string,priority=10,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Message",type=string,priority=10,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters: Drover uses it as a label value in target clusters"
// +kubebuilder:validation:XValidation:rule="self.metadata.name != 'agent'",message="metadata.name 'agent' is reserved: drover:agent names the agent's own ClusterRole and ClusterRoleBinding in every target"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.inherits) || !(self.metadata.name in self.spec.inherits)",message="spec.inherits: a RoleTemplate cannot inherit itself"
type RoleTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the role.
	// +required
	Spec RoleTemplateSpec `json:"spec"`

	// status is where the role is installed.
	// +optional
	Status RoleTemplateStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (t *RoleTemplate) GetConditions() []metav1.Condition { return t.Status.Conditions }

// SetConditions replaces the status conditions.
func (t *RoleTemplate) SetConditions(conds []metav1.Condition) { t.Status.Conditions = conds }

// RoleTemplateList is a list of RoleTemplates.
//
// +kubebuilder:object:root=true
type RoleTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RoleTemplate `json:"items"`
}

func init() {
	register(&RoleTemplate{}, &RoleTemplateList{})
}
