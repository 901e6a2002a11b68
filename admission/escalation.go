package admission

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/component-helpers/auth/rbac/validation"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// Escalation prevention, as pure functions of what the hub holds: who holds which
// rules where, through Drover's own AccessBindings, and which rules a grant would add
// that its requester does not hold. The validators (validators.go) add the other way
// to be allowed, the hub verbs bind and escalate, which a SubjectAccessReview checks.
//
// Drover writes into the targets as cluster-admin, so the targets' own escalation
// checks never see who asked for a grant: these rules stand in for them, at the hub,
// with Kubernetes' own rule comparison (k8s.io/component-helpers/auth/rbac/validation).

// HubServiceAccountPrefix goes before the name of a hub ServiceAccount
// (system:serviceaccount:<ns>:<name>) wherever it stands for that account in a target,
// so that a hub ServiceAccount can never act as, or hold the rights of, a target's
// own ServiceAccount of the same name.
const HubServiceAccountPrefix = "drover:hub:"

// AuthenticatedGroup is the one system group a hub identity keeps in the targets.
const AuthenticatedGroup = "system:authenticated"

// MastersGroup holds every permission on the hub; no rule here ever hinders it.
const MastersGroup = "system:masters"

// Requester is a hub user as the target clusters know it, and so as AccessBindings
// name it: see TargetIdentity.
type Requester struct {
	User   string
	Groups []string
}

// TargetIdentity is the identity a hub user has in the targets: the same user name
// (a hub ServiceAccount's with HubServiceAccountPrefix), and the same groups except
// the system: groups, which the target's own authenticators assign, of which only
// system:authenticated is kept.
func TargetIdentity(user string, groups []string) Requester {
	r := Requester{User: user}
	if strings.HasPrefix(user, "system:serviceaccount:") {
		r.User = HubServiceAccountPrefix + user
	}
	for _, g := range groups {
		if !strings.HasPrefix(g, "system:") || g == AuthenticatedGroup {
			r.Groups = append(r.Groups, g)
		}
	}
	return r
}

// is tells whether subject s names the requester.
func (r Requester) is(s v1alpha1.Subject) bool {
	switch s.Kind {
	case v1alpha1.SubjectUser:
		return s.Name == r.User
	case v1alpha1.SubjectGroup:
		return slices.Contains(r.Groups, s.Name)
	}
	// A ServiceAccount subject is one of the target's own accounts: no hub identity
	// is ever one (see HubServiceAccountPrefix).
	return false
}

// BuiltInRoleTemplates are the RoleTemplates Drover ships (config/roletemplates).
// Everything inherits or binds them, so changing their rules or inheritance always
// needs the hub verb escalate.
var BuiltInRoleTemplates = []string{"cluster-owner", "cluster-member", "project-owner", "project-member", "read-only"}

// State is what the hub holds, as the escalation rules read it.
type State struct {
	// Templates are the RoleTemplates with their inheritance flattened.
	Templates map[string]*render.ResolvedTemplate
	// Bindings are the AccessBindings that are not being deleted.
	Bindings []v1alpha1.AccessBinding
	// Projects by name.
	Projects map[string]*v1alpha1.ClusterProject
	// Clusters are the ManagedClusters (name and labels) by name.
	Clusters map[string]render.Cluster
	// clusterNames sorted, for stable messages.
	clusterNames []string
	// raw are the RoleTemplates as the hub holds them.
	raw []v1alpha1.RoleTemplate
}

// NewState indexes what the hub holds. Objects being deleted are left out: they no
// longer grant anything, or soon will not.
func NewState(templates []v1alpha1.RoleTemplate, bindings []v1alpha1.AccessBinding, projects []v1alpha1.ClusterProject, clusters []v1alpha1.ManagedCluster) *State {
	s := &State{
		Templates: render.ResolveTemplates(templates),
		raw:       templates,
		Projects:  make(map[string]*v1alpha1.ClusterProject, len(projects)),
		Clusters:  make(map[string]render.Cluster, len(clusters)),
	}
	for i := range bindings {
		if bindings[i].DeletionTimestamp.IsZero() {
			s.Bindings = append(s.Bindings, bindings[i])
		}
	}
	for i := range projects {
		if projects[i].DeletionTimestamp.IsZero() {
			s.Projects[projects[i].Name] = &projects[i]
		}
	}
	for i := range clusters {
		if c := &clusters[i]; c.DeletionTimestamp.IsZero() {
			s.Clusters[c.Name] = render.Cluster{Name: c.Name, Labels: c.Labels}
			s.clusterNames = append(s.clusterNames, c.Name)
		}
	}
	sort.Strings(s.clusterNames)
	return s
}

