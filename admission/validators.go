package admission

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	cradmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// ForceDeleteAnnotation, set to "true" on a RoleTemplate, lets it be deleted while
// AccessBindings still grant it. Those bindings are then held (Stalled,
// RoleTemplateNotFound): what the targets hold for them stays as last applied until
// they are changed or deleted.
const ForceDeleteAnnotation = "management.drover.io/force-delete"

// checkTimeout bounds the reads one admission request makes, below the webhook's
// timeoutSeconds, so that the API server gets an answer from us rather than a timeout.
const checkTimeout = 4 * time.Second

// maxListed bounds the names a message lists.
const maxListed = 10

// Readers are where the validators read what the hub holds.
type Readers struct {
	// Cache is the manager's cache: every check reads it first.
	Cache client.Reader
	// Live reads the API server. A check that would refuse a request on what the
	// cache holds is made again on what the API server holds, so that a cache a few
	// milliseconds behind (a template created just before the one inheriting it, a
	// binding deleted just before its template) never causes a refusal.
	Live client.Reader
}

// check runs rules on what the cache holds and, when they find violations, again on
// what the API server holds.
func check[L client.ObjectList](ctx context.Context, r Readers, newList func() L, rules func(L) []Violation) ([]Violation, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	list := newList()
	if err := r.Cache.List(ctx, list); err != nil {
		return nil, err
	}
	v := rules(list)
	if len(v) == 0 || r.Live == nil {
		return v, nil
	}
	list = newList()
	if err := r.Live.List(ctx, list); err != nil {
		return nil, err
	}
	return rules(list), nil
}

// invalid is the rejection for violations: 422 Invalid, with one cause per field, and
// a message that names each field.
func invalid(kind, name string, vs []Violation) error {
	msgs := make([]string, len(vs))
	causes := make([]metav1.StatusCause, len(vs))
	for i, v := range vs {
		msgs[i] = v.String()
		causes[i] = metav1.StatusCause{Type: v.Type, Field: v.Field, Message: v.Message}
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnprocessableEntity,
		Reason:  metav1.StatusReasonInvalid,
		Message: fmt.Sprintf("%s %q is invalid: %s", kind, name, strings.Join(msgs, "; ")),
		Details: &metav1.StatusDetails{Group: v1alpha1.GroupVersion.Group, Kind: kind, Name: name, Causes: causes},
	}}
}

// unavailable is the answer when what a rule needs cannot be read: the request is
// refused (failurePolicy Fail would refuse it anyway) with a reason clients retry on.
func unavailable(what string, err error) error {
	return apierrors.NewServiceUnavailable(fmt.Sprintf("cannot check %s: %v; retry", what, err))
}

// AccessBindingValidator refuses AccessBindings that grant a role to a subject no one
// may grant one to (render.ForbiddenSubject), and grants their requester may not
// make: see authorizeGrant.
type AccessBindingValidator struct {
	Readers Readers
	// Authorizer checks the hub verb bind.
	Authorizer Authorizer
}

var _ cradmission.Validator[*v1alpha1.AccessBinding] = AccessBindingValidator{}

// ValidateCreate checks the subjects, then that the requester may grant the role.
func (v AccessBindingValidator) ValidateCreate(ctx context.Context, b *v1alpha1.AccessBinding) (cradmission.Warnings, error) {
	if vs := CheckSubjects(b.Spec.Subjects); len(vs) > 0 {
		return nil, invalid("AccessBinding", b.Name, vs)
	}
	return nil, v.authorizeGrant(ctx, b)
}

// ValidateUpdate checks the subjects and the grant when the spec changes. A change
// to metadata alone (labels, annotations, finalizers) is never refused.
func (v AccessBindingValidator) ValidateUpdate(ctx context.Context, old, b *v1alpha1.AccessBinding) (cradmission.Warnings, error) {
	if equality.Semantic.DeepEqual(old.Spec, b.Spec) || !b.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return v.ValidateCreate(ctx, b)
}

// ValidateDelete allows every deletion: it revokes access.
func (AccessBindingValidator) ValidateDelete(context.Context, *v1alpha1.AccessBinding) (cradmission.Warnings, error) {
	return nil, nil
}

