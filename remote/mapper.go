package remote

import (
	"net/http"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// builtinMapper maps the built-in kinds Drover reads and writes in every target.
// Every conformant API server serves them at these resources, so all connections
// share it; a connection asks its server's discovery only for other kinds. A
// per-connection discovery-backed mapper held about 60 KiB per target.
var builtinMapper = func() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	cluster := []schema.GroupVersionKind{
		corev1.SchemeGroupVersion.WithKind("Namespace"), corev1.SchemeGroupVersion.WithKind("Node"),
		rbacv1.SchemeGroupVersion.WithKind("ClusterRole"), rbacv1.SchemeGroupVersion.WithKind("ClusterRoleBinding"),
		authorizationv1.SchemeGroupVersion.WithKind("SubjectAccessReview"), authorizationv1.SchemeGroupVersion.WithKind("SelfSubjectAccessReview"),
	}
	namespaced := []schema.GroupVersionKind{
		corev1.SchemeGroupVersion.WithKind("ServiceAccount"), corev1.SchemeGroupVersion.WithKind("Secret"),
		corev1.SchemeGroupVersion.WithKind("ConfigMap"), corev1.SchemeGroupVersion.WithKind("ResourceQuota"),
		corev1.SchemeGroupVersion.WithKind("LimitRange"), corev1.SchemeGroupVersion.WithKind("Pod"),
		appsv1.SchemeGroupVersion.WithKind("Deployment"), coordinationv1.SchemeGroupVersion.WithKind("Lease"),
		networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"),
		rbacv1.SchemeGroupVersion.WithKind("Role"), rbacv1.SchemeGroupVersion.WithKind("RoleBinding"),
	}
	for _, gvk := range cluster {
		m.Add(gvk, meta.RESTScopeRoot)
	}
	for _, gvk := range namespaced {
		m.Add(gvk, meta.RESTScopeNamespace)
	}
	return m
}()

// fallbackMapper answers from builtinMapper, and from the target's discovery
// (built on first need) for anything else.
type fallbackMapper struct {
	cfg        *rest.Config
	httpClient *http.Client

	once    sync.Once
	dynamic meta.RESTMapper
	err     error
}

func newMapper(cfg *rest.Config, httpClient *http.Client) meta.RESTMapper {
	return &fallbackMapper{cfg: cfg, httpClient: httpClient}
}

func (m *fallbackMapper) discovery() (meta.RESTMapper, error) {
	m.once.Do(func() { m.dynamic, m.err = apiutil.NewDynamicRESTMapper(m.cfg, m.httpClient) })
	return m.dynamic, m.err
}

// or returns the builtin answer, else asks discovery.
func or[T any](v T, err error, fallback func(meta.RESTMapper) (T, error), m *fallbackMapper) (T, error) {
	if err == nil || !meta.IsNoMatchError(err) {
		return v, err
	}
	d, derr := m.discovery()
	if derr != nil {
		return v, derr
	}
	return fallback(d)
}

func (m *fallbackMapper) KindFor(r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	v, err := builtinMapper.KindFor(r)
	return or(v, err, func(d meta.RESTMapper) (schema.GroupVersionKind, error) { return d.KindFor(r) }, m)
}

func (m *fallbackMapper) KindsFor(r schema.GroupVersionResource) ([]schema.GroupVersionKind, error) {
	v, err := builtinMapper.KindsFor(r)
	return or(v, err, func(d meta.RESTMapper) ([]schema.GroupVersionKind, error) { return d.KindsFor(r) }, m)
}

func (m *fallbackMapper) ResourceFor(r schema.GroupVersionResource) (schema.GroupVersionResource, error) {
	v, err := builtinMapper.ResourceFor(r)
	return or(v, err, func(d meta.RESTMapper) (schema.GroupVersionResource, error) { return d.ResourceFor(r) }, m)
}

func (m *fallbackMapper) ResourcesFor(r schema.GroupVersionResource) ([]schema.GroupVersionResource, error) {
	v, err := builtinMapper.ResourcesFor(r)
	return or(v, err, func(d meta.RESTMapper) ([]schema.GroupVersionResource, error) { return d.ResourcesFor(r) }, m)
}

func (m *fallbackMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	v, err := builtinMapper.RESTMapping(gk, versions...)
	return or(v, err, func(d meta.RESTMapper) (*meta.RESTMapping, error) { return d.RESTMapping(gk, versions...) }, m)
}

func (m *fallbackMapper) RESTMappings(gk schema.GroupKind, versions ...string) ([]*meta.RESTMapping, error) {
	v, err := builtinMapper.RESTMappings(gk, versions...)
	return or(v, err, func(d meta.RESTMapper) ([]*meta.RESTMapping, error) { return d.RESTMappings(gk, versions...) }, m)
}

func (m *fallbackMapper) ResourceSingularizer(resource string) (string, error) {
	v, err := builtinMapper.ResourceSingularizer(resource)
	if err == nil {
		return v, nil
	}
	d, derr := m.discovery()
	if derr != nil {
		return v, derr
	}
	return d.ResourceSingularizer(resource)
}
