// Package render computes, as a pure function, the objects one target cluster must
// hold for the intents on the hub: a ClusterRole per RoleTemplate, a ClusterRoleBinding
// per cluster-scoped AccessBinding that selects the cluster, and the namespaces of the
// projects placed on the cluster with a RoleBinding in each of them per project-scoped
// AccessBinding.
//
// Nothing here does I/O, so the same code serves the hub (push) and, later, the agent
// (pull), and every case is covered by table tests and a fuzz test.
//
// Inherited rules are flattened: the ClusterRole of a template holds its own rules
// followed by those of every template it inherits, transitively, each rule once. A
// template whose inheritance is broken (a cycle, or a missing template) is not
// rendered at all, and neither is any binding that uses it: Drover fails closed
// rather than grant a partial role.
package render

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// Labels on every object Drover renders into a target.
const (
	// ManagedByLabel marks every object Drover owns in a target; nothing without it
	// is ever changed or pruned.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "drover"
	// RoleTemplateLabel names the RoleTemplate a ClusterRole comes from.
	RoleTemplateLabel = "management.drover.io/roletemplate"
	// AccessBindingLabel names the AccessBinding a binding comes from.
	AccessBindingLabel = "management.drover.io/accessbinding"
	// ProjectLabel names the ClusterProject a namespace (or a binding in it) belongs to.
	ProjectLabel = "management.drover.io/project"
	// NamespaceDeletionPolicyAnnotation, on a namespace Drover manages, says what
	// happens when the namespace leaves its project: Retain (release it, keep its
	// data) or Delete. It lives on the namespace so that pruning needs no hub state.
	NamespaceDeletionPolicyAnnotation = "management.drover.io/namespace-deletion-policy"
	// ManagedKeysAnnotation, on a project namespace, lists the labels and
	// annotations from the project's spec that Drover sets on it.
	ManagedKeysAnnotation = "management.drover.io/managed-keys"
	// NamePrefix starts the name of every ClusterRole and binding Drover renders.
	NamePrefix = "drover:"
	// HubLabel names the hub (its ID, kept in the operator namespace) that applied an
	// object. A hub never changes or deletes an object that names another hub.
	HubLabel = "management.drover.io/hub"
	// ClusterLabel names the ManagedCluster an object was applied for. One
	// ManagedCluster never prunes another's objects, even when both point at the
	// same target.
	ClusterLabel = "management.drover.io/cluster"
	// AdoptedAnnotation marks a namespace that existed before Drover took it over
	// (spec.namespaces[].adopt). Drover only ever releases such a namespace, never
	// deletes it, whatever the project's namespaceDeletionPolicy.
	AdoptedAnnotation = "management.drover.io/adopted"
	// CreatedAnnotation marks a namespace Drover created. Only such a namespace is
	// ever deleted (namespaceDeletionPolicy Delete); any other is released.
	CreatedAnnotation = "management.drover.io/created"
)

// Limits on what one RoleTemplate may flatten to: a template over them is not
// rendered (Stalled, TemplateTooLarge), so that one careless template cannot exhaust
// the manager's memory or exceed a target API server's request size.
const (
	// MaxFlattenedRules bounds the rules of a template with its inheritance flattened in.
	MaxFlattenedRules = 1024
	// MaxFlattenedBytes bounds the size of those rules, roughly as serialized.
	MaxFlattenedBytes = 512 << 10
)

// Problem reasons, shared by the status of the intents.
const (
	// ReasonTemplateNotFound: a binding or template refers to a RoleTemplate that does not exist.
	ReasonTemplateNotFound = "RoleTemplateNotFound"
	// ReasonInheritanceCycle: a RoleTemplate inherits itself through other templates.
	ReasonInheritanceCycle = "InheritanceCycle"
	// ReasonContextMismatch: a binding's scope does not fit its RoleTemplate's context.
	ReasonContextMismatch = "ContextMismatch"
	// ReasonProjectNotFound: a project-scoped binding names a ClusterProject that does not exist.
	ReasonProjectNotFound = "ProjectNotFound"
	// ReasonInvalidSelector: a cluster selector cannot be parsed.
	ReasonInvalidSelector = "InvalidSelector"
	// ReasonQuotaOverflow: a project's namespace quotas add up to more than its project quota.
	ReasonQuotaOverflow = "QuotaOverflow"
	// ReasonNamespaceConflict: a namespace is claimed by two projects, or exists in a
	// target without Drover's label.
	ReasonNamespaceConflict = "NamespaceConflict"
	// ReasonTemplateTooLarge: a RoleTemplate flattens to more than MaxFlattenedRules
	// rules or MaxFlattenedBytes.
	ReasonTemplateTooLarge = "TemplateTooLarge"
	// ReasonForbiddenSubject: a binding grants a role to a subject that no one may
	// grant one to (see ForbiddenSubject).
	ReasonForbiddenSubject = "ForbiddenSubject"
)

