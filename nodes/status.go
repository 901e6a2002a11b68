package nodes

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// States of a ClusterNode, for display.
const (
	StateRegistered = "Registered"
	StateApplying   = "Applying"
	StateApplied    = "Applied"
	StateFailed     = "Failed"
)

// Reasons of a ClusterNode's conditions.
const (
	ReasonAwaitingPlan = "AwaitingPlan"
	ReasonApplying     = "Applying"
	ReasonPlanFailed   = "PlanFailed"
	ReasonProbeFailing = "ProbeFailing"
	ReasonApplied      = "Applied"
)

// stalledAfter is how many failed attempts at the same plan make a node Stalled: by
// then the step fails for a reason a person must look at.
const stalledAfter = 5

// SetStatus sets a ClusterNode's status from its node agent's report and the checksum
// of the plan published for it. The heartbeat moves only when something else
// changes, so that an idle node costs no writes.
func SetStatus(n *v1alpha1.ClusterNode, rep StatusReport, planChecksum string, now time.Time) {
	before := n.Status.DeepCopy()
	st := &n.Status
	st.ObservedGeneration = n.Generation
	st.PlanChecksum, st.AppliedChecksum = planChecksum, rep.AppliedChecksum
	st.AgentVersion = truncate(rep.AgentVersion, 128)
	if rep.KubernetesVersion != "" {
		st.KubernetesVersion = truncate(rep.KubernetesVersion, 64)
	}
	st.Failure = nil
	if f := rep.Failure; f != nil && f.Checksum == planChecksum {
		st.Failure = &v1alpha1.PlanFailure{Step: truncate(f.Step, 256), Message: truncate(f.Message, 8192), Attempts: int32(min(f.Attempts, 1<<30))}
	}
	st.Processes = nil
	for _, p := range rep.Processes {
		st.Processes = append(st.Processes, v1alpha1.ProcessResult{Name: truncate(p.Name, 63), Running: p.Running,
			Restarts: int32(min(p.Restarts, 1<<30)), LastExit: truncate(p.LastExit, 1024)})
	}
	st.Probes = nil
	var failing *v1alpha1.ProbeResult
	for _, p := range rep.Probes {
		st.Probes = append(st.Probes, v1alpha1.ProbeResult{Name: truncate(p.Name, 63), Healthy: p.Healthy, Message: truncate(p.Message, 4096)})
		if !p.Healthy && failing == nil {
			failing = &st.Probes[len(st.Probes)-1]
		}
	}

	var ready metav1.Condition
	reconciling, stalled := false, false
	switch {
	case planChecksum == "":
		st.State = StateRegistered
		ready = metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonAwaitingPlan, Message: "registered; waiting for the hub to plan this node"}
		reconciling = true
	case st.Failure != nil:
		st.State = StateFailed
		ready = metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonPlanFailed,
			Message: fmt.Sprintf("%s failed (attempt %d): %s", st.Failure.Step, st.Failure.Attempts, truncate(st.Failure.Message, 512))}
		stalled = st.Failure.Attempts >= stalledAfter
		reconciling = !stalled
	case st.AppliedChecksum != planChecksum:
		st.State = StateApplying
		ready = metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonApplying, Message: "applying its plan"}
		reconciling = true
	case failing != nil:
		st.State = StateApplied
		msg := "probe " + failing.Name + " is unhealthy"
		if failing.Message != "" {
			msg += ": " + truncate(failing.Message, 512)
		}
		ready = metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonProbeFailing, Message: msg}
		reconciling = true
	default:
		st.State = StateApplied
		ready = metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonApplied, Message: "runs its plan, every probe healthy"}
	}
	ready.Type, ready.ObservedGeneration = v1alpha1.ReadyCondition, n.Generation
	meta.SetStatusCondition(&st.Conditions, ready)
	setBool := func(typ string, v bool, reason string) {
		c := metav1.Condition{Type: typ, Status: metav1.ConditionFalse, Reason: reason, ObservedGeneration: n.Generation}
		if v {
			c.Status, c.Message = metav1.ConditionTrue, ready.Message
		}
		meta.SetStatusCondition(&st.Conditions, c)
	}
	setBool(v1alpha1.ReconcilingCondition, reconciling, ready.Reason)
	setBool(v1alpha1.StalledCondition, stalled, ready.Reason)
	if !equality.Semantic.DeepEqual(before, st) {
		t := metav1.NewTime(now)
		st.LastHeartbeatTime = &t
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
