package admission

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	cradmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/planner"
)

// Paths of the provisioning webhooks.
const (
	ClusterNodePath    = "/validate-clusternodes"
	ManagedClusterPath = "/validate-managedclusters"
)

// ClusterNodeValidator refuses to delete a ClusterNode whose leaving would break
// its cluster: the last control plane, or an etcd member whose removal would leave
// fewer healthy members than etcd needs for quorum. The provisioning controller
// refuses the same (a deletion admitted while the webhook was away waits, saying
// why); this says it to whoever runs kubectl delete, at once.
type ClusterNodeValidator struct {
	Readers Readers
}

var _ cradmission.Validator[*v1alpha1.ClusterNode] = ClusterNodeValidator{}

// ValidateCreate allows every creation (the hub server creates ClusterNodes).
func (ClusterNodeValidator) ValidateCreate(context.Context, *v1alpha1.ClusterNode) (cradmission.Warnings, error) {
	return nil, nil
}

// ValidateUpdate allows every update.
func (ClusterNodeValidator) ValidateUpdate(context.Context, *v1alpha1.ClusterNode, *v1alpha1.ClusterNode) (cradmission.Warnings, error) {
	return nil, nil
}

// ValidateDelete checks that the cluster keeps a control plane and etcd's quorum.
func (v ClusterNodeValidator) ValidateDelete(ctx context.Context, n *v1alpha1.ClusterNode) (cradmission.Warnings, error) {
	if !n.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	var mc v1alpha1.ManagedCluster
	if err := v.Readers.Live.Get(ctx, client.ObjectKey{Name: n.Spec.Cluster}, &mc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, unavailable("the node's cluster", err)
	}
	if !mc.DeletionTimestamp.IsZero() || mc.Status.Provisioning == nil {
		return nil, nil
	}
	var list v1alpha1.ClusterNodeList
	if err := v.Readers.Live.List(ctx, &list); err != nil {
		return nil, unavailable("the cluster's nodes", err)
	}
	nodes := map[string]*v1alpha1.ClusterNode{}
	cps := 0
	for i := range list.Items {
		o := &list.Items[i]
		if o.Spec.Cluster != n.Spec.Cluster || !o.DeletionTimestamp.IsZero() {
			continue
		}
		nodes[o.Name] = o
		if o.Name != n.Name && slices.Contains(o.Spec.Roles, v1alpha1.NodeRoleControlPlane) {
			cps++
		}
	}
	refuse := func(msg string) error {
		return apierrors.NewForbidden(v1alpha1.GroupVersion.WithResource("clusternodes").GroupResource(), n.Name, fmt.Errorf("%s", msg))
	}
	if slices.Contains(n.Spec.Roles, v1alpha1.NodeRoleControlPlane) && cps == 0 {
		return nil, refuse(fmt.Sprintf("node %s is the last control plane of cluster %s: add another before removing it", n.Name, n.Spec.Cluster))
	}
	var members []string
	for _, m := range mc.Status.Provisioning.EtcdMembers {
		if nodes[m] != nil || m == n.Name {
			members = append(members, m)
		}
	}
	if !slices.Contains(members, n.Name) {
		return nil, nil
	}
	msg := planner.QuorumRefusal(n.Name, members, func(m string) bool {
		o := nodes[m]
		return o != nil && o.ProbeHealthy(planner.ProbeEtcd)
	})
	if msg != "" {
		return nil, refuse(msg)
	}
	return nil, nil
}

// ManagedClusterValidator refuses a Kubernetes version that skips a minor version
// for some node: the CEL rule compares the version with the one before, this with
// what each node runs, so that a second upgrade cannot start while the first has
// nodes behind.
type ManagedClusterValidator struct{}

var _ cradmission.Validator[*v1alpha1.ManagedCluster] = ManagedClusterValidator{}

// ValidateCreate allows every creation.
func (ManagedClusterValidator) ValidateCreate(context.Context, *v1alpha1.ManagedCluster) (cradmission.Warnings, error) {
	return nil, nil
}

// ValidateUpdate checks spec.provisioning.kubernetesVersion against the nodes.
func (ManagedClusterValidator) ValidateUpdate(_ context.Context, old, mc *v1alpha1.ManagedCluster) (cradmission.Warnings, error) {
	if mc.Spec.Provisioning == nil || old.Spec.Provisioning == nil || mc.Status.Provisioning == nil ||
		mc.Spec.Provisioning.KubernetesVersion == old.Spec.Provisioning.KubernetesVersion {
		return nil, nil
	}
	if vs := VersionSkew(mc.Spec.Provisioning.KubernetesVersion, mc.Status.Provisioning.Nodes); len(vs) > 0 {
		return nil, invalid("ManagedCluster", mc.Name, vs)
	}
	return nil, nil
}

// ValidateDelete allows every deletion.
func (ManagedClusterValidator) ValidateDelete(context.Context, *v1alpha1.ManagedCluster) (cradmission.Warnings, error) {
	return nil, nil
}

// VersionSkew finds the nodes that a move to version would take more than one minor
// version, or backwards.
func VersionSkew(version string, nodes []v1alpha1.ProvisionedNode) []Violation {
	want, ok := minor(version)
	if !ok {
		return nil // the schema's pattern answers for that
	}
	var vs []Violation
	for _, n := range nodes {
		have, ok := minor(n.KubernetesVersion)
		if !ok {
			continue
		}
		switch {
		case want > have+1:
			vs = append(vs, Violation{Field: "spec.provisioning.kubernetesVersion", Type: metav1.CauseTypeFieldValueInvalid,
				Message: fmt.Sprintf("node %s still runs %s: Drover upgrades one minor version at a time; wait for the upgrade under way to finish", n.Name, n.KubernetesVersion)})
		case want < have:
			vs = append(vs, Violation{Field: "spec.provisioning.kubernetesVersion", Type: metav1.CauseTypeFieldValueInvalid,
				Message: fmt.Sprintf("node %s already runs %s: Drover never downgrades a minor version", n.Name, n.KubernetesVersion)})
		}
		if len(vs) > 0 {
			break
		}
	}
	return vs
}

func minor(v string) (int, bool) {
	parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
	if len(parts) != 3 {
		return 0, false
	}
	m, err := strconv.Atoi(parts[1])
	return m, err == nil
}
