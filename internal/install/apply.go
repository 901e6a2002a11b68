package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// FieldManager is the field manager objects are applied with, as kubectl's.
const FieldManager = "kubectl"

// Decode splits multi-document YAML into objects, skipping empty documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
}

// Applier applies objects to one API server with server-side apply.
type Applier struct {
	dyn  dynamic.Interface
	disc discovery.DiscoveryInterface
}

// NewApplier returns an Applier for cfg.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, disc: disc}, nil
}

// Mapper is a snapshot of the API server's kinds, taken now.
func (a *Applier) Mapper() (meta.RESTMapper, error) {
	groups, err := restmapper.GetAPIGroupResources(a.disc)
	if err != nil {
		return nil, err
	}
	return restmapper.NewDiscoveryRESTMapper(groups), nil
}

// ApplyOnePass applies objs in order, resolving their kinds against one discovery
// snapshot taken before the first, as `kubectl apply --server-side -f` does. It
// applies every object it can and returns the errors of the others, joined.
func (a *Applier) ApplyOnePass(ctx context.Context, objs []*unstructured.Unstructured) error {
	mapper, err := a.Mapper()
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range objs {
		if err := a.apply(ctx, mapper, o); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", o.GetKind(), name(o), err))
		}
	}
	return errors.Join(errs...)
}

func (a *Applier) apply(ctx context.Context, mapper meta.RESTMapper, o *unstructured.Unstructured) error {
	ri, err := a.resource(mapper, o)
	if err != nil {
		return err
	}
	// As kubectl apply --server-side without --force-conflicts: a field another
	// manager owns is a conflict, not taken over.
	_, err = ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager})
	return err
}

// Get reads o's current state from the API server.
func (a *Applier) Get(ctx context.Context, mapper meta.RESTMapper, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	ri, err := a.resource(mapper, o)
	if err != nil {
		return nil, err
	}
	return ri.Get(ctx, o.GetName(), metav1.GetOptions{})
}

func (a *Applier) resource(mapper meta.RESTMapper, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		return a.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return a.dyn.Resource(m.Resource), nil
}

func name(o *unstructured.Unstructured) string {
	if o.GetNamespace() != "" {
		return o.GetNamespace() + "/" + o.GetName()
	}
	return o.GetName()
}
