package simcluster

import (
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// Identity is who a request acts as.
type Identity struct {
	User   string
	Groups []string
}

// AdminUser is the user every cluster's bearer token authenticates as; it is in
// group system:masters, which is allowed everything.
const AdminUser = "simcluster-admin"

func adminIdentity() Identity {
	return Identity{User: AdminUser, Groups: []string{"system:masters", "system:authenticated"}}
}

// Attributes describe one request to authorize, as a SubjectAccessReview does.
type Attributes struct {
	Verb        string
	Group       string
	Resource    string
	Subresource string
	Namespace   string
	Name        string
	// Path is set, and the fields above are not, for a non-resource request.
	Path string
}

// Allowed evaluates the cluster's RBAC as the API server's RBAC authorizer does:
// members of system:masters may do anything; others what a ClusterRoleBinding (in
// any namespace) or a RoleBinding (in the request's namespace) grants them.
func (c *Cluster) Allowed(id Identity, a Attributes) (bool, string) {
	if slices.Contains(id.Groups, "system:masters") {
		return true, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.objects[byGVR[gvr("rbac.authorization.k8s.io", "clusterrolebindings")]] {
		b := e.obj.(*rbacv1.ClusterRoleBinding)
		if !subjectsMatch(b.Subjects, "", id) {
			continue
		}
		if rulesAllow(c.rulesOf(b.RoleRef, ""), a) {
			return true, `RBAC: allowed by ClusterRoleBinding "` + b.Name + `" of ClusterRole "` + b.RoleRef.Name + `" to User "` + id.User + `"`
		}
	}
	if a.Namespace != "" {
		for _, e := range c.objects[byGVR[gvr("rbac.authorization.k8s.io", "rolebindings")]] {
			b := e.obj.(*rbacv1.RoleBinding)
			if b.Namespace != a.Namespace || !subjectsMatch(b.Subjects, b.Namespace, id) {
				continue
			}
			if rulesAllow(c.rulesOf(b.RoleRef, b.Namespace), a) {
				return true, `RBAC: allowed by RoleBinding "` + b.Name + "/" + b.Namespace + `"`
			}
		}
	}
	return false, ""
}

// rulesOf returns the rules of a binding's role, under c.mu.
func (c *Cluster) rulesOf(ref rbacv1.RoleRef, namespace string) []rbacv1.PolicyRule {
	switch ref.Kind {
	case "ClusterRole":
		if e := c.get(byGVR[gvr("rbac.authorization.k8s.io", "clusterroles")], "", ref.Name); e != nil {
			return e.obj.(*rbacv1.ClusterRole).Rules
		}
	case "Role":
		if e := c.get(byGVR[gvr("rbac.authorization.k8s.io", "roles")], namespace, ref.Name); e != nil {
			return e.obj.(*rbacv1.Role).Rules
		}
	}
	return nil
}

func subjectsMatch(subjects []rbacv1.Subject, bindingNamespace string, id Identity) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if s.Name == id.User {
				return true
			}
		case rbacv1.GroupKind:
			if slices.Contains(id.Groups, s.Name) {
				return true
			}
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = bindingNamespace
			}
			if ns != "" && id.User == "system:serviceaccount:"+ns+":"+s.Name {
				return true
			}
		}
	}
	return false
}

func rulesAllow(rules []rbacv1.PolicyRule, a Attributes) bool {
	for i := range rules {
		if ruleAllows(&rules[i], a) {
			return true
		}
	}
	return false
}

// ruleAllows is the RBAC authorizer's RuleAllows (k8s.io/kubernetes
// pkg/apis/rbac/v1/evaluation_helpers.go).
func ruleAllows(r *rbacv1.PolicyRule, a Attributes) bool {
	if !has(r.Verbs, a.Verb) {
		return false
	}
	if a.Resource == "" && a.Path != "" {
		for _, u := range r.NonResourceURLs {
			if u == "*" || u == a.Path || (strings.HasSuffix(u, "*") && strings.HasPrefix(a.Path, strings.TrimSuffix(u, "*"))) {
				return true
			}
		}
		return false
	}
	if !has(r.APIGroups, a.Group) {
		return false
	}
	combined := a.Resource
	if a.Subresource != "" {
		combined += "/" + a.Subresource
	}
	resOK := false
	for _, res := range r.Resources {
		if res == rbacv1.ResourceAll || res == combined || (a.Subresource != "" && res == "*/"+a.Subresource) {
			resOK = true
			break
		}
	}
	if !resOK {
		return false
	}
	return len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, a.Name)
}

func has(list []string, v string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, v)
}

// review answers a SubjectAccessReview spec.
func (c *Cluster) review(id Identity, spec authorizationv1.SubjectAccessReviewSpec) authorizationv1.SubjectAccessReviewStatus {
	var a Attributes
	switch {
	case spec.ResourceAttributes != nil:
		ra := spec.ResourceAttributes
		a = Attributes{Verb: ra.Verb, Group: ra.Group, Resource: ra.Resource, Subresource: ra.Subresource, Namespace: ra.Namespace, Name: ra.Name}
	case spec.NonResourceAttributes != nil:
		a = Attributes{Verb: spec.NonResourceAttributes.Verb, Path: spec.NonResourceAttributes.Path}
	}
	ok, reason := c.Allowed(id, a)
	return authorizationv1.SubjectAccessReviewStatus{Allowed: ok, Reason: reason}
}

// Can tells whether user, with groups, may do verb on a resource (group "" for the
// core group) in namespace ("" for cluster-wide), as a SubjectAccessReview answers.
func (c *Cluster) Can(user string, groups []string, verb, group, resource, namespace string) bool {
	ok, _ := c.Allowed(Identity{User: user, Groups: groups}, Attributes{Verb: verb, Group: group, Resource: resource, Namespace: namespace})
	return ok
}
