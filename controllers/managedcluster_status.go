package controllers

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/clusterfacts"
)

// managedClusterConditions are the condition types this controller owns.
var managedClusterConditions = []string{
	v1alpha1.ReadyCondition, v1alpha1.ConnectedCondition, v1alpha1.AgentReadyCondition,
	v1alpha1.SyncedCondition, v1alpha1.ReconcilingCondition, v1alpha1.StalledCondition, v1alpha1.WarningCondition,
}

// setManagedClusterStatus turns what a reconcile learnt into status. It is pure, so
// that every combination is table-tested, and it only changes what changed.
func setManagedClusterStatus(s *clusterScope) {
	mc := s.cluster
	if s.settling {
		return
	}
	if s.paused {
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonPaused, "spec.paused is true: Drover does nothing for this cluster until it is false")
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonPaused, "paused")
		set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonPaused, "paused")
		// Nothing is probed while paused: what was known goes Unknown rather than
		// stay frozen at its last value.
		for _, t := range []string{v1alpha1.ConnectedCondition, v1alpha1.AgentReadyCondition, v1alpha1.SyncedCondition} {
			if conditions.Has(mc, t) {
				set(mc, t, metav1.ConditionUnknown, v1alpha1.ReasonPaused, "the cluster is paused: it is not probed or synced")
			}
		}
		mc.Status.ObservedGeneration = mc.Generation
		return
	}
	if s.deleting {
		// The deleting path reads no connection: Connected, AgentReady, Synced
		// and the facts keep what they last said, rather than turn "probing".
		setReady(s)
		mc.Status.ObservedGeneration = mc.Generation
		return
	}
	setConnected(s)
	setFacts(s)
	setAgentReady(s)
	setSynced(s)
	setReady(s)
	mc.Status.ObservedGeneration = mc.Generation
}

func setConnected(s *clusterScope) {
	mc := s.cluster
	switch {
	case s.problem != nil && s.problem.reason != v1alpha1.ReasonDuplicateCluster:
		set(mc, v1alpha1.ConnectedCondition, metav1.ConditionFalse, s.problem.reason, s.problem.message)
	case !s.health.Probed:
		set(mc, v1alpha1.ConnectedCondition, metav1.ConditionUnknown, v1alpha1.ReasonProbing, "probing "+s.endpoint)
	case s.health.Connected:
		set(mc, v1alpha1.ConnectedCondition, metav1.ConditionTrue, v1alpha1.ReasonConnected, s.health.Message)
	default:
		set(mc, v1alpha1.ConnectedCondition, metav1.ConditionFalse, s.health.Reason, s.health.Message)
	}
	if s.endpoint != "" {
		mc.Status.APIEndpoint = s.endpoint
	}
	if s.clusterID != "" {
		mc.Status.ClusterID = s.clusterID
	}
	if s.registration != nil && !equality.Semantic.DeepEqual(mc.Status.Registration, s.registration) {
		mc.Status.Registration = s.registration
	} else if mc.Spec.Registration == nil && mc.Status.Registration != nil {
		mc.Status.Registration = nil
	}
	setWarning(s)
	if s.health.Version != nil && s.health.Version.GitVersion != "" {
		mc.Status.KubernetesVersion = s.health.Version.GitVersion
	}
}

// setWarning reports what is accepted but unsafe about the connection: TLS
// verification off, a proxy, plain http. Absent when there is nothing to say.
func setWarning(s *clusterScope) {
	mc := s.cluster
	if len(s.warnings) == 0 {
		if conditions.Has(mc, v1alpha1.WarningCondition) {
			set(mc, v1alpha1.WarningCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "nothing unsafe about the connection")
		}
		return
	}
	msgs := make([]string, 0, len(s.warnings))
	for _, w := range s.warnings {
		msgs = append(msgs, w.Message)
	}
	set(mc, v1alpha1.WarningCondition, metav1.ConditionTrue, s.warnings[0].Reason, strings.Join(msgs, "; "))
}