// authorizeGrant allows a binding, as Kubernetes allows a RoleBinding, when its
// requester has the hub verb bind on the role it grants, or already holds every rule
// of that role (inherited rules included) everywhere the binding grants it, through
// the AccessBindings the hub holds. The holding path does not apply to ClusterRoles
// (their rules are each target's own), to open-ended scopes (a label selector, a
// project that does not exist yet) and to system groups (see NeedsBind).
func (v AccessBindingValidator) authorizeGrant(ctx context.Context, b *v1alpha1.AccessBinding) error {
	user, ok, err := requester(ctx)
	if err != nil || !ok {
		return err
	}
	who := TargetIdentity(user.Username, user.Groups)
	ref := b.Spec.RoleRef
	// Why holding the role's rules cannot be enough here, if it cannot.
	var bindOnly []string
	if ref.Kind == v1alpha1.RoleRefClusterRole {
		bindOnly = append(bindOnly, fmt.Sprintf("spec.roleRef: ClusterRole %q is defined in each target, not on the hub", ref.Name))
	}
	for i, s := range b.Spec.Subjects {
		if why := NeedsBind(s); why != "" {
			bindOnly = append(bindOnly, fmt.Sprintf("spec.subjects[%d]: %s", i, why))
		}
	}
	// lacks reports what who lacks, or why the holding path does not apply.
	lacks := func(r client.Reader) ([]Shortfall, string, error) {
		s, err := loadState(ctx, r)
		if err != nil {
			return nil, "", err
		}
		t, ok := s.Templates[ref.Name]
		switch {
		case !ok:
			return nil, fmt.Sprintf("spec.roleRef: RoleTemplate %q does not exist yet", ref.Name), nil
		case t.Problem != nil:
			return nil, fmt.Sprintf("spec.roleRef: RoleTemplate %q cannot be rendered (%s)", ref.Name, t.Problem.Message), nil
		}
		places, open := s.Scope(b.Spec)
		if open != "" {
			return nil, open, nil
		}
		return s.Lacks(who, places, t.Rules), "", nil
	}
	var short []Shortfall
	if len(bindOnly) == 0 {
		sf, why, err := lacks(v.Readers.Cache)
		if err != nil {
			return unavailable("the requester's AccessBindings", err)
		}
		if why == "" && len(sf) == 0 {
			return nil
		}
		if why != "" {
			bindOnly = append(bindOnly, why)
		}
		short = sf
	}
	attrs := bindAttributes(ref)
	allowed, err := v.Authorizer.Allowed(ctx, user, attrs)
	if err != nil {
		return unavailable("the hub verb bind", err)
	}
	if allowed {
		return nil
	}
	if len(short) > 0 && v.Readers.Live != nil {
		// The cache may be a moment behind a binding that was just created.
		sf, why, err := lacks(v.Readers.Live)
		if err != nil {
			return unavailable("the requester's AccessBindings", err)
		}
		if why == "" && len(sf) == 0 {
			return nil
		}
		if why != "" {
			bindOnly, short = append(bindOnly, why), nil
		} else {
			short = sf
		}
	}
	what := fmt.Sprintf("granting %s %q", ref.Kind, ref.Name)
	var msg string
	if len(bindOnly) > 0 {
		msg = fmt.Sprintf("%s needs the hub permission %s, which %s does not have (%s)",
			what, attrString(attrs), user.Username, strings.Join(bindOnly, "; "))
	} else {
		msg = fmt.Sprintf("%s needs the hub permission %s, which %s does not have, or holding every rule of the role everywhere the binding grants it, through AccessBindings: %s",
			what, attrString(attrs), user.Username, describeShortfalls(short))
	}
	return apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "accessbindings"}, b.Name,
		errors.New(msg+"; ask a hub administrator for that permission (see docs/admission.md)"))
}

// requester returns who makes the request under review, and false when no rule of
// escalation applies to them: members of system:masters hold every permission.
func requester(ctx context.Context) (authenticationv1.UserInfo, bool, error) {
	req, err := cradmission.RequestFromContext(ctx)
	if err != nil {
		return authenticationv1.UserInfo{}, false, apierrors.NewInternalError(fmt.Errorf("admission request without its requester: %w", err))
	}
	if slices.Contains(req.UserInfo.Groups, MastersGroup) {
		return req.UserInfo, false, nil
	}
	return req.UserInfo, true, nil
}