// Subjects that no AccessBinding may name: anonymous requests to a target are made
// as user system:anonymous in group system:unauthenticated, so a role granted to
// either is granted to anyone who can reach the target's API server.
const (
	AnonymousUser        = "system:anonymous"
	UnauthenticatedGroup = "system:unauthenticated"
)

// ForbiddenSubject says why a subject may never be granted a role, or "" when it may.
// The admission webhook refuses such bindings; rendering holds them (see
// BindingProblem), so that a binding that got past a webhook that was down still
// grants nothing to anonymous users.
func ForbiddenSubject(s v1alpha1.Subject) string {
	switch {
	case s.Kind == v1alpha1.SubjectGroup && s.Name == UnauthenticatedGroup:
		return fmt.Sprintf("group %q is every anonymous request: Drover never grants it a role", s.Name)
	case s.Kind == v1alpha1.SubjectUser && s.Name == AnonymousUser:
		return fmt.Sprintf("user %q is every anonymous request: Drover never grants it a role", s.Name)
	}
	return ""
}

// Cluster is what rendering needs to know of a target cluster.
type Cluster struct {
	Name   string
	Labels map[string]string
	// Hub is the ID of the hub rendering; with Name it goes on every object as
	// HubLabel and ClusterLabel. Empty leaves both out (tests of pure placement).
	Hub string
	// AgentImage, when set, adds the agent's objects (see Agent).
	AgentImage string
	// Tunnel: the cluster is registered with spec.registration and the hub reaches
	// it through its agent's tunnel (see Agent).
	Tunnel bool
}

// Intents are the hub objects rendering reads.
type Intents struct {
	RoleTemplates  []v1alpha1.RoleTemplate
	AccessBindings []v1alpha1.AccessBinding
	Projects       []v1alpha1.ClusterProject
}

// Problem is something wrong with an intent's spec or its references. It is the same
// on every cluster, and needs a person to fix it.
type Problem struct {
	Reason  string
	Message string
}

func (p *Problem) Error() string { return p.Message }

// Result is what one cluster must hold.
type Result struct {
	// Objects are the desired objects, in apply order: namespaces, ClusterRoles, then
	// bindings. Each is typed (corev1.Namespace, rbacv1.ClusterRole, ...) and sorted.
	Objects []client.Object
	// Templates lists the RoleTemplates rendered (by name).
	Templates []string
	// Bindings lists the AccessBindings that select this cluster and were rendered.
	Bindings []string
	// ClusterRoleRefs lists, per binding, the pre-existing ClusterRole it refers to
	// (roleRef kind ClusterRole), which the target must already hold.
	ClusterRoleRefs map[string]string
	// Projects lists the ClusterProjects placed on this cluster.
	Projects []string
	// Adoptable names the namespaces whose project allows adopting them when they
	// already exist without Drover's label (spec.namespaces[].adopt).
	Adoptable map[string]bool
	// NamespaceConflicts lists, per project, the namespaces it shares with another
	// project placed on this cluster; only the older claim gets the namespace.
	NamespaceConflicts map[string][]string
	// NamespacesLost lists, per project, the conflicts in which it does not get the
	// namespace (a subset of NamespaceConflicts).
	NamespacesLost map[string][]string
	// NamespacePolicy maps every existing project (placed here or not) to its
	// namespaceDeletionPolicy, for namespaces that leave it.
	NamespacePolicy map[string]string
	// Hold lists the intents whose spec or references cannot be resolved (as
	// "<label>=<name>", e.g. HeldKey(ProjectLabel, "payments")). What the target
	// holds for them stays as it was last applied: an invalid intent never causes
	// pruning. An intent that was deleted is never held.
	Hold map[string]bool
	// UseExisting names namespaces that Drover needs but does not insist on owning:
	// when one exists without Drover's label it is used as it is (the agent's
	// namespace on a hub that is also a target, say).
	UseExisting map[string]bool
}

// HeldKey is the key of an intent in Result.Hold.
func HeldKey(label, name string) string { return label + "=" + name }