func setFacts(s *clusterScope) {
	mc := s.cluster
	if s.nodes == nil {
		return
	}
	counts := &v1alpha1.NodeCounts{Ready: s.nodes.Ready, Total: s.nodes.Total}
	if !equality.Semantic.DeepEqual(mc.Status.Nodes, counts) {
		mc.Status.Nodes = counts
	}
	mc.Status.NodesReady = clusterfacts.NodesReadyString(*s.nodes)
	if !equality.Semantic.DeepEqual(mc.Status.Capacity, s.nodes.Capacity) {
		mc.Status.Capacity = s.nodes.Capacity
	}
	if !equality.Semantic.DeepEqual(mc.Status.Allocatable, s.nodes.Allocatable) {
		mc.Status.Allocatable = s.nodes.Allocatable
	}
	if s.distribution != "" {
		mc.Status.Distribution = s.distribution
	}
}

func setAgentReady(s *clusterScope) {
	mc := s.cluster
	// A copy: conditions.Get points into the slice, which set changes in place.
	var before *metav1.Condition
	if c := conditions.Get(mc, v1alpha1.AgentReadyCondition); c != nil {
		cc := *c
		before = &cc
	}
	connected := s.problem == nil && s.health.Connected
	switch {
	case !connected:
		set(mc, v1alpha1.AgentReadyCondition, metav1.ConditionUnknown, v1alpha1.ReasonDisconnected, "the cluster is not connected, so the agent's heartbeat cannot be read")
	case s.agentConflict:
		set(mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonOwnedByAnotherHub, s.agentErr)
	case s.agentErr != "":
		set(mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonAgentInstallFailed, s.agentErr)
	case s.lease == nil || !s.lease.found:
		set(mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonLeaseNotFound,
			fmt.Sprintf("waiting for the agent to create Lease %s/%s", AgentNamespace, AgentName))
	case s.lease.expired:
		set(mc, v1alpha1.AgentReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonLeaseExpired,
			fmt.Sprintf("the agent stopped renewing Lease %s/%s; status.agent.lastHeartbeatTime says when it last did", AgentNamespace, AgentName))
	default:
		set(mc, v1alpha1.AgentReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonAgentReporting,
			"agent "+versionOrUnknown(s.lease.version)+" is renewing its Lease")
	}
	// The heartbeat time is recorded when the agent's state changes, not on every
	// renewal, so that an idle fleet writes nothing to the hub. The Lease in the
	// target is the live record.
	if s.lease != nil && s.lease.found {
		prev := mc.Status.Agent
		after := conditions.Get(mc, v1alpha1.AgentReadyCondition)
		changed := prev == nil || prev.Version != s.lease.version || before == nil || before.Status != after.Status
		if changed {
			t := metav1.NewTime(s.lease.renewTime.Truncate(time.Second))
			mc.Status.Agent = &v1alpha1.AgentStatus{Version: s.lease.version, LastHeartbeatTime: &t}
		}
	}
}

// setSynced reports whether the cluster holds every intent that applies to it.
func setSynced(s *clusterScope) {
	mc := s.cluster
	switch {
	case s.problem != nil && s.problem.reason == v1alpha1.ReasonDuplicateCluster:
		set(mc, v1alpha1.SyncedCondition, metav1.ConditionFalse, s.problem.reason, "another ManagedCluster manages this cluster: nothing is synced through this one")
	case s.problem != nil || !s.health.Connected:
		set(mc, v1alpha1.SyncedCondition, metav1.ConditionUnknown, v1alpha1.ReasonDisconnected, "the cluster is not connected, so its RBAC and namespaces cannot be synced")
	case s.sync == nil && conditions.Has(mc, v1alpha1.SyncedCondition) && conditions.Get(mc, v1alpha1.SyncedCondition).Status != metav1.ConditionUnknown:
		// Not synced since the manager started: what status says still holds
		// until the first sync says otherwise (no flapping on restart).
	case s.sync == nil || !s.sync.Synced && s.sync.Reason == v1alpha1.ReasonDisconnected:
		set(mc, v1alpha1.SyncedCondition, metav1.ConditionUnknown, v1alpha1.ReasonProgressing, "syncing RoleTemplates, AccessBindings and projects")
	default:
		ok, reason, msg := s.sync.summary()
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		set(mc, v1alpha1.SyncedCondition, status, reason, msg)
	}
}

func versionOrUnknown(v string) string {
	if v == "" {
		return "(version unknown)"
	}
	return v
}