// loadState reads what the escalation rules need from r.
func loadState(ctx context.Context, r client.Reader) (*State, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var (
		templates v1alpha1.RoleTemplateList
		bindings  v1alpha1.AccessBindingList
		projects  v1alpha1.ClusterProjectList
		clusters  v1alpha1.ManagedClusterList
	)
	for _, l := range []client.ObjectList{&templates, &bindings, &projects, &clusters} {
		if err := r.List(ctx, l); err != nil {
			return nil, err
		}
	}
	return NewState(templates.Items, bindings.Items, projects.Items, clusters.Items), nil
}

// RoleTemplateValidator refuses inheritance cycles and unknown inherited templates,
// changes to what a template grants that their requester may not make (see
// authorizeChange), and the deletion of a template that AccessBindings still grant.
type RoleTemplateValidator struct {
	Readers Readers
	// Authorizer checks the hub verb escalate.
	Authorizer Authorizer
}

var _ cradmission.Validator[*v1alpha1.RoleTemplate] = RoleTemplateValidator{}

// ValidateCreate checks spec.inherits, then that the requester may grant what the
// template grants wherever AccessBindings already name it.
func (v RoleTemplateValidator) ValidateCreate(ctx context.Context, t *v1alpha1.RoleTemplate) (cradmission.Warnings, error) {
	if err := v.checkInherits(ctx, nil, t); err != nil {
		return nil, err
	}
	return nil, v.authorizeChange(ctx, nil, t)
}

// ValidateUpdate checks the entries of spec.inherits that the update adds, and that
// the requester may make a change to spec.rules or spec.inherits.
func (v RoleTemplateValidator) ValidateUpdate(ctx context.Context, old, t *v1alpha1.RoleTemplate) (cradmission.Warnings, error) {
	if !t.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	if err := v.checkInherits(ctx, old.Spec.Inherits, t); err != nil {
		return nil, err
	}
	return nil, v.authorizeChange(ctx, old, t)
}

// templateShortfall is what a requester lacks where one binding grants a template.
type templateShortfall struct {
	binding string
	short   []Shortfall
}

// authorizeChange allows a change to what a template grants (its rules or its
// inheritance; old is nil on create), as Kubernetes allows a change to a role, when
// the requester has the hub verb escalate on the template, or already holds every
// rule the change adds to every template it reaches (itself and those that inherit
// it) everywhere AccessBindings grant those. Built-in templates are changed only
// with escalate: every project role inherits them.
func (v RoleTemplateValidator) authorizeChange(ctx context.Context, old, t *v1alpha1.RoleTemplate) error {
	if old != nil && equality.Semantic.DeepEqual(old.Spec.Rules, t.Spec.Rules) && slices.Equal(old.Spec.Inherits, t.Spec.Inherits) {
		return nil
	}
	user, ok, err := requester(ctx)
	if err != nil || !ok {
		return err
	}
	who := TargetIdentity(user.Username, user.Groups)
	var (
		short []templateShortfall
		why   string
	)
	builtIn := slices.Contains(BuiltInRoleTemplates, t.Name)
	if builtIn {
		why = fmt.Sprintf("RoleTemplate %q is built in", t.Name)
	} else {
		s, err := loadState(ctx, v.Readers.Cache)
		if err != nil {
			return unavailable("where the RoleTemplate is bound", err)
		}
		short, why = templateLacks(s, who, t)
		if why == "" && len(short) == 0 {
			return nil
		}
	}
	attrs := escalateAttributes(t.Name)
	allowed, err := v.Authorizer.Allowed(ctx, user, attrs)
	if err != nil {
		return unavailable("the hub verb escalate", err)
	}
	if allowed {
		return nil
	}
	if !builtIn && v.Readers.Live != nil {
		// The cache may be a moment behind a binding that was just created.
		s, err := loadState(ctx, v.Readers.Live)
		if err != nil {
			return unavailable("where the RoleTemplate is bound", err)
		}
		if short, why = templateLacks(s, who, t); why == "" && len(short) == 0 {
			return nil
		}
	}
	msg := fmt.Sprintf("changing the rules or inheritance of RoleTemplate %q needs the hub permission %s, which %s does not have",
		t.Name, attrString(attrs), user.Username)
	if why != "" {
		msg += " (" + why + ")"
	} else {
		msg += ", or holding every rule the change adds wherever AccessBindings grant it: "
		for i, ts := range short {
			if i > 0 {
				msg += "; "
			}
			if i == 2 {
				msg += fmt.Sprintf("and %d more AccessBinding(s)", len(short)-i)
				break
			}
			msg += fmt.Sprintf("AccessBinding %q grants it, and %s", ts.binding, describeShortfalls(ts.short))
		}
	}
	return apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "roletemplates"}, t.Name,
		errors.New(msg+"; ask a hub administrator for that permission (see docs/admission.md)"))
}

