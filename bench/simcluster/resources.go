package simcluster

import (
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// resource is one kind a simulated cluster serves.
type resource struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
	// status: the kind has a status subresource; writes to the object keep its
	// status, writes to /status keep everything else.
	status bool
	// generation: the API server counts spec changes in metadata.generation.
	generation bool
	shortNames []string
	// review: a create-only review (SubjectAccessReview), never stored.
	review bool
}

func (r *resource) gvk() schema.GroupVersionKind { return r.gvr.GroupVersion().WithKind(r.kind) }

var allVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

// resources are the kinds every simulated cluster serves.
var resources = []*resource{
	{gvr: gvr("", "v1", "namespaces"), kind: "Namespace", status: true, shortNames: []string{"ns"}},
	{gvr: gvr("", "v1", "nodes"), kind: "Node", status: true, shortNames: []string{"no"}},
	{gvr: gvr("", "v1", "serviceaccounts"), kind: "ServiceAccount", namespaced: true, shortNames: []string{"sa"}},
	{gvr: gvr("", "v1", "secrets"), kind: "Secret", namespaced: true},
	{gvr: gvr("", "v1", "configmaps"), kind: "ConfigMap", namespaced: true, shortNames: []string{"cm"}},
	{gvr: gvr("", "v1", "resourcequotas"), kind: "ResourceQuota", namespaced: true, status: true, shortNames: []string{"quota"}},
	{gvr: gvr("", "v1", "limitranges"), kind: "LimitRange", namespaced: true, shortNames: []string{"limits"}},
	{gvr: gvr("apps", "v1", "deployments"), kind: "Deployment", namespaced: true, status: true, generation: true, shortNames: []string{"deploy"}},
	{gvr: gvr("coordination.k8s.io", "v1", "leases"), kind: "Lease", namespaced: true},
	{gvr: gvr("networking.k8s.io", "v1", "networkpolicies"), kind: "NetworkPolicy", namespaced: true, generation: true, shortNames: []string{"netpol"}},
	{gvr: gvr("rbac.authorization.k8s.io", "v1", "clusterroles"), kind: "ClusterRole"},
	{gvr: gvr("rbac.authorization.k8s.io", "v1", "clusterrolebindings"), kind: "ClusterRoleBinding"},
	{gvr: gvr("rbac.authorization.k8s.io", "v1", "roles"), kind: "Role", namespaced: true},
	{gvr: gvr("rbac.authorization.k8s.io", "v1", "rolebindings"), kind: "RoleBinding", namespaced: true},
	{gvr: gvr("authorization.k8s.io", "v1", "subjectaccessreviews"), kind: "SubjectAccessReview", review: true},
	{gvr: gvr("authorization.k8s.io", "v1", "selfsubjectaccessreviews"), kind: "SelfSubjectAccessReview", review: true},
}

func gvr(g, v, r string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: g, Version: v, Resource: r}
}

// byGVR indexes resources by group, version and plural name.
var byGVR = func() map[schema.GroupVersionResource]*resource {
	m := map[schema.GroupVersionResource]*resource{}
	for _, r := range resources {
		m[r.gvr] = r
	}
	return m
}()

// groupVersions lists the served group versions, the core group first.
func groupVersions() []schema.GroupVersion {
	seen := map[schema.GroupVersion]bool{}
	var out []schema.GroupVersion
	for _, r := range resources {
		gv := r.gvr.GroupVersion()
		if !seen[gv] {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Group == "" && out[j].Group != "" })
	return out
}

// apiResourceList is the discovery document of one group version.
func apiResourceList(gv schema.GroupVersion) *metav1.APIResourceList {
	l := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
	for _, r := range resources {
		if r.gvr.GroupVersion() != gv {
			continue
		}
		verbs := allVerbs
		if r.review {
			verbs = metav1.Verbs{"create"}
		}
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.gvr.Resource, Namespaced: r.namespaced, Kind: r.kind,
			Verbs: verbs, ShortNames: r.shortNames, SingularName: ""})
		if r.status {
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.gvr.Resource + "/status", Namespaced: r.namespaced,
				Kind: r.kind, Verbs: metav1.Verbs{"get", "patch", "update"}})
		}
	}
	return l
}
