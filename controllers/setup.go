// Package controllers holds the hub's reconcilers, one file set per kind.
package controllers

import (
	"context"
	"flag"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The manager's RBAC on the hub. Secrets and Leases are read only in the operator
// namespace, so they get a namespaced Role (config/rbac/role.yaml).
//
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters;roletemplates;accessbindings;clusterprojects,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters/status;roletemplates/status;accessbindings/status;clusterprojects/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=management.drover.io,resources=managedclusters/finalizers;roletemplates/finalizers;accessbindings/finalizers;clusterprojects/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",namespace=drover-system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=drover-system,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Options configure the controllers.
type Options struct {
	// Namespace is the operator namespace (kubeconfig Secrets); set by the manager.
	Namespace string
}

// BindFlags registers the controllers' flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {}

// CacheOptions restricts the hub cache: Secrets are only read from the operator
// namespace, so the manager never caches (or needs RBAC for) Secrets elsewhere.
func CacheOptions(namespace string) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{namespace: {}}},
		},
	}
}

// SetupWithManager registers every controller with the manager.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, o Options) error {
	return nil
}
