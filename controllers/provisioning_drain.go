package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/planner"
	"github.com/drover-io/drover/remote"
)

// CordonedAnnotation marks a Node that Drover cordoned to drain it before a
// rollout moves it; Drover uncordons it once the node has moved. A Node someone
// else cordoned is never uncordoned by Drover.
const CordonedAnnotation = "management.drover.io/cordoned-for-rollout"

// targetClientset reaches a provisioned cluster through the hub's kubeconfig for it.
func (r *ProvisioningReconciler) targetClientset(ctx context.Context, mc *v1alpha1.ManagedCluster) (kubernetes.Interface, error) {
	var sec corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: ProvisionedKubeconfigSecretName(mc.Name)}, &sec); err != nil {
		return nil, err
	}
	cfg, err := remote.ParseKubeconfig(sec.Data[v1alpha1.DefaultKubeconfigKey])
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// drain cordons the workers the rollout waits for and evicts their pods (not
// DaemonSets', not static pods); it returns those with nothing left to evict.
// Evictions honour PodDisruptionBudgets: one refused is tried again on the next
// pass.
func (r *ProvisioningReconciler) drain(ctx context.Context, cs kubernetes.Interface, d *day2, names []string) (map[string]bool, error) {
	drained := map[string]bool{}
	for _, name := range names {
		cn := d.node(name)
		if cn == nil {
			continue
		}
		host := cn.Spec.Hostname
		node, err := cs.CoreV1().Nodes().Get(ctx, host, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			drained[name] = true // no Node: nothing runs there
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("draining node %s: %w", host, err)
		}
		if !node.Spec.Unschedulable {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}},"spec":{"unschedulable":true}}`, CordonedAnnotation)
			if _, err := cs.CoreV1().Nodes().Patch(ctx, host, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return nil, fmt.Errorf("cordoning node %s: %w", host, err)
			}
			r.Recorder.Eventf(d.mc, nil, corev1.EventTypeNormal, "NodeCordoned", "Drain", "node %s cordoned to drain it before it moves", name)
		}
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + host})
		if err != nil {
			return nil, fmt.Errorf("listing the pods of node %s: %w", host, err)
		}
		left := 0
		for i := range pods.Items {
			p := &pods.Items[i]
			if !evictable(p) {
				continue
			}
			left++
			if p.DeletionTimestamp != nil {
				continue
			}
			err := cs.CoreV1().Pods(p.Namespace).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
			switch {
			case err == nil, apierrors.IsNotFound(err):
			case apierrors.IsTooManyRequests(err):
				d.drainNote = fmt.Sprintf("a PodDisruptionBudget holds pod %s/%s on node %s", p.Namespace, p.Name, host)
			default:
				return nil, fmt.Errorf("evicting pod %s/%s from node %s: %w", p.Namespace, p.Name, host, err)
			}
		}
		if left == 0 {
			drained[name] = true
		}
	}
	return drained, nil
}

// evictable: a pod a drain evicts.
func evictable(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return false
	}
	return !slices.ContainsFunc(p.OwnerReferences, func(o metav1.OwnerReference) bool { return o.Kind == "DaemonSet" })
}

// uncordon makes the Nodes Drover cordoned schedulable again once they have moved
// (they are neither waiting to be drained nor moving now).
func (r *ProvisioningReconciler) uncordon(ctx context.Context, cs kubernetes.Interface, d *day2, ro *planner.Rollout) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if _, ours := n.Annotations[CordonedAnnotation]; !ours {
			continue
		}
		name := d.mc.Name + "-" + n.Name
		if ro != nil && (slices.Contains(ro.Drain, name) || slices.Contains(ro.Nodes, name)) {
			continue
		}
		if op := d.status.Operation; op != nil && op.Type == v1alpha1.OperationNodeRemoval && op.Target == name {
			continue // it is drained to leave, not to move
		}
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}},"spec":{"unschedulable":false}}`, CordonedAnnotation)
		if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("uncordoning node %s: %w", n.Name, err)
		}
		r.Recorder.Eventf(d.mc, nil, corev1.EventTypeNormal, "NodeUncordoned", "Drain", "node %s moved and is schedulable again", name)
	}
	return nil
}

// drainFor drains the named workers through the cluster's API.
func (r *ProvisioningReconciler) drainFor(ctx context.Context, d *day2, names []string) (map[string]bool, error) {
	cs, err := r.targetClientset(ctx, d.mc)
	if err != nil {
		return nil, fmt.Errorf("reaching the cluster to drain: %w", err)
	}
	return r.drain(ctx, cs, d, names)
}

// uncordonFor uncordons what Drover cordoned and what has moved.
func (r *ProvisioningReconciler) uncordonFor(ctx context.Context, d *day2, ro *planner.Rollout) error {
	cs, err := r.targetClientset(ctx, d.mc)
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	return r.uncordon(ctx, cs, d, ro)
}
