package render

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The agent's objects in every target cluster.
const (
	// AgentNamespace holds the agent and its Lease in each target.
	AgentNamespace = "drover-system"
	// AgentName names the agent's ServiceAccount, Deployment and Lease.
	AgentName = "drover-agent"
	// AgentRoleName names the agent's ClusterRole, Role and their bindings.
	AgentRoleName = "drover:agent"
	// ComponentLabel says which part of Drover an object belongs to.
	ComponentLabel = "app.kubernetes.io/component"
	// AgentComponent is ComponentLabel's value on the agent's objects.
	AgentComponent = "agent"
	// AgentTunnelBindingName names the ClusterRoleBinding that lets the hub act
	// through the agent's tunnel (tunnel mode only).
	AgentTunnelBindingName = "drover:agent-tunnel"
	// AgentCredentialSecretName holds the agent's tunnel credential (tunnel mode).
	AgentCredentialSecretName = "drover-agent-credential"
	// AgentMetricsPort serves the agent's Prometheus metrics (port name metrics).
	AgentMetricsPort = 8080
	// AgentProbePort serves the agent's /healthz and /readyz (port name probes).
	AgentProbePort = 8081
)

// Agent renders what a target holds for its agent: the namespace, a ServiceAccount,
// a least-privilege ClusterRole (read Nodes, for facts) and Role (its Lease in
// drover-system only) with their bindings, and the Deployment running `drover agent`.
// They go through the same apply and prune as everything else Drover writes.
//
// In tunnel mode (a cluster registered with spec.registration) the hub reaches the
// API server only through the agent, which forwards the hub's requests under its own
// identity: the agent is then bound to cluster-admin (ClusterRoleBinding
// drover:agent-tunnel), as the hub's kubeconfig would be, may keep its credential in
// Secret drover-agent-credential, and finds its hub in Secret drover-agent-hub
// rather than in flags.
func Agent(cluster, image string, tunnel bool) []client.Object {
	labels := func() map[string]string {
		return map[string]string{ManagedByLabel: ManagedByValue, ComponentLabel: AgentComponent}
	}
	podLabels := map[string]string{ComponentLabel: AgentComponent, "app.kubernetes.io/name": "drover"}
	sa := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: AgentName, Namespace: AgentNamespace}}
	nsLabels := labels()
	nsLabels["pod-security.kubernetes.io/enforce"] = "restricted"
	args := []string{"agent", "--cluster-name=" + cluster, "--namespace=" + AgentNamespace}
	roleRules := []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{AgentName}, Verbs: []string{"get", "update", "patch"}},
		// The registration manifest's Secret: the hub's address and the
		// cluster's name (drover agent with no hub flags).
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"drover-agent-hub"}, Verbs: []string{"get"}},
	}
	if tunnel {
		// No hub flags: the agent reads everything from Secret drover-agent-hub.
		args = []string{"agent", "--namespace=" + AgentNamespace}
		roleRules = append(roleRules,
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{AgentCredentialSecretName}, Verbs: []string{"get", "update"}})
	}
	// Metrics for a Prometheus in the target, and probes that say whether the
	// heartbeat Lease is held (docs/observability.md).
	args = append(args, fmt.Sprintf("--metrics-bind-address=:%d", AgentMetricsPort), fmt.Sprintf("--health-probe-bind-address=:%d", AgentProbePort))
	objs := []client.Object{
		&corev1.Namespace{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			// Drover created it for the agent alone: it goes when the agent goes.
			ObjectMeta: metav1.ObjectMeta{Name: AgentNamespace, Labels: nsLabels,
				Annotations: map[string]string{NamespaceDeletionPolicyAnnotation: "Delete"}},
		},
		&corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentName, Namespace: AgentNamespace, Labels: labels()},
		},
		&rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentRoleName, Labels: labels()},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentRoleName, Labels: labels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: AgentRoleName},
			Subjects:   sa,
		},
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "Role"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentRoleName, Namespace: AgentNamespace, Labels: labels()},
			Rules:      roleRules,
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentRoleName, Namespace: AgentNamespace, Labels: labels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: AgentRoleName},
			Subjects:   sa,
		},
		&appsv1.Deployment{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentName, Namespace: AgentNamespace, Labels: labels()},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptrTo(int32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: podLabels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
					Spec: corev1.PodSpec{
						ServiceAccountName: AgentName,
						SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true),
							SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
						Containers: []corev1.Container{{
							Name:  "agent",
							Image: image,
							Args:  args,
							Ports: []corev1.ContainerPort{
								{Name: "metrics", ContainerPort: AgentMetricsPort, Protocol: corev1.ProtocolTCP},
								{Name: "probes", ContainerPort: AgentProbePort, Protocol: corev1.ProtocolTCP},
							},
							LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("probes")}},
								PeriodSeconds: 20},
							// Ready while the heartbeat Lease is held: a pod that is not Ready
							// is an agent the hub sees as dead (AgentReady False).
							ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("probes")}},
								PeriodSeconds: 10},
							Resources: corev1.ResourceRequirements{
								Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
								Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
							},
							SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptrTo(false), ReadOnlyRootFilesystem: ptrTo(true),
								RunAsUser: ptrTo(int64(65532)), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
						}},
					},
				},
			},
		},
	}
	if tunnel {
		// The hub acts through the agent, so the agent needs what the hub's
		// kubeconfig would have: Drover creates any ClusterRole a RoleTemplate
		// asks for, which RBAC allows only to holders of those rules.
		objs = append(objs, &rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: AgentTunnelBindingName, Labels: labels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   sa,
		})
	}
	return objs
}

func ptrTo[T any](v T) *T { return &v }

// agentDeploymentHeld compares a Deployment on what Drover sets: the API server
// defaults many fields, which must not count as drift.
func agentDeploymentHeld(d, l *appsv1.Deployment) bool {
	if l.Spec.Replicas == nil || d.Spec.Replicas == nil || *l.Spec.Replicas != *d.Spec.Replicas ||
		!subset(d.Spec.Template.Labels, l.Spec.Template.Labels) ||
		l.Spec.Template.Spec.ServiceAccountName != d.Spec.Template.Spec.ServiceAccountName ||
		len(l.Spec.Template.Spec.Containers) != len(d.Spec.Template.Spec.Containers) {
		return false
	}
	for i, c := range d.Spec.Template.Spec.Containers {
		lc := l.Spec.Template.Spec.Containers[i]
		if lc.Name != c.Name || lc.Image != c.Image || !slices.Equal(lc.Args, c.Args) ||
			!resourcesHeld(c.Resources.Requests, lc.Resources.Requests) || !resourcesHeld(c.Resources.Limits, lc.Resources.Limits) {
			return false
		}
	}
	return true
}