// Held tells whether an object in a target belongs to an intent in hold. Only the
// intent that owns the object counts: a binding's objects are its AccessBinding's
// (they also carry their template's and project's labels, but a binding whose
// template or project cannot be resolved is held itself), a project's objects its
// ClusterProject's, a ClusterRole its RoleTemplate's. So deleting a binding revokes
// it even while its template is held.
func Held(hold map[string]bool, o client.Object) bool {
	l := o.GetLabels()
	for _, key := range []string{AccessBindingLabel, ProjectLabel, RoleTemplateLabel} {
		if v := l[key]; v != "" {
			return hold[HeldKey(key, v)]
		}
	}
	return false
}

// Render computes what cluster must hold. It never fails: an intent with a problem is
// left out (see TemplateProblems and BindingProblem, which say why). It is
// Prepare(in).Render(cluster); a caller rendering many clusters prepares once.
func Render(cluster Cluster, in Intents) Result {
	return Prepare(in).Render(cluster)
}

// Prepared is the part of rendering that does not depend on the cluster: the
// templates flattened and turned into ClusterRoles, each binding's problem, role
// and subjects, and the projects in the order in which they claim namespaces.
// Rendering a Prepared for a cluster only selects and labels, so a fleet of a
// thousand clusters resolves its intents once per change rather than once per
// cluster (see PreparedCache).
//
// A Prepared is never changed once Prepare returns, so many goroutines may render
// from it at once. It keeps pointers into the intents it was prepared from, which
// must not change either (objects from a controller-runtime cache never do: an
// update replaces them). The objects Render returns share their rules and subjects
// with it: callers must treat them as read-only, and copy before changing one.
type Prepared struct {
	namespacePolicy map[string]string
	projects        map[string]*v1alpha1.ClusterProject
	// ordered: the projects that are not being deleted, older first, so that a
	// namespace claimed by two projects goes to the older claim, deterministically.
	ordered []*v1alpha1.ClusterProject
	// roles are the rendered templates, by name, without the cluster's labels.
	roles []*ResolvedTemplate
	// heldTemplates are the templates whose inheritance is broken.
	heldTemplates []string
	// bindings are the bindings not being deleted, by name.
	bindings []preparedBinding
}

type preparedBinding struct {
	b *v1alpha1.AccessBinding
	// held: the binding has a problem (BindingProblem) and is not rendered.
	held     bool
	roleRef  rbacv1.RoleRef
	subjects []rbacv1.Subject
}

// Prepare does the cluster-independent part of rendering the intents.
func Prepare(in Intents) *Prepared {
	p := &Prepared{namespacePolicy: map[string]string{}, projects: map[string]*v1alpha1.ClusterProject{}}
	for i := range in.Projects {
		cp := &in.Projects[i]
		p.projects[cp.Name] = cp
		if cp.DeletionTimestamp.IsZero() {
			p.namespacePolicy[cp.Name] = string(cp.NamespaceDeletionPolicyOrDefault())
			p.ordered = append(p.ordered, cp)
		}
	}
	sort.SliceStable(p.ordered, func(i, j int) bool {
		ti, tj := p.ordered[i].CreationTimestamp, p.ordered[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return p.ordered[i].Name < p.ordered[j].Name
	})

	templates := ResolveTemplates(in.RoleTemplates)
	for _, name := range sortedKeys(templates) {
		if t := templates[name]; t.Problem != nil {
			p.heldTemplates = append(p.heldTemplates, name)
		} else {
			p.roles = append(p.roles, t)
		}
	}

	abs := make([]*v1alpha1.AccessBinding, 0, len(in.AccessBindings))
	for i := range in.AccessBindings {
		if in.AccessBindings[i].DeletionTimestamp.IsZero() {
			abs = append(abs, &in.AccessBindings[i])
		}
	}
	sort.SliceStable(abs, func(i, j int) bool { return abs[i].Name < abs[j].Name })
	for _, b := range abs {
		pb := preparedBinding{b: b, held: BindingProblem(b, templates, p.projects) != nil}
		if !pb.held {
			pb.roleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: RoleName(b)}
			pb.subjects = renderSubjects(b.Spec.Subjects)
		}
		p.bindings = append(p.bindings, pb)
	}
	return p
}

