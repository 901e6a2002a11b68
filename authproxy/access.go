package authproxy

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/render"
)

// The proxy reads the intents from the manager's cache.
//
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters;accessbindings;clusterprojects,verbs=get;list;watch

// access says whether a caller may use the proxy to a cluster: either an
// AccessBinding grants its forwarded identity something in that cluster (the
// target's RBAC then decides what), or the hub grants it `get` on
// managedclusters/proxy for that cluster.
type access struct {
	reader client.Reader
	// hub answers SubjectAccessReviews against the hub (cached briefly).
	hub authorizer.Authorizer
}

// decision is what the proxy learns about a caller and a cluster.
type decision struct {
	// exists: the ManagedCluster exists (only meaningful when allowed).
	exists  bool
	allowed bool
}

// decide reads the cluster and the bindings. A caller that is not allowed learns
// nothing: the caller gets the same answer whether or not the cluster exists.
func (a *access) decide(ctx context.Context, u user.Info, id Identity, name string) (decision, error) {
	var mc v1alpha1.ManagedCluster
	err := a.reader.Get(ctx, client.ObjectKey{Name: name}, &mc)
	switch {
	case apierrors.IsNotFound(err):
		ok, err := a.hubAllows(ctx, u, name)
		return decision{allowed: ok}, err
	case err != nil:
		return decision{}, fmt.Errorf("read ManagedCluster %s: %w", name, err)
	}
	ok, err := a.bound(ctx, id, &mc)
	if err != nil {
		return decision{}, err
	}
	if !ok {
		if ok, err = a.hubAllows(ctx, u, name); err != nil {
			return decision{}, err
		}
	}
	if !ok {
		return decision{}, nil
	}
	return decision{exists: true, allowed: true}, nil
}

// hubAllows asks the hub whether u may get managedclusters/proxy (name "" means
// every cluster).
func (a *access) hubAllows(ctx context.Context, u user.Info, name string) (bool, error) {
	if a.hub == nil {
		return false, nil
	}
	d, _, err := a.hub.Authorize(ctx, authorizer.AttributesRecord{
		User: u, Verb: "get", APIGroup: v1alpha1.GroupVersion.Group, APIVersion: v1alpha1.GroupVersion.Version,
		Resource: "managedclusters", Subresource: "proxy", Name: name, ResourceRequest: true,
	})
	if err != nil {
		return false, fmt.Errorf("ask the hub whether %s may use the proxy: %w", u.GetName(), err)
	}
	return d == authorizer.DecisionAllow, nil
}

// bound tells whether an AccessBinding that names the forwarded identity (or one
// of its groups) selects the cluster, directly or through its project.
func (a *access) bound(ctx context.Context, id Identity, mc *v1alpha1.ManagedCluster) (bool, error) {
	bs, err := a.bindingsOf(ctx, id)
	if err != nil {
		return false, err
	}
	return a.selectsAny(ctx, bs, mc)
}

// bindingsOf lists the AccessBindings that name the identity.
func (a *access) bindingsOf(ctx context.Context, id Identity) ([]*v1alpha1.AccessBinding, error) {
	var list v1alpha1.AccessBindingList
	if err := a.reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list AccessBindings: %w", err)
	}
	var out []*v1alpha1.AccessBinding
	for i := range list.Items {
		b := &list.Items[i]
		if b.DeletionTimestamp.IsZero() && names(b.Spec.Subjects, id) {
			out = append(out, b)
		}
	}
	return out, nil
}

func (a *access) selectsAny(ctx context.Context, bs []*v1alpha1.AccessBinding, mc *v1alpha1.ManagedCluster) (bool, error) {
	for _, b := range bs {
		ok, err := a.selects(ctx, b, mc)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (a *access) selects(ctx context.Context, b *v1alpha1.AccessBinding, mc *v1alpha1.ManagedCluster) (bool, error) {
	cl := render.Cluster{Name: mc.Name, Labels: mc.Labels}
	if b.Spec.Clusters != nil {
		ok, _ := render.Selects(*b.Spec.Clusters, cl)
		return ok, nil
	}
	if b.Spec.Project == "" {
		return false, nil
	}
	var p v1alpha1.ClusterProject
	if err := a.reader.Get(ctx, client.ObjectKey{Name: b.Spec.Project}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("read ClusterProject %s: %w", b.Spec.Project, err)
	}
	ok, _ := render.Selects(p.Spec.Clusters, cl)
	return ok, nil
}

// names tells whether subjects name the identity as the target sees it. A
// ServiceAccount subject is one of the target's own ServiceAccounts, which no hub
// identity ever is.
func names(subjects []v1alpha1.Subject, id Identity) bool {
	for _, s := range subjects {
		if render.ForbiddenSubject(s) != "" {
			continue
		}
		switch s.Kind {
		case v1alpha1.SubjectUser:
			if s.Name == id.User {
				return true
			}
		case v1alpha1.SubjectGroup:
			if id.Has(s.Name) {
				return true
			}
		}
	}
	return false
}

// reachable lists the clusters the caller may use the proxy to: all of them when the
// hub lets it get managedclusters/proxy for every name, else those its
// AccessBindings select.
func (a *access) reachable(ctx context.Context, u user.Info, id Identity) ([]v1alpha1.ManagedCluster, error) {
	var list v1alpha1.ManagedClusterList
	if err := a.reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list ManagedClusters: %w", err)
	}
	all, err := a.hubAllows(ctx, u, "")
	if err != nil {
		return nil, err
	}
	var bs []*v1alpha1.AccessBinding
	if !all {
		if bs, err = a.bindingsOf(ctx, id); err != nil {
			return nil, err
		}
	}
	var out []v1alpha1.ManagedCluster
	for i := range list.Items {
		mc := &list.Items[i]
		ok := all
		if !ok {
			if ok, err = a.selectsAny(ctx, bs, mc); err != nil {
				return nil, err
			}
		}
		if ok {
			out = append(out, *mc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