// templateLacks returns what who lacks of what t (as the request would have it) adds
// to the templates it reaches, binding by binding, or why the holding path does not
// apply (a binding with an open-ended scope or a system group grants it).
func templateLacks(s *State, who Requester, t *v1alpha1.RoleTemplate) ([]templateShortfall, string) {
	after := make([]v1alpha1.RoleTemplate, 0, len(s.raw)+1)
	inherits := make(map[string][]string, len(s.raw)+1)
	for i := range s.raw {
		if s.raw[i].Name != t.Name {
			after = append(after, s.raw[i])
			inherits[s.raw[i].Name] = s.raw[i].Spec.Inherits
		}
	}
	after = append(after, *t)
	inherits[t.Name] = t.Spec.Inherits
	resolved := render.ResolveTemplates(after)
	reached := Inheritors(t.Name, inherits)
	var out []templateShortfall
	for i := range s.Bindings {
		b := &s.Bindings[i]
		if b.Spec.RoleRef.Kind == v1alpha1.RoleRefClusterRole || !reached[b.Spec.RoleRef.Name] {
			continue
		}
		if render.BindingProblem(b, resolved, s.Projects) != nil {
			continue // it grants nothing after the change
		}
		var before []rbacv1.PolicyRule
		if bt, ok := s.Templates[b.Spec.RoleRef.Name]; ok && bt.Problem == nil {
			before = bt.Rules
		}
		added := Added(before, resolved[b.Spec.RoleRef.Name].Rules)
		if len(added) == 0 {
			continue
		}
		for j, subj := range b.Spec.Subjects {
			if why := NeedsBind(subj); why != "" {
				return nil, fmt.Sprintf("AccessBinding %q grants it to spec.subjects[%d]: %s", b.Name, j, why)
			}
		}
		places, open := s.Scope(b.Spec)
		if open != "" {
			return nil, fmt.Sprintf("AccessBinding %q grants it, and its %s", b.Name, open)
		}
		if sf := s.Lacks(who, places, added); len(sf) > 0 {
			out = append(out, templateShortfall{binding: b.Name, short: sf})
		}
	}
	return out, ""
}

func (v RoleTemplateValidator) checkInherits(ctx context.Context, old []string, t *v1alpha1.RoleTemplate) error {
	added := false
	for _, p := range t.Spec.Inherits {
		added = added || !slices.Contains(old, p)
	}
	if !added {
		return nil
	}
	vs, err := check(ctx, v.Readers, func() *v1alpha1.RoleTemplateList { return &v1alpha1.RoleTemplateList{} },
		func(l *v1alpha1.RoleTemplateList) []Violation {
			others := make(map[string][]string, len(l.Items))
			for i := range l.Items {
				if o := &l.Items[i]; o.Name != t.Name && o.DeletionTimestamp.IsZero() {
					others[o.Name] = o.Spec.Inherits
				}
			}
			return CheckInherits(t.Name, old, t.Spec.Inherits, others)
		})
	if err != nil {
		return unavailable("spec.inherits against the other RoleTemplates", err)
	}
	if len(vs) > 0 {
		return invalid("RoleTemplate", t.Name, vs)
	}
	return nil
}

