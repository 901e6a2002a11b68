package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
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
