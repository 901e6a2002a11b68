package controllers

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/cluster-api/util/conditions"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/remote"
)

// While a ManagedCluster is being deleted its connection is not read: what status
// said of the connection, the agent and the sync stays, and only Ready says Deleting.
func TestStatusWhileDeleting(t *testing.T) {
	mc := &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: "edge", Generation: 3}}
	for _, typ := range []string{v1alpha1.ConnectedCondition, v1alpha1.AgentReadyCondition, v1alpha1.SyncedCondition} {
		conditions.Set(mc, metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: "Before", Message: "before"})
	}
	setManagedClusterStatus(&clusterScope{cluster: mc, now: time.Now(), deleting: true})
	for _, typ := range []string{v1alpha1.ConnectedCondition, v1alpha1.AgentReadyCondition, v1alpha1.SyncedCondition} {
		if c := conditions.Get(mc, typ); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Before" {
			t.Errorf("%s changed while deleting: %+v", typ, c)
		}
	}
	if c := conditions.Get(mc, v1alpha1.ReadyCondition); c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonDeleting {
		t.Errorf("Ready: %+v", c)
	}
	if mc.Status.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d", mc.Status.ObservedGeneration)
	}
}

// What kstatus (Flux, `kubectl wait`) makes of a ManagedCluster: Failed where a
// person must act, InProgress while it may come right by itself, Current when Ready.
func TestManagedClusterKstatus(t *testing.T) {
	connected := remote.Health{Probed: true, Connected: true, Reason: v1alpha1.ReasonConnected, Message: "ok"}
	down := func(reason string) remote.Health {
		return remote.Health{Probed: true, Reason: reason, Message: "the target said no"}
	}
	lease := &leaseState{found: true, renewTime: time.Now(), version: "v1"}
	cases := []struct {
		name  string
		scope clusterScope
		want  kstatus.Status
	}{
		{"ready", clusterScope{health: connected, agentInstalled: true, lease: lease}, kstatus.CurrentStatus},
		{"probing", clusterScope{}, kstatus.InProgressStatus},
		{"installing the agent", clusterScope{health: connected}, kstatus.InProgressStatus},
		{"unreachable", clusterScope{health: down(v1alpha1.ReasonUnreachable)}, kstatus.InProgressStatus},
		{"tunnel down", clusterScope{health: down(v1alpha1.ReasonTunnelDisconnected)}, kstatus.InProgressStatus},
		{"401", clusterScope{health: down(v1alpha1.ReasonUnauthorized)}, kstatus.FailedStatus},
		{"403", clusterScope{health: down(v1alpha1.ReasonForbidden)}, kstatus.FailedStatus},
		{"untrusted certificate", clusterScope{health: down(v1alpha1.ReasonCertificateInvalid)}, kstatus.FailedStatus},
		{"missing Secret", clusterScope{problem: &problem{v1alpha1.ReasonSecretNotFound, "no secret", true}}, kstatus.FailedStatus},
		{"identity unknown", clusterScope{health: connected, problem: &problem{v1alpha1.ReasonIdentityUnknown, "cannot read kube-system", false}}, kstatus.InProgressStatus},
		{"identity refused", clusterScope{health: connected, problem: &problem{v1alpha1.ReasonIdentityUnknown, "cannot read kube-system: 403", true}}, kstatus.FailedStatus},
		{"agent owned by another hub", clusterScope{health: connected, agentConflict: true, agentErr: "taken"}, kstatus.FailedStatus},
		{"agent not reporting is still Ready", clusterScope{health: connected, agentInstalled: true, lease: &leaseState{found: true, expired: true}}, kstatus.CurrentStatus},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mc := &v1alpha1.ManagedCluster{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ManagedCluster"},
				ObjectMeta: metav1.ObjectMeta{Name: "edge", Generation: 1}}
			s := tc.scope
			s.cluster, s.now = mc, time.Now()
			setManagedClusterStatus(&s)
			if got := kstatusOf(t, mc); got != tc.want {
				t.Errorf("kstatus %s, want %s; conditions %+v", got, tc.want, mc.Status.Conditions)
			}
			again := mc.DeepCopy()
			s.cluster = again
			setManagedClusterStatus(&s)
			if fmt.Sprint(again.Status.Conditions) != fmt.Sprint(mc.Status.Conditions) {
				t.Errorf("not idempotent:\n%v\n%v", again.Status.Conditions, mc.Status.Conditions)
			}
		})
	}
}
