package admission

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// The rules, as pure functions of the object and what the hub holds, so that table
// tests cover them without an API server. The validators (validators.go) feed them
// from the manager's cache.

// Violation is one rejected field.
type Violation struct {
	// Field is the path of the field, e.g. spec.namespaces[1].name.
	Field string
	// Type classifies the violation for clients that read the causes.
	Type metav1.CauseType
	// Message says what is wrong, and how to fix it where that is not obvious.
	Message string
}

// String is "<field>: <message>", as the rejection shows it.
func (v Violation) String() string { return v.Field + ": " + v.Message }

// AlwaysNeverManaged are the namespaces Drover never manages in any cluster, besides
// the operator namespace (and the agent's, drover-system, which is the default
// operator namespace).
var AlwaysNeverManaged = []string{"kube-system", "kube-public", "kube-node-lease", "default"}

// NeverManaged lists the namespaces no ClusterProject may hold: the system namespaces,
// the agent's namespace in every target (drover-system) and the operator namespace on
// the hub (--namespace), when that differs.
func NeverManaged(operatorNamespace string) []string {
	out := append(append([]string(nil), AlwaysNeverManaged...), render.AgentNamespace)
	if operatorNamespace != "" && !slices.Contains(out, operatorNamespace) {
		out = append(out, operatorNamespace)
	}
	return out
}

// CheckSubjects refuses the subjects no one may grant a role to (render.ForbiddenSubject):
// anonymous requests. It applies to every requester, system:masters included, since
// no permission makes such a grant safe.
func CheckSubjects(subjects []v1alpha1.Subject) []Violation {
	var out []Violation
	for i, s := range subjects {
		if why := render.ForbiddenSubject(s); why != "" {
			out = append(out, Violation{Field: fmt.Sprintf("spec.subjects[%d]", i), Type: metav1.CauseTypeForbidden, Message: why})
		}
	}
	return out
}

// CheckInherits checks the entries of a RoleTemplate's spec.inherits that old (the
// entries before an update; nil on create) did not have: each must name a RoleTemplate
// that exists, must not lead back to the template (a cycle), and must not lead to a
// template whose own inheritance is broken (a cycle or a missing template further
// down), since the template could then never be installed. others maps every other
// RoleTemplate on the hub to its spec.inherits.
//
// Entries that were already there are not checked again, so that an edit that fixes
// one problem is never refused for another that it did not cause; the controllers
// report those (Stalled, InheritanceCycle or RoleTemplateNotFound).
func CheckInherits(name string, old, inherits []string, others map[string][]string) []Violation {
	var out []Violation
	graph := make(map[string][]string, len(others)+1)
	for k, v := range others {
		graph[k] = v
	}
	graph[name] = inherits
	for i, parent := range inherits {
		if slices.Contains(old, parent) {
			continue
		}
		field := fmt.Sprintf("spec.inherits[%d]", i)
		if parent == name {
			out = append(out, Violation{field, metav1.CauseTypeFieldValueInvalid, "a RoleTemplate cannot inherit itself"})
			continue
		}
		if _, ok := others[parent]; !ok {
			out = append(out, Violation{field, metav1.CauseTypeFieldValueNotFound,
				fmt.Sprintf("RoleTemplate %q does not exist; create it first", parent)})
			continue
		}
		if msg := walkInherits(name, parent, graph); msg != "" {
			out = append(out, Violation{field, metav1.CauseTypeFieldValueInvalid, msg})
		}
	}
	return out
}