// Render computes what cluster must hold, from p.
func (p *Prepared) Render(cluster Cluster) Result {
	res := Result{ClusterRoleRefs: map[string]string{}, Adoptable: map[string]bool{}, NamespaceConflicts: map[string][]string{},
		NamespacesLost: map[string][]string{}, NamespacePolicy: maps.Clone(p.namespacePolicy), Hold: map[string]bool{}, UseExisting: map[string]bool{}}

	var namespaces, namespaced []client.Object
	placed := map[string]bool{}
	// owner maps each namespace to the one project that holds it on this cluster.
	owner := map[string]string{}
	for _, cp := range p.ordered {
		ok, err := Selects(cp.Spec.Clusters, cluster)
		if err != nil {
			// Fail safe: a placement that cannot be evaluated keeps the project
			// (and the bindings in it) as last applied, rather than unplacing it.
			// Its claims on namespaces stand, so that no younger project takes
			// (and so releases or deletes) one of them meanwhile.
			res.Hold[HeldKey(ProjectLabel, cp.Name)] = true
			for _, ns := range cp.Spec.Namespaces {
				if _, taken := owner[ns.Name]; !taken {
					owner[ns.Name] = cp.Name
				}
			}
			continue
		}
		if !ok {
			continue
		}
		placed[cp.Name] = true
		res.Projects = append(res.Projects, cp.Name)
		var held []string
		for _, ns := range cp.Spec.Namespaces {
			if other, taken := owner[ns.Name]; taken {
				// Claimed by an older project (or listed twice): the first claim
				// wins, deterministically, and the younger project is told.
				if other != cp.Name {
					lost := fmt.Sprintf("namespace %s belongs to project %s, which claimed it first", ns.Name, other)
					res.NamespaceConflicts[cp.Name] = append(res.NamespaceConflicts[cp.Name], lost)
					res.NamespacesLost[cp.Name] = append(res.NamespacesLost[cp.Name], lost)
					res.NamespaceConflicts[other] = append(res.NamespaceConflicts[other], fmt.Sprintf(
						"namespace %s is also claimed by project %s, which does not get it", ns.Name, cp.Name))
				}
				continue
			}
			owner[ns.Name] = cp.Name
			held = append(held, ns.Name)
			namespaces = append(namespaces, renderNamespace(cp, ns))
			if ns.Adopt {
				res.Adoptable[ns.Name] = true
			}
		}
		sort.Strings(held)
		for _, ns := range held {
			namespaced = append(namespaced, renderProjectPolicies(cp, ns, held)...)
		}
	}

	for _, name := range p.heldTemplates {
		res.Hold[HeldKey(RoleTemplateLabel, name)] = true
	}
	roles := make([]client.Object, 0, len(p.roles))
	for _, t := range p.roles {
		roles = append(roles, renderClusterRole(t))
		res.Templates = append(res.Templates, t.Name)
	}

	var bindings []client.Object
	for _, pb := range p.bindings {
		b := pb.b
		if pb.held {
			res.Hold[HeldKey(AccessBindingLabel, b.Name)] = true
			continue
		}
		if b.Spec.Project == "" {
			if ok, _ := Selects(*b.Spec.Clusters, cluster); !ok {
				continue
			}
			bindings = append(bindings, &rbacv1.ClusterRoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
				ObjectMeta: metav1.ObjectMeta{Name: NamePrefix + b.Name, Labels: bindingLabels(b, "")},
				RoleRef:    pb.roleRef,
				Subjects:   pb.subjects,
			})
		} else {
			if !placed[b.Spec.Project] {
				continue
			}
			done := map[string]bool{}
			for _, ns := range p.projects[b.Spec.Project].Spec.Namespaces {
				if owner[ns.Name] != b.Spec.Project || done[ns.Name] {
					continue
				}
				done[ns.Name] = true
				bindings = append(bindings, &rbacv1.RoleBinding{
					TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
					ObjectMeta: metav1.ObjectMeta{Name: NamePrefix + b.Name, Namespace: ns.Name, Labels: bindingLabels(b, b.Spec.Project)},
					RoleRef:    pb.roleRef,
					Subjects:   pb.subjects,
				})
			}
		}
		res.Bindings = append(res.Bindings, b.Name)
		if b.Spec.RoleRef.Kind == v1alpha1.RoleRefClusterRole {
			res.ClusterRoleRefs[b.Name] = b.Spec.RoleRef.Name
		}
	}

	sort.SliceStable(namespaces, func(i, j int) bool { return namespaces[i].GetName() < namespaces[j].GetName() })
	var agent []client.Object
	if cluster.AgentImage != "" {
		agent = Agent(cluster.Name, cluster.AgentImage, cluster.Tunnel)
		res.UseExisting[AgentNamespace] = true
	}
	res.Objects = append(append(append(append(agent, namespaces...), roles...), namespaced...), bindings...)
	if cluster.Hub != "" {
		for _, o := range res.Objects {
			l := o.GetLabels()
			l[HubLabel] = cluster.Hub
			l[ClusterLabel] = cluster.Name
			o.SetLabels(l)
		}
	}
	return res
}