// Place is where a grant takes effect: cluster-wide in one cluster (Project empty),
// or in the namespaces of a project in one cluster (Cluster empty: wherever the
// project is placed, for a project placed on no cluster yet).
type Place struct {
	Cluster string
	Project string
}

func (p Place) String() string {
	switch {
	case p.Project == "":
		return fmt.Sprintf("cluster-wide in cluster %q", p.Cluster)
	case p.Cluster == "":
		return fmt.Sprintf("in the namespaces of project %q", p.Project)
	}
	return fmt.Sprintf("in the namespaces of project %q on cluster %q", p.Project, p.Cluster)
}

// selects tells whether a selection picks the named cluster. A cluster that does not
// exist yet is picked by name only: its labels are not known.
func (s *State) selects(sel v1alpha1.ClusterSelection, name string) bool {
	if slices.Contains(sel.Names, name) {
		return true
	}
	c, ok := s.Clusters[name]
	if !ok || sel.Selector == nil {
		return false
	}
	ok, err := render.Selects(v1alpha1.ClusterSelection{Selector: sel.Selector}, c)
	return err == nil && ok
}

// Scope lists the places a binding with this spec grants in, as the hub stands now,
// or says why its scope is open-ended (it would grant in places that do not exist
// yet, so that no one can be said to hold its rules there already).
func (s *State) Scope(spec v1alpha1.AccessBindingSpec) (places []Place, openEnded string) {
	if spec.Project != "" {
		p, ok := s.Projects[spec.Project]
		if !ok {
			return nil, fmt.Sprintf("spec.project: ClusterProject %q does not exist, so where it will grant is not known yet", spec.Project)
		}
		for _, name := range s.clusterNames {
			if s.selects(p.Spec.Clusters, name) {
				places = append(places, Place{Cluster: name, Project: p.Name})
			}
		}
		if len(places) == 0 {
			// Placed nowhere yet: only what follows the project wherever it goes
			// (bindings on this same project) can hold the rules.
			places = []Place{{Project: p.Name}}
		}
		return places, ""
	}
	if spec.Clusters == nil {
		return nil, "neither spec.project nor spec.clusters is set"
	}
	if spec.Clusters.Selector != nil {
		return nil, "spec.clusters.selector selects every cluster that matches it, now and later"
	}
	for _, name := range spec.Clusters.Names {
		places = append(places, Place{Cluster: name})
	}
	return places, ""
}

// heldBy returns the bindings through which who holds rules: those that name them,
// grant a RoleTemplate and can be rendered (no problem with their spec).
func (s *State) heldBy(who Requester) []*v1alpha1.AccessBinding {
	var out []*v1alpha1.AccessBinding
	for i := range s.Bindings {
		b := &s.Bindings[i]
		if b.Spec.RoleRef.Kind == v1alpha1.RoleRefClusterRole {
			// A ClusterRole's rules are each target's own: the hub cannot know what
			// holding one means, so it counts for nothing here.
			continue
		}
		if !slices.ContainsFunc(b.Spec.Subjects, who.is) {
			continue
		}
		if render.BindingProblem(b, s.Templates, s.Projects) != nil {
			continue
		}
		out = append(out, b)
	}
	return out
}

// held returns the rules that bindings (heldBy's) grant at place p: the cluster-scoped
// ones that select its cluster, and, in a project's namespaces, those of that project.
func (s *State) held(bindings []*v1alpha1.AccessBinding, p Place) []rbacv1.PolicyRule {
	var rules []rbacv1.PolicyRule
	for _, b := range bindings {
		switch {
		case b.Spec.Clusters != nil:
			if p.Cluster == "" || !s.selects(*b.Spec.Clusters, p.Cluster) {
				continue
			}
		case b.Spec.Project != p.Project || p.Project == "":
			continue
		}
		rules = append(rules, s.Templates[b.Spec.RoleRef.Name].Rules...)
	}
	return rules
}

