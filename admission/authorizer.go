package admission

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// The webhook asks the hub's authorizer whether a requester has the verbs bind and
// escalate.
//
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Authorizer tells whether a hub user may do something on the hub.
type Authorizer interface {
	Allowed(ctx context.Context, user authenticationv1.UserInfo, attrs authorizationv1.ResourceAttributes) (bool, error)
}

// SubjectAccessReviewer asks the hub's API server with a SubjectAccessReview, so that
// every authorizer the hub runs (RBAC, webhooks, Node) answers, as for any request.
type SubjectAccessReviewer struct {
	Client client.Client
}

// Allowed creates a SubjectAccessReview for user and attrs.
func (a SubjectAccessReviewer) Allowed(ctx context.Context, user authenticationv1.UserInfo, attrs authorizationv1.ResourceAttributes) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &attrs,
		User:               user.Username,
		Groups:             user.Groups,
		UID:                user.UID,
	}}
	if len(user.Extra) > 0 {
		sar.Spec.Extra = make(map[string]authorizationv1.ExtraValue, len(user.Extra))
		for k, v := range user.Extra {
			sar.Spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	if err := a.Client.Create(ctx, sar); err != nil {
		return false, fmt.Errorf("SubjectAccessReview for %s: %w", attrs.Verb, err)
	}
	return sar.Status.Allowed, nil
}

// bindAttributes is the hub permission that lets a user grant the role ref names:
// bind on roletemplates.management.drover.io/<name>, or on
// clusterroles.rbac.authorization.k8s.io/<name>.
func bindAttributes(ref v1alpha1.RoleRef) authorizationv1.ResourceAttributes {
	if ref.Kind == v1alpha1.RoleRefClusterRole {
		return authorizationv1.ResourceAttributes{Verb: "bind", Group: rbacv1.GroupName, Resource: "clusterroles", Name: ref.Name}
	}
	return authorizationv1.ResourceAttributes{Verb: "bind", Group: v1alpha1.GroupVersion.Group, Resource: "roletemplates", Name: ref.Name}
}

// escalateAttributes is the hub permission that lets a user change what a
// RoleTemplate grants: escalate on roletemplates.management.drover.io/<name>.
func escalateAttributes(name string) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{Verb: "escalate", Group: v1alpha1.GroupVersion.Group, Resource: "roletemplates", Name: name}
}

// attrString renders attributes as a person would grant them in a ClusterRole.
func attrString(a authorizationv1.ResourceAttributes) string {
	return fmt.Sprintf("%q on %s.%s/%s", a.Verb, a.Resource, a.Group, a.Name)
}