// RoleName is the ClusterRole a binding's objects refer to in a target.
func RoleName(b *v1alpha1.AccessBinding) string {
	if b.Spec.RoleRef.Kind == v1alpha1.RoleRefClusterRole {
		return b.Spec.RoleRef.Name
	}
	return NamePrefix + b.Spec.RoleRef.Name
}

// Names of the per-namespace objects of a project.
const (
	// ProjectQuotaName names the ResourceQuota (namespaceDefaultQuota) and the
	// LimitRange (containerDefaults) in each project namespace.
	ProjectQuotaName = "drover-project"
	// IsolationPolicyName names the NetworkPolicy of networkIsolation.
	IsolationPolicyName = "drover-project-isolation"
)

// renderProjectPolicies renders the quota, limits and isolation policy of one
// project namespace. held lists the project's namespaces on this cluster.
func renderProjectPolicies(p *v1alpha1.ClusterProject, ns string, held []string) []client.Object {
	labels := func() map[string]string {
		return map[string]string{ManagedByLabel: ManagedByValue, ProjectLabel: p.Name}
	}
	var out []client.Object
	if q := p.Spec.NamespaceDefaultQuota; q != nil {
		out = append(out, &corev1.ResourceQuota{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ResourceQuota"},
			ObjectMeta: metav1.ObjectMeta{Name: ProjectQuotaName, Namespace: ns, Labels: labels()},
			Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList(q.Hard).DeepCopy()},
		})
	}
	if d := p.Spec.ContainerDefaults; d != nil {
		out = append(out, &corev1.LimitRange{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "LimitRange"},
			ObjectMeta: metav1.ObjectMeta{Name: ProjectQuotaName, Namespace: ns, Labels: labels()},
			Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
				Type:           corev1.LimitTypeContainer,
				Default:        nilIfEmpty(d.Default),
				DefaultRequest: nilIfEmpty(d.DefaultRequest),
				Max:            nilIfEmpty(d.Max),
				Min:            nilIfEmpty(d.Min),
			}}},
		})
	}
	if p.Spec.NetworkIsolation {
		out = append(out, &networkingv1.NetworkPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: IsolationPolicyName, Namespace: ns, Labels: labels()},
			Spec: networkingv1.NetworkPolicySpec{
				// Ingress only: egress, and so DNS, stays open. Namespaces are matched
				// by their immutable name label, which no one can add to another
				// namespace to get in.
				PodSelector: metav1.LabelSelector{},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: append([]string(nil), held...),
					}}},
				}}}},
			},
		})
	}
	return out
}

func nilIfEmpty(r v1alpha1.ResourceList) corev1.ResourceList {
	if len(r) == 0 {
		return nil
	}
	return corev1.ResourceList(r).DeepCopy()
}

// QuotaOverflow says which resources the namespace quotas, together, would exceed the
// project-wide quota by (namespaceDefaultQuota times the number of namespaces against
// resourceQuota), or nil when they fit.
func QuotaOverflow(p *v1alpha1.ClusterProject) *Problem {
	if p.Spec.ResourceQuota == nil || p.Spec.NamespaceDefaultQuota == nil || len(p.Spec.Namespaces) == 0 {
		return nil
	}
	n := int64(len(p.Spec.Namespaces))
	var over []string
	names := make([]string, 0, len(p.Spec.ResourceQuota.Hard))
	for k := range p.Spec.ResourceQuota.Hard {
		names = append(names, string(k))
	}
	sort.Strings(names)
	for _, name := range names {
		limit := p.Spec.ResourceQuota.Hard[corev1.ResourceName(name)]
		per, ok := p.Spec.NamespaceDefaultQuota.Hard[corev1.ResourceName(name)]
		if !ok {
			continue
		}
		total := per.DeepCopy()
		total.Mul(n)
		if total.Cmp(limit) > 0 {
			over = append(over, fmt.Sprintf("%s: %d namespaces x %s = %s > %s", name, n, per.String(), total.String(), limit.String()))
		}
	}
	if len(over) == 0 {
		return nil
	}
	return &Problem{ReasonQuotaOverflow, "the namespace quotas exceed the project quota (spec.namespaceDefaultQuota x namespaces > spec.resourceQuota): " +
		strings.Join(over, "; ") + "; raise spec.resourceQuota or lower spec.namespaceDefaultQuota"}
}