// walkInherits follows the inheritance from parent, depth first, and describes the
// first problem it finds: a way back to name (a cycle through the template being
// checked), a missing template, or a cycle among the others; "" when there is none.
func walkInherits(name, parent string, graph map[string][]string) string {
	done := map[string]bool{}
	var path []string
	var visit func(n string) string
	visit = func(n string) string {
		if n == name {
			return fmt.Sprintf("inheriting %q forms a cycle: %s", parent, strings.Join(append(append([]string{name}, path...), name), " -> "))
		}
		if i := slices.Index(path, n); i >= 0 {
			return fmt.Sprintf("RoleTemplate %q cannot be inherited: its inheritance forms a cycle: %s", parent,
				strings.Join(append(append([]string(nil), path[i:]...), n), " -> "))
		}
		if done[n] {
			return ""
		}
		next, ok := graph[n]
		if !ok {
			return fmt.Sprintf("RoleTemplate %q cannot be inherited: it inherits RoleTemplate %q, which does not exist (%s)", parent, n,
				strings.Join(append(append([]string(nil), path...), n), " -> "))
		}
		path = append(path, n)
		for _, p := range next {
			if msg := visit(p); msg != "" {
				return msg
			}
		}
		path = path[:len(path)-1]
		done[n] = true
		return ""
	}
	return visit(parent)
}

// Claims maps every namespace to the ClusterProject that holds it, as rendering
// decides between projects that claim the same namespace: the older claim wins
// (creation time, then name). Projects being deleted and the project named except
// are left out.
func Claims(projects []v1alpha1.ClusterProject, except string) map[string]string {
	ordered := make([]*v1alpha1.ClusterProject, 0, len(projects))
	for i := range projects {
		if projects[i].Name != except && projects[i].DeletionTimestamp.IsZero() {
			ordered = append(ordered, &projects[i])
		}
	}
	sort.SliceStable(ordered, func(i, j int) bool {
		ti, tj := ordered[i].CreationTimestamp, ordered[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ordered[i].Name < ordered[j].Name
	})
	claims := map[string]string{}
	for _, p := range ordered {
		for _, ns := range p.Spec.Namespaces {
			if _, taken := claims[ns.Name]; !taken {
				claims[ns.Name] = p.Name
			}
		}
	}
	return claims
}

// CheckNamespaces checks a ClusterProject's spec.namespaces. Every entry must not be
// a namespace Drover never manages (neverManaged). Entries that old (the namespaces
// before an update; nil on create) did not have must not be claimed by another
// project (claims, from Claims): a namespace belongs to one project. A claim that
// predates the webhook is not held against an edit that does not add it; rendering
// gives the namespace to the older claim and reports the conflict.
func CheckNamespaces(old, namespaces []v1alpha1.ProjectNamespace, claims map[string]string, neverManaged []string, operatorNamespace string) []Violation {
	var out []Violation
	had := map[string]bool{}
	for _, ns := range old {
		had[ns.Name] = true
	}
	for i, ns := range namespaces {
		field := fmt.Sprintf("spec.namespaces[%d].name", i)
		if slices.Contains(neverManaged, ns.Name) {
			msg := fmt.Sprintf("namespace %q is never managed by Drover", ns.Name)
			if ns.Name == operatorNamespace {
				msg += ": it is the operator namespace, which holds the hub's Secrets"
			}
			out = append(out, Violation{field, metav1.CauseTypeForbidden, msg})
			continue
		}
		if had[ns.Name] {
			continue
		}
		if other, ok := claims[ns.Name]; ok {
			out = append(out, Violation{field, metav1.CauseTypeFieldValueDuplicate,
				fmt.Sprintf("namespace %q already belongs to ClusterProject %q; a namespace belongs to one project", ns.Name, other)})
		}
	}
	return out
}

// Referencing returns, sorted, the AccessBindings (not being deleted) that grant
// RoleTemplate template.
func Referencing(template string, bindings []v1alpha1.AccessBinding) []string {
	var out []string
	for i := range bindings {
		b := &bindings[i]
		if b.DeletionTimestamp.IsZero() && b.Spec.RoleRef.Kind == v1alpha1.RoleRefRoleTemplate && b.Spec.RoleRef.Name == template {
			out = append(out, b.Name)
		}
	}
	sort.Strings(out)
	return out
}

// listNames joins names for a message, at most limit of them.
func listNames(names []string, limit int) string {
	if len(names) <= limit {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:limit], ", "), len(names)-limit)
}
