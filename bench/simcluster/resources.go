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
	{gvr: gvr("", "namespaces"), kind: "Namespace", status: true, shortNames: []string{"ns"}},
	{gvr: gvr("", "nodes"), kind: "Node", status: true, shortNames: []string{"no"}},
	{gvr: gvr("", "serviceaccounts"), kind: "ServiceAccount", namespaced: true, shortNames: []string{"sa"}},
	{gvr: gvr("", "secrets"), kind: "Secret", namespaced: true},
	{gvr: gvr("", "configmaps"), kind: "ConfigMap", namespaced: true, shortNames: []string{"cm"}},
	{gvr: gvr("", "resourcequotas"), kind: "ResourceQuota", namespaced: true, status: true, shortNames: []string{"quota"}},
	{gvr: gvr("", "limitranges"), kind: "LimitRange", namespaced: true, shortNames: []string{"limits"}},
	{gvr: gvr("apps", "deployments"), kind: "Deployment", namespaced: true, status: true, generation: true, shortNames: []string{"deploy"}},
	{gvr: gvr("coordination.k8s.io", "leases"), kind: "Lease", namespaced: true},
	{gvr: gvr("networking.k8s.io", "networkpolicies"), kind: "NetworkPolicy", namespaced: true, generation: true, shortNames: []string{"netpol"}},
	{gvr: gvr("rbac.authorization.k8s.io", "clusterroles"), kind: "ClusterRole"},
	{gvr: gvr("rbac.authorization.k8s.io", "clusterrolebindings"), kind: "ClusterRoleBinding"},
	{gvr: gvr("rbac.authorization.k8s.io", "roles"), kind: "Role", namespaced: true},
	{gvr: gvr("rbac.authorization.k8s.io", "rolebindings"), kind: "RoleBinding", namespaced: true},
	{gvr: gvr("authorization.k8s.io", "subjectaccessreviews"), kind: "SubjectAccessReview", review: true},
	{gvr: gvr("authorization.k8s.io", "selfsubjectaccessreviews"), kind: "SelfSubjectAccessReview", review: true},
}

// gvr names a resource of version v1 (every kind served here is at v1).
func gvr(g, r string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: g, Version: "v1", Resource: r}
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