func renderNamespace(p *v1alpha1.ClusterProject, ns v1alpha1.ProjectNamespace) *corev1.Namespace {
	l := map[string]string{}
	for k, v := range ns.Labels {
		l[k] = v
	}
	l[ManagedByLabel] = ManagedByValue
	l[ProjectLabel] = p.Name
	a := map[string]string{}
	for k, v := range ns.Annotations {
		a[k] = v
	}
	a[NamespaceDeletionPolicyAnnotation] = string(p.NamespaceDeletionPolicyOrDefault())
	// Which of the spec's labels and annotations Drover sets: when one is dropped
	// from the spec this changes, the namespace is applied again, and server-side
	// apply removes what Drover no longer sets.
	a[ManagedKeysAnnotation] = "labels=" + strings.Join(sortedKeys(ns.Labels), ",") + ";annotations=" + strings.Join(sortedKeys(ns.Annotations), ",")
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: l, Annotations: a},
	}
}

func renderClusterRole(t *ResolvedTemplate) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta: metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: NamePrefix + t.Name, Labels: map[string]string{
			ManagedByLabel: ManagedByValue, RoleTemplateLabel: t.Name,
		}},
		Rules: t.Rules,
	}
}

func bindingLabels(b *v1alpha1.AccessBinding, project string) map[string]string {
	l := map[string]string{ManagedByLabel: ManagedByValue, AccessBindingLabel: b.Name}
	if b.Spec.RoleRef.Kind != v1alpha1.RoleRefClusterRole {
		l[RoleTemplateLabel] = b.Spec.RoleRef.Name
	}
	if project != "" {
		l[ProjectLabel] = project
	}
	return l
}

func renderSubjects(in []v1alpha1.Subject) []rbacv1.Subject {
	out := make([]rbacv1.Subject, 0, len(in))
	for _, s := range in {
		switch s.Kind {
		case v1alpha1.SubjectServiceAccount:
			out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: s.Name, Namespace: s.Namespace})
		default:
			out = append(out, rbacv1.Subject{Kind: string(s.Kind), APIGroup: rbacv1.GroupName, Name: s.Name})
		}
	}
	return out
}

// Selects tells whether a selection picks cluster: its name is listed, or its labels
// match the selector.
func Selects(sel v1alpha1.ClusterSelection, cluster Cluster) (bool, error) {
	for _, n := range sel.Names {
		if n == cluster.Name {
			return true, nil
		}
	}
	if sel.Selector == nil {
		return false, nil
	}
	s, p := selector(sel.Selector)
	if p != nil {
		return false, p
	}
	return s.Matches(labels.Set(cluster.Labels)), nil
}

// ValidateSelection says what is wrong with a cluster selection, or nil. field names
// it in messages (e.g. "spec.clusters"). It is the one check that rendering and every
// status controller use.
func ValidateSelection(field string, sel *v1alpha1.ClusterSelection) *Problem {
	if sel == nil || sel.Selector == nil {
		return nil
	}
	if _, p := selector(sel.Selector); p != nil {
		return &Problem{ReasonInvalidSelector, field + ".selector is invalid: " + p.Message + "; nothing was removed from the clusters it selected before"}
	}
	return nil
}

func selector(ls *metav1.LabelSelector) (labels.Selector, *Problem) {
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, &Problem{ReasonInvalidSelector, err.Error()}
	}
	return s, nil
}

// ResolvedTemplate is a RoleTemplate with its inherited rules flattened in.
type ResolvedTemplate struct {
	Name    string
	Context v1alpha1.RoleTemplateContext
	Rules   []rbacv1.PolicyRule
	// Problem is set when the inheritance is broken; the template is then not rendered.
	Problem *Problem
}