// Shortfall is what a requester lacks at one place.
type Shortfall struct {
	Place   Place
	Missing []rbacv1.PolicyRule
}

// Lacks returns, for each place, the rules of want that who does not hold there
// through AccessBindings (Kubernetes' coverage rules: a rule is held when the held
// rules together allow every verb on every resource it names). Nil means who holds
// them all everywhere.
func (s *State) Lacks(who Requester, places []Place, want []rbacv1.PolicyRule) []Shortfall {
	if len(want) == 0 {
		return nil
	}
	mine := s.heldBy(who)
	var out []Shortfall
	for _, p := range places {
		if ok, missing := validation.Covers(s.held(mine, p), want); !ok {
			out = append(out, Shortfall{Place: p, Missing: missing})
		}
	}
	return out
}

// Added returns the rules of now that before does not cover: what a change of a
// role's rules grants that it did not grant already. Removing rules adds nothing.
func Added(before, now []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	if len(before) == 0 {
		return now
	}
	var out []rbacv1.PolicyRule
	for _, r := range now {
		if ok, _ := validation.Covers(before, []rbacv1.PolicyRule{r}); !ok {
			out = append(out, r)
		}
	}
	return out
}

// Inheritors returns the templates whose flattened rules include name's: name itself
// and every template that inherits it, directly or through others. templates maps
// each template to its spec.inherits.
func Inheritors(name string, templates map[string][]string) map[string]bool {
	out := map[string]bool{name: true}
	for changed := true; changed; {
		changed = false
		for t, inherits := range templates {
			if out[t] {
				continue
			}
			for _, p := range inherits {
				if out[p] {
					out[t] = true
					changed = true
					break
				}
			}
		}
	}
	return out
}

// NeedsBind says why a subject can only be granted a role by holders of the hub verb
// bind, or "" when the holding path applies to it: groups the target's authenticators
// assign (system:authenticated, system:serviceaccounts and the rest) stand for whole
// classes of callers, so that holding a rule yourself is no ground to give it to all
// of them.
func NeedsBind(s v1alpha1.Subject) string {
	if s.Kind == v1alpha1.SubjectGroup && strings.HasPrefix(s.Name, "system:") {
		return fmt.Sprintf("group %q is every caller of its kind, not a person or a team", s.Name)
	}
	return ""
}

// FormatRule renders a policy rule compactly for messages, e.g.
// `apiGroups=[""] resources=[secrets] verbs=[get]`.
func FormatRule(r rbacv1.PolicyRule) string {
	var parts []string
	quote := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			if s == "" {
				s = `""`
			}
			q[i] = s
		}
		return "[" + strings.Join(q, ",") + "]"
	}
	if len(r.NonResourceURLs) > 0 {
		parts = append(parts, "nonResourceURLs="+quote(r.NonResourceURLs))
	} else {
		parts = append(parts, "apiGroups="+quote(r.APIGroups), "resources="+quote(r.Resources))
		if len(r.ResourceNames) > 0 {
			parts = append(parts, "resourceNames="+quote(r.ResourceNames))
		}
	}
	parts = append(parts, "verbs="+quote(r.Verbs))
	return strings.Join(parts, " ")
}

// maxRulesShown bounds the missing rules one message lists.
const maxRulesShown = 3

// describeShortfalls says, for a message, what is missing where: the first places in
// full, then how many more.
func describeShortfalls(sf []Shortfall) string {
	var b strings.Builder
	for i, s := range sf {
		if i == 2 {
			fmt.Fprintf(&b, "; and the same or more in %d more place(s)", len(sf)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s you lack ", s.Place)
		for j, r := range s.Missing {
			if j == maxRulesShown {
				fmt.Fprintf(&b, " and %d more", len(s.Missing)-j)
				break
			}
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(FormatRule(r))
		}
	}
	return b.String()
}
