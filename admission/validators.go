package admission

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	cradmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
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
// may grant one to (render.ForbiddenSubject).
type AccessBindingValidator struct{}

var _ cradmission.Validator[*v1alpha1.AccessBinding] = AccessBindingValidator{}

// ValidateCreate checks the subjects.
func (AccessBindingValidator) ValidateCreate(_ context.Context, b *v1alpha1.AccessBinding) (cradmission.Warnings, error) {
	if vs := CheckSubjects(b.Spec.Subjects); len(vs) > 0 {
		return nil, invalid("AccessBinding", b.Name, vs)
	}
	return nil, nil
}

// ValidateUpdate checks the subjects when the spec changes. A change to metadata
// alone (labels, annotations, finalizers) is never refused.
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

// RoleTemplateValidator refuses inheritance cycles and unknown inherited templates,
// and the deletion of a template that AccessBindings still grant.
type RoleTemplateValidator struct {
	Readers Readers
}

var _ cradmission.Validator[*v1alpha1.RoleTemplate] = RoleTemplateValidator{}

// ValidateCreate checks spec.inherits.
func (v RoleTemplateValidator) ValidateCreate(ctx context.Context, t *v1alpha1.RoleTemplate) (cradmission.Warnings, error) {
	return nil, v.checkInherits(ctx, nil, t)
}

// ValidateUpdate checks the entries of spec.inherits that the update adds.
func (v RoleTemplateValidator) ValidateUpdate(ctx context.Context, old, t *v1alpha1.RoleTemplate) (cradmission.Warnings, error) {
	if !t.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return nil, v.checkInherits(ctx, old.Spec.Inherits, t)
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