// ResolveTemplates flattens every template's inheritance. Cycles and missing
// templates are reported on every template whose inheritance reaches them, never
// looped on.
func ResolveTemplates(in []v1alpha1.RoleTemplate) map[string]*ResolvedTemplate {
	byName := map[string]*v1alpha1.RoleTemplate{}
	for i := range in {
		if in[i].DeletionTimestamp.IsZero() {
			byName[in[i].Name] = &in[i]
		}
	}
	out := map[string]*ResolvedTemplate{}
	for name, t := range byName {
		r := &ResolvedTemplate{Name: name, Context: t.Spec.Context}
		order, problem := walk(name, byName)
		r.Problem = problem
		if problem == nil {
			seen := map[string]bool{}
			size := 0
		flatten:
			for _, n := range order {
				for _, rule := range byName[n].Spec.Rules {
					pr := policyRule(rule)
					key := fmt.Sprintf("%q", pr)
					if seen[key] {
						continue
					}
					seen[key] = true
					size += len(key)
					r.Rules = append(r.Rules, pr)
					if len(r.Rules) > MaxFlattenedRules || size > MaxFlattenedBytes {
						r.Rules = nil
						r.Problem = &Problem{ReasonTemplateTooLarge, fmt.Sprintf(
							"spec.rules: with everything it inherits (spec.inherits) the template flattens to more than %d rules or %d KiB; split it or trim its rules",
							MaxFlattenedRules, MaxFlattenedBytes>>10)}
						break flatten
					}
				}
			}
		}
		out[name] = r
	}
	return out
}

// walk returns name and every template it inherits, depth first, each once, or the
// first problem found: a cycle (with its path) or a missing template.
func walk(name string, byName map[string]*v1alpha1.RoleTemplate) ([]string, *Problem) {
	var order []string
	done := map[string]bool{}
	var visit func(n string, path []string) *Problem
	visit = func(n string, path []string) *Problem {
		for i, p := range path {
			if p == n {
				cycle := append(append([]string(nil), path[i:]...), n)
				return &Problem{ReasonInheritanceCycle, "spec.inherits forms a cycle: " + strings.Join(cycle, " -> ")}
			}
		}
		if done[n] {
			return nil
		}
		t, ok := byName[n]
		if !ok {
			via := ""
			if len(path) > 1 {
				via = " (via " + strings.Join(path, " -> ") + ")"
			}
			return &Problem{ReasonTemplateNotFound, fmt.Sprintf("spec.inherits: RoleTemplate %q does not exist%s", n, via)}
		}
		path = append(path, n)
		order = append(order, n)
		done[n] = true
		for _, parent := range t.Spec.Inherits {
			if p := visit(parent, path); p != nil {
				return p
			}
		}
		return nil
	}
	if p := visit(name, nil); p != nil {
		return nil, p
	}
	return order, nil
}

func policyRule(r v1alpha1.PolicyRule) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{
		Verbs:           r.Verbs,
		APIGroups:       r.APIGroups,
		Resources:       r.Resources,
		ResourceNames:   r.ResourceNames,
		NonResourceURLs: r.NonResourceURLs,
	}
}

// BindingProblem says what stops a binding from being rendered anywhere, or nil:
// a subject no one may grant a role to, a missing or broken RoleTemplate, a template
// whose context does not fit the binding's scope, or a missing project.
func BindingProblem(b *v1alpha1.AccessBinding, templates map[string]*ResolvedTemplate, projects map[string]*v1alpha1.ClusterProject) *Problem {
	for i, s := range b.Spec.Subjects {
		if why := ForbiddenSubject(s); why != "" {
			return &Problem{ReasonForbiddenSubject, fmt.Sprintf("spec.subjects[%d]: %s; remove it", i, why)}
		}
	}
	if b.Spec.RoleRef.Kind != v1alpha1.RoleRefClusterRole {
		t, ok := templates[b.Spec.RoleRef.Name]
		if !ok {
			return &Problem{ReasonTemplateNotFound, fmt.Sprintf("spec.roleRef: RoleTemplate %q does not exist", b.Spec.RoleRef.Name)}
		}
		if t.Problem != nil {
			return &Problem{t.Problem.Reason, fmt.Sprintf("spec.roleRef: RoleTemplate %q cannot be used: %s", t.Name, t.Problem.Message)}
		}
		switch {
		case b.Spec.Project != "" && t.Context != v1alpha1.ContextProject:
			return &Problem{ReasonContextMismatch, fmt.Sprintf(
				"spec.roleRef: RoleTemplate %q has context %s, but this binding is project-scoped (spec.project); use a template with context Project, or bind it with spec.clusters",
				t.Name, t.Context)}
		case b.Spec.Project == "" && t.Context != v1alpha1.ContextCluster:
			return &Problem{ReasonContextMismatch, fmt.Sprintf(
				"spec.roleRef: RoleTemplate %q has context %s, but this binding is cluster-scoped (spec.clusters); use a template with context Cluster, or bind it to a project with spec.project",
				t.Name, t.Context)}
		}
	}
	if b.Spec.Project != "" {
		p, ok := projects[b.Spec.Project]
		if !ok || !p.DeletionTimestamp.IsZero() {
			return &Problem{ReasonProjectNotFound, fmt.Sprintf("spec.project: ClusterProject %q does not exist", b.Spec.Project)}
		}
		if pp := ValidateSelection("spec.clusters", &p.Spec.Clusters); pp != nil {
			return &Problem{pp.Reason, fmt.Sprintf("spec.project: ClusterProject %q cannot be placed: its %s", b.Spec.Project, pp.Message)}
		}
	} else if p := ValidateSelection("spec.clusters", b.Spec.Clusters); p != nil {
		return p
	}
	return nil
}

