package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"

	"github.com/drover-io/drover/remote"
)

// The agent's objects in every target cluster.
const (
	// AgentNamespace holds the agent and its Lease in each target.
	AgentNamespace = "drover-system"
	// AgentName names the agent's ServiceAccount, Deployment and Lease.
	AgentName = "drover-agent"
	// AgentRoleName names the agent's ClusterRole, Role and their bindings.
	AgentRoleName = "drover:agent"
	// ClusterLabel names the ManagedCluster an object in a target belongs to.
	ClusterLabel = "management.drover.io/cluster"
	// ComponentLabel says which part of Drover an object belongs to.
	ComponentLabel = "app.kubernetes.io/component"
)

// agentObjects renders what the manager installs in a target cluster for its agent:
// the namespace, a ServiceAccount, a least-privilege ClusterRole (read Nodes, for
// facts) and Role (its Lease in drover-system only) with their bindings, and the
// Deployment running `drover agent`.
func agentObjects(cluster, image string) []runtime.ApplyConfiguration {
	labels := map[string]string{
		remote.ManagedByLabel: remote.ManagedByValue,
		ComponentLabel:        "agent",
		ClusterLabel:          cluster,
	}
	podLabels := map[string]string{ComponentLabel: "agent", "app.kubernetes.io/name": "drover"}
	sa := rbacv1ac.Subject().WithKind("ServiceAccount").WithName(AgentName).WithNamespace(AgentNamespace)
	return []runtime.ApplyConfiguration{
		corev1ac.Namespace(AgentNamespace).WithLabels(labels).
			WithLabels(map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}),
		corev1ac.ServiceAccount(AgentName, AgentNamespace).WithLabels(labels),
		rbacv1ac.ClusterRole(AgentRoleName).WithLabels(labels).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("nodes").WithVerbs("get", "list", "watch"),
		),
		rbacv1ac.ClusterRoleBinding(AgentRoleName).WithLabels(labels).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(AgentRoleName)).
			WithSubjects(sa),
		rbacv1ac.Role(AgentRoleName, AgentNamespace).WithLabels(labels).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("coordination.k8s.io").WithResources("leases").WithVerbs("create"),
			rbacv1ac.PolicyRule().WithAPIGroups("coordination.k8s.io").WithResources("leases").
				WithResourceNames(AgentName).WithVerbs("get", "update", "patch"),
		),
		rbacv1ac.RoleBinding(AgentRoleName, AgentNamespace).WithLabels(labels).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName(AgentRoleName)).
			WithSubjects(sa),
		appsv1ac.Deployment(AgentName, AgentNamespace).WithLabels(labels).WithSpec(
			appsv1ac.DeploymentSpec().WithReplicas(1).
				WithSelector(metav1ac.LabelSelector().WithMatchLabels(podLabels)).
				WithTemplate(corev1ac.PodTemplateSpec().WithLabels(podLabels).WithSpec(
					corev1ac.PodSpec().WithServiceAccountName(AgentName).
						WithSecurityContext(corev1ac.PodSecurityContext().WithRunAsNonRoot(true).
							WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
						WithContainers(corev1ac.Container().WithName("agent").WithImage(image).
							WithArgs("agent", "--cluster-name="+cluster, "--namespace="+AgentNamespace).
							WithResources(corev1ac.ResourceRequirements().
								WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")}).
								WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")})).
							WithSecurityContext(corev1ac.SecurityContext().WithAllowPrivilegeEscalation(false).
								WithReadOnlyRootFilesystem(true).WithRunAsUser(65532).
								WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")))),
				)),
		),
	}
}

// agentHash identifies the desired agent install, so that it is applied once per
// connection and change rather than on every reconcile.
func agentHash(cluster, image string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "v1|%s|%s", cluster, image))
	return hex.EncodeToString(sum[:8])
}
