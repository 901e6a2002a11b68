package remote

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// stripNode keeps only what cluster facts need of a Node (name, labels, a few
// annotations, provider ID, Ready, capacity, allocatable and version info), so that
// a thousand-node cluster costs the manager little memory.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:            n.Name,
			UID:             n.UID,
			ResourceVersion: n.ResourceVersion,
			Labels:          n.Labels,
		},
		Spec: corev1.NodeSpec{ProviderID: n.Spec.ProviderID},
		Status: corev1.NodeStatus{
			Capacity:    n.Status.Capacity,
			Allocatable: n.Status.Allocatable,
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: n.Status.NodeInfo.KubeletVersion, OSImage: n.Status.NodeInfo.OSImage, ContainerRuntimeVersion: n.Status.NodeInfo.ContainerRuntimeVersion},
		},
	}
	if v, ok := n.Annotations["kubeadm.alpha.kubernetes.io/cri-socket"]; ok {
		out.Annotations = map[string]string{"kubeadm.alpha.kubernetes.io/cri-socket": v}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}