// Equivalent tells whether a live object already holds everything desired holds, so
// that applying desired would change nothing Drover owns. Labels and annotations of
// desired must be present with the same values; other fields are compared per kind.
func Equivalent(desired, live client.Object) bool {
	if !subset(desired.GetLabels(), live.GetLabels()) || !subset(desired.GetAnnotations(), live.GetAnnotations()) {
		return false
	}
	switch d := desired.(type) {
	case *corev1.Namespace:
		_, ok := live.(*corev1.Namespace)
		return ok
	case *rbacv1.ClusterRole:
		l, ok := live.(*rbacv1.ClusterRole)
		return ok && l.AggregationRule == nil && rulesEqual(d.Rules, l.Rules)
	case *rbacv1.ClusterRoleBinding:
		l, ok := live.(*rbacv1.ClusterRoleBinding)
		return ok && d.RoleRef == l.RoleRef && slices.Equal(d.Subjects, l.Subjects)
	case *rbacv1.RoleBinding:
		l, ok := live.(*rbacv1.RoleBinding)
		return ok && d.RoleRef == l.RoleRef && slices.Equal(d.Subjects, l.Subjects)
	case *corev1.ResourceQuota:
		l, ok := live.(*corev1.ResourceQuota)
		return ok && equality.Semantic.DeepEqual(d.Spec, l.Spec)
	case *corev1.LimitRange:
		l, ok := live.(*corev1.LimitRange)
		return ok && limitsHeld(d.Spec.Limits, l.Spec.Limits)
	case *networkingv1.NetworkPolicy:
		l, ok := live.(*networkingv1.NetworkPolicy)
		return ok && equality.Semantic.DeepEqual(d.Spec, l.Spec)
	case *corev1.ServiceAccount:
		_, ok := live.(*corev1.ServiceAccount)
		return ok
	case *rbacv1.Role:
		l, ok := live.(*rbacv1.Role)
		return ok && rulesEqual(d.Rules, l.Rules)
	case *appsv1.Deployment:
		l, ok := live.(*appsv1.Deployment)
		return ok && agentDeploymentHeld(d, l)
	}
	return false
}

// limitsHeld compares LimitRange items on what Drover sets: the API server fills in
// default from max and defaultRequest from default or min, which must not count as
// drift.
func limitsHeld(want, have []corev1.LimitRangeItem) bool {
	if len(want) != len(have) {
		return false
	}
	for i := range want {
		w, h := want[i], have[i]
		if w.Type != h.Type || !resourcesHeld(w.Default, h.Default) || !resourcesHeld(w.DefaultRequest, h.DefaultRequest) ||
			!resourcesHeld(w.Max, h.Max) || !resourcesHeld(w.Min, h.Min) || !resourcesHeld(w.MaxLimitRequestRatio, h.MaxLimitRequestRatio) {
			return false
		}
	}
	return true
}

func resourcesHeld(want, have corev1.ResourceList) bool {
	for k, v := range want {
		hv, ok := have[k]
		if !ok || hv.Cmp(v) != 0 {
			return false
		}
	}
	return true
}

func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func rulesEqual(a, b []rbacv1.PolicyRule) bool {
	if len(a) != len(b) {
		return false
	}
	// Field by field: a nil and an empty list are alike, as the API server makes
	// them on a round trip (slices.Equal compares lengths, then elements).
	for i := range a {
		x, y := &a[i], &b[i]
		if !slices.Equal(x.Verbs, y.Verbs) || !slices.Equal(x.APIGroups, y.APIGroups) || !slices.Equal(x.Resources, y.Resources) ||
			!slices.Equal(x.ResourceNames, y.ResourceNames) || !slices.Equal(x.NonResourceURLs, y.NonResourceURLs) {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