// ValidateDelete refuses to delete a template that AccessBindings grant, unless it
// carries ForceDeleteAnnotation: "true".
func (v RoleTemplateValidator) ValidateDelete(ctx context.Context, t *v1alpha1.RoleTemplate) (cradmission.Warnings, error) {
	var refs []string
	vs, err := check(ctx, v.Readers, func() *v1alpha1.AccessBindingList { return &v1alpha1.AccessBindingList{} },
		func(l *v1alpha1.AccessBindingList) []Violation {
			refs = Referencing(t.Name, l.Items)
			if len(refs) == 0 {
				return nil
			}
			return []Violation{{}}
		})
	if err != nil {
		if t.Annotations[ForceDeleteAnnotation] == "true" {
			return nil, nil
		}
		return nil, unavailable("which AccessBindings grant the RoleTemplate", err)
	}
	if len(vs) == 0 {
		return nil, nil
	}
	what := fmt.Sprintf("AccessBinding %s still grants it", refs[0])
	if len(refs) > 1 {
		what = fmt.Sprintf("%d AccessBindings still grant it: %s", len(refs), listNames(refs, maxListed))
	}
	if t.Annotations[ForceDeleteAnnotation] == "true" {
		return cradmission.Warnings{fmt.Sprintf("RoleTemplate %s deleted with %s: \"true\" although %s; those bindings are held (Stalled, RoleTemplateNotFound) until you change or delete them",
			t.Name, ForceDeleteAnnotation, what)}, nil
	}
	return nil, apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "roletemplates"}, t.Name, fmt.Errorf(
		"%s; delete those bindings or change their spec.roleRef first, or set annotation %s: \"true\" on the RoleTemplate to delete it anyway",
		what, ForceDeleteAnnotation))
}

// ClusterProjectValidator refuses namespaces Drover never manages, and namespaces
// that another project already holds.
type ClusterProjectValidator struct {
	Readers Readers
	// Namespace is the operator namespace, which no project may hold.
	Namespace string
}

var _ cradmission.Validator[*v1alpha1.ClusterProject] = ClusterProjectValidator{}

// ValidateCreate checks spec.namespaces.
func (v ClusterProjectValidator) ValidateCreate(ctx context.Context, p *v1alpha1.ClusterProject) (cradmission.Warnings, error) {
	return nil, v.checkNamespaces(ctx, nil, p)
}

// ValidateUpdate checks spec.namespaces when it changes.
func (v ClusterProjectValidator) ValidateUpdate(ctx context.Context, old, p *v1alpha1.ClusterProject) (cradmission.Warnings, error) {
	if equality.Semantic.DeepEqual(old.Spec.Namespaces, p.Spec.Namespaces) || !p.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return nil, v.checkNamespaces(ctx, old.Spec.Namespaces, p)
}

// ValidateDelete allows every deletion.
func (ClusterProjectValidator) ValidateDelete(context.Context, *v1alpha1.ClusterProject) (cradmission.Warnings, error) {
	return nil, nil
}

func (v ClusterProjectValidator) checkNamespaces(ctx context.Context, old []v1alpha1.ProjectNamespace, p *v1alpha1.ClusterProject) error {
	never := NeverManaged(v.Namespace)
	// The namespaces Drover never manages need no reads; other projects' claims do,
	// and only for namespaces the request adds.
	if vs := CheckNamespaces(old, p.Spec.Namespaces, nil, never, v.Namespace); len(vs) > 0 {
		return invalid("ClusterProject", p.Name, vs)
	}
	had := map[string]bool{}
	for _, ns := range old {
		had[ns.Name] = true
	}
	added := false
	for _, ns := range p.Spec.Namespaces {
		added = added || !had[ns.Name]
	}
	if !added {
		return nil
	}
	vs, err := check(ctx, v.Readers, func() *v1alpha1.ClusterProjectList { return &v1alpha1.ClusterProjectList{} },
		func(l *v1alpha1.ClusterProjectList) []Violation {
			return CheckNamespaces(old, p.Spec.Namespaces, Claims(l.Items, p.Name), never, v.Namespace)
		})
	if err != nil {
		return unavailable("spec.namespaces against the other ClusterProjects", err)
	}
	if len(vs) > 0 {
		return invalid("ClusterProject", p.Name, vs)
	}
	return nil
}

// errNoCertificate is what TLS handshakes get before the serving certificate is loaded.
var errNoCertificate = errors.New("the admission webhook's serving certificate is not loaded yet")