func setReady(s *clusterScope) {
	mc := s.cluster
	if s.deleting {
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonDeleting, "removing what Drover installed in the cluster")
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ReasonDeleting, "deleting")
		set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonDeleting, "deleting")
		return
	}
	// A copy: conditions.Get points into the slice, which the first set reorders.
	var connected *metav1.Condition
	if c := conditions.Get(mc, v1alpha1.ConnectedCondition); c != nil {
		cc := *c
		connected = &cc
	}
	switch {
	case s.problem != nil:
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, s.problem.reason, s.problem.message)
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, s.problem.reason, "waiting for the problem to be fixed")
		if s.problem.stalled {
			set(mc, v1alpha1.StalledCondition, metav1.ConditionTrue, s.problem.reason, s.problem.message)
		} else {
			set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, s.problem.reason, "retrying")
		}
		return
	case connected == nil || connected.Status == metav1.ConditionUnknown:
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionUnknown, v1alpha1.ReasonProbing, "connecting to the cluster")
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ReasonProgressing, "connecting")
		set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonProgressing, "connecting")
		return
	case connected.Status == metav1.ConditionFalse && needsPerson(connected.Reason):
		// The target answers and refuses the credentials, or presents a
		// certificate the kubeconfig's CA does not sign: only a person fixes that
		// (the probe goes on, and notices when they have).
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, connected.Reason, connected.Message)
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, connected.Reason, "waiting for the credentials or CA to be fixed")
		set(mc, v1alpha1.StalledCondition, metav1.ConditionTrue, connected.Reason, connected.Message)
		return
	case connected.Status == metav1.ConditionFalse:
		// Not stalled: the cluster may come back by itself, and the probe will notice.
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, connected.Reason, connected.Message)
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, connected.Reason, "waiting for the cluster to become reachable")
		set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, connected.Reason, "the connection is probed continuously")
		return
	case s.agentConflict:
		// The agent's objects in the target belong to another hub: Drover never
		// takes them over, so a person must remove them or the other registration.
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonOwnedByAnotherHub, s.agentErr)
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonOwnedByAnotherHub, "waiting for the conflict to be resolved")
		set(mc, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.ReasonOwnedByAnotherHub, s.agentErr)
		return
	case s.agentErr != "" || !s.agentInstalled:
		msg := "installing the agent"
		if s.agentErr != "" {
			msg = s.agentErr
		}
		set(mc, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.ReasonAgentInstalling, msg)
		set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.ReasonAgentInstalling, msg)
		set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonAgentInstalling, msg)
		return
	}
	msg := "connected to " + mc.Status.APIEndpoint
	if !conditions.IsTrue(mc, v1alpha1.AgentReadyCondition) {
		msg += "; agent not reporting: " + conditions.GetMessage(mc, v1alpha1.AgentReadyCondition)
	}
	if s.factsErr != "" {
		msg += "; " + s.factsErr
	}
	set(mc, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReasonSucceeded, msg)
	set(mc, v1alpha1.ReconcilingCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "up to date")
	set(mc, v1alpha1.StalledCondition, metav1.ConditionFalse, v1alpha1.ReasonSucceeded, "up to date")
}

// needsPerson tells whether a Connected=False reason needs a person: the target
// answered, and refused the credentials or presented a certificate the kubeconfig
// does not trust. An unreachable target may come back by itself.
func needsPerson(reason string) bool {
	switch reason {
	case v1alpha1.ReasonUnauthorized, v1alpha1.ReasonForbidden, v1alpha1.ReasonCertificateInvalid:
		return true
	}
	return false
}

// set sets a condition, keeping lastTransitionTime unless the status changes.
func set(obj conditions.Setter, typ string, status metav1.ConditionStatus, reason, message string) {
	if len(message) > 1024 {
		message = message[:1021] + "..."
	}
	conditions.Set(obj, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message})
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// nodeChanged tells whether an update changed anything that cluster facts use.
func nodeChanged(old, cur *corev1.Node) bool {
	return !equality.Semantic.DeepEqual(old.Labels, cur.Labels) ||
		old.Spec.ProviderID != cur.Spec.ProviderID ||
		nodeReady(old) != nodeReady(cur) ||
		!equality.Semantic.DeepEqual(old.Status.Capacity, cur.Status.Capacity) ||
		!equality.Semantic.DeepEqual(old.Status.Allocatable, cur.Status.Allocatable)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
