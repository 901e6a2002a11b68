package remote

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// objectCache is the cache of one target: a controller-runtime cache.Cache whose
// kinds each run one client-go Reflector into a plain map, rather than a shared
// informer. A target's cache holds a dozen kinds of a few objects each; what a
// shared informer adds for that (a delta FIFO, a processor with two goroutines and
// a 1,024-slot ring per handler, a merged stop channel) cost about eleven
// goroutines and 150 KiB per kind, which at a thousand targets was most of the
// manager's memory. Here a kind costs its watch: one goroutine that lists and
// watches, and the goroutines of the watch itself.
//
// Events go to the handlers in the reflector's goroutine, in order; the handlers
// Drover registers only filter and enqueue. A kind starts on first use (Get, List
// or a source) and runs until the connection closes.
type objectCache struct {
	ctx     context.Context
	cluster string
	lw      client.WithWatch
	scheme  *runtime.Scheme
	mapper  meta.RESTMapper
	// selector and transform per kind; defaults for kinds not listed.
	byKind           map[schema.GroupVersionKind]kindOptions
	defaultSelector  labels.Selector
	defaultTransform toolscache.TransformFunc
	onError          func(kind string, err error)

	mu    sync.Mutex
	kinds map[schema.GroupVersionKind]*kindCache
}

type kindOptions struct {
	selector  labels.Selector
	transform toolscache.TransformFunc
}

var _ cache.Cache = &objectCache{}

var corev1Node = corev1.SchemeGroupVersion.WithKind("Node")

// kindCache holds one kind's objects and runs its reflector.
type kindCache struct {
	gvk        schema.GroupVersionKind
	gr         schema.GroupResource
	namespaced bool
	transform  toolscache.TransformFunc
	cancel     context.CancelFunc
	synced     chan struct{}
	syncOnce   sync.Once
	stopped    atomic.Bool

	mu       sync.RWMutex
	items    map[string]client.Object
	handlers []*registration
}

func (c *objectCache) kind(gvk schema.GroupVersionKind) (*kindCache, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.kinds[gvk]; k != nil {
		return k, nil
	}
	if c.ctx.Err() != nil {
		return nil, errors.New("the connection to the cluster is closed")
	}
	example, err := c.scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	listGVK := gvk.GroupVersion().WithKind(gvk.Kind + "List")
	if _, err := c.scheme.New(listGVK); err != nil {
		return nil, err
	}
	mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	opts := c.byKind[gvk]
	if opts.selector == nil {
		opts.selector = c.defaultSelector
	}
	if opts.transform == nil {
		opts.transform = c.defaultTransform
	}
	ctx, cancel := context.WithCancel(c.ctx)
	k := &kindCache{gvk: gvk, gr: mapping.Resource.GroupResource(), namespaced: mapping.Scope.Name() == meta.RESTScopeNameNamespace,
		transform: opts.transform, cancel: cancel, synced: make(chan struct{}), items: map[string]client.Object{}}
	c.kinds[gvk] = k
	sel := opts.selector.String()
	newList := func() client.ObjectList {
		l, _ := c.scheme.New(listGVK)
		return l.(client.ObjectList)
	}
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			l := newList()
			return l, c.lw.List(ctx, l, &client.ListOptions{Raw: &o})
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return c.lw.Watch(ctx, newList(), &client.ListOptions{Raw: &o})
		},
	}
	// The reflector's own notes (a watch that ended early, as when a target goes
	// away) go to Drover's log at V(1); the probe reports the target's health.
	logger := ctrl.Log.WithName("remote").WithValues("cluster", c.cluster, "kind", gvk.Kind).V(1)
	r := toolscache.NewReflectorWithOptions(lw, example, k, toolscache.ReflectorOptions{
		Name: "drover/" + c.cluster + "/" + gvk.Kind, TypeDescription: gvk.String(), Logger: &logger})
	go k.run(ctx, r, func(err error) { c.onError(gvk.Kind, err) })
	return k, nil
}

// run lists and watches until ctx ends, backing off after failures.
func (k *kindCache) run(ctx context.Context, r *toolscache.Reflector, onError func(error)) {
	defer k.stopped.Store(true)
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		start := time.Now()
		err := r.ListAndWatchWithContext(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil || time.Since(start) > time.Minute:
			backoff = 0
		case backoff == 0:
			backoff = 800 * time.Millisecond
		default:
			backoff = min(2*backoff, 30*time.Second)
		}
		if err != nil {
			onError(err)
		}
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func objectKey(o metav1.Object) string { return o.GetNamespace() + "/" + o.GetName() }

func (k *kindCache) prepare(obj any) (client.Object, error) {
	if k.transform != nil {
		var err error
		if obj, err = k.transform(obj); err != nil {
			return nil, err
		}
	}
	o, ok := obj.(client.Object)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	return o, nil
}

// Add, Update, Delete, Replace and Resync make kindCache the reflector's store.

func (k *kindCache) Add(obj any) error { return k.Update(obj) }

func (k *kindCache) Update(obj any) error {
	o, err := k.prepare(obj)
	if err != nil {
		return err
	}
	key := objectKey(o)
	k.mu.Lock()
	old := k.items[key]
	k.items[key] = o
	hs := k.handlers
	k.mu.Unlock()
	for _, h := range hs {
		if old == nil {
			h.h.OnAdd(o, false)
		} else {
			h.h.OnUpdate(old, o)
		}
	}
	return nil
}

func (k *kindCache) Delete(obj any) error {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	key := objectKey(m)
	k.mu.Lock()
	old := k.items[key]
	delete(k.items, key)
	hs := k.handlers
	k.mu.Unlock()
	if old == nil {
		return nil
	}
	for _, h := range hs {
		h.h.OnDelete(old)
	}
	return nil
}

func (k *kindCache) Replace(list []any, _ string) error {
	next := make(map[string]client.Object, len(list))
	for _, obj := range list {
		o, err := k.prepare(obj)
		if err != nil {
			return err
		}
		next[objectKey(o)] = o
	}
	k.mu.Lock()
	prev := k.items
	k.items = next
	hs := k.handlers
	k.mu.Unlock()
	first := false
	select {
	case <-k.synced:
	default:
		first = true
	}
	for key, o := range next {
		old := prev[key]
		for _, h := range hs {
			switch {
			case old == nil:
				h.h.OnAdd(o, first)
			case old.GetResourceVersion() != o.GetResourceVersion():
				h.h.OnUpdate(old, o)
			}
		}
	}
	for key, old := range prev {
		if _, ok := next[key]; !ok {
			for _, h := range hs {
				h.h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: key, Obj: old})
			}
		}
	}
	k.syncOnce.Do(func() { close(k.synced) })
	for _, h := range hs {
		h.markSynced()
	}
	return nil
}

func (k *kindCache) Resync() error { return nil }

func (k *kindCache) hasSynced() bool {
	select {
	case <-k.synced:
		return true
	default:
		return false
	}
}

// waitSynced waits until the kind has listed once, or ctx ends.
func (k *kindCache) waitSynced(ctx context.Context) error {
	select {
	case <-k.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the cache of %s has not synced: %w", k.gvk.Kind, ctx.Err())
	}
}

// registration is one handler of one kind.
type registration struct {
	h    toolscache.ResourceEventHandler
	done chan struct{}
	once sync.Once
}

func (r *registration) markSynced()     { r.once.Do(func() { close(r.done) }) }
func (r *registration) HasSynced() bool { return isClosed(r.done) }
func (r *registration) HasSyncedChecker() toolscache.DoneChecker {
	return doneChecker{name: "handler", ch: r.done}
}

type doneChecker struct {
	name string
	ch   chan struct{}
}

func (d doneChecker) Name() string          { return d.name }
func (d doneChecker) Done() <-chan struct{} { return d.ch }

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// informer is kindCache as a cache.Informer.
type informer struct{ k *kindCache }

func (i informer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	k := i.k
	reg := &registration{h: h, done: make(chan struct{})}
	k.mu.Lock()
	k.handlers = append(k.handlers[:len(k.handlers):len(k.handlers)], reg)
	items := make([]client.Object, 0, len(k.items))
	for _, o := range k.items {
		items = append(items, o)
	}
	synced := k.hasSynced()
	k.mu.Unlock()
	for _, o := range items {
		h.OnAdd(o, true)
	}
	if synced {
		reg.markSynced()
	}
	return reg, nil
}

func (i informer) AddEventHandlerWithResyncPeriod(h toolscache.ResourceEventHandler, _ time.Duration) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.AddEventHandler(h)
}

func (i informer) AddEventHandlerWithOptions(h toolscache.ResourceEventHandler, _ toolscache.HandlerOptions) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.AddEventHandler(h)
}

func (i informer) RemoveEventHandler(handle toolscache.ResourceEventHandlerRegistration) error {
	k := i.k
	k.mu.Lock()
	defer k.mu.Unlock()
	var keep []*registration
	for _, r := range k.handlers {
		if toolscache.ResourceEventHandlerRegistration(r) != handle {
			keep = append(keep, r)
		}
	}
	k.handlers = keep
	return nil
}

func (i informer) AddIndexers(toolscache.Indexers) error {
	return errors.New("the cache of a target cluster has no indexes")
}
func (i informer) HasSynced() bool { return i.k.hasSynced() }
func (i informer) HasSyncedChecker() toolscache.DoneChecker {
	return doneChecker{name: i.k.gvk.Kind, ch: i.k.synced}
}
func (i informer) IsStopped() bool { return i.k.stopped.Load() }

// Get reads one object from the cache, starting its kind if needed.
func (c *objectCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	gvk, err := c.typedGVK(obj)
	if err != nil {
		return err
	}
	k, err := c.kind(gvk)
	if err != nil {
		return err
	}
	if err := k.waitSynced(ctx); err != nil {
		return err
	}
	if !k.namespaced {
		key.Namespace = ""
	}
	k.mu.RLock()
	o := k.items[key.Namespace+"/"+key.Name]
	k.mu.RUnlock()
	if o == nil {
		return apierrors.NewNotFound(k.gr, key.Name)
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(o.DeepCopyObject()).Elem())
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return nil
}

// List lists objects from the cache by namespace, labels and name, starting the
// kind if needed.
func (c *objectCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	listGVK, err := c.typedGVK(list)
	if err != nil {
		return err
	}
	gvk := listGVK.GroupVersion().WithKind(strings.TrimSuffix(listGVK.Kind, "List"))
	k, err := c.kind(gvk)
	if err != nil {
		return err
	}
	if err := k.waitSynced(ctx); err != nil {
		return err
	}
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	var fieldSel fields.Selector
	if lo.FieldSelector != nil && !lo.FieldSelector.Empty() {
		for _, r := range lo.FieldSelector.Requirements() {
			if r.Field != "metadata.name" && r.Field != "metadata.namespace" {
				return fmt.Errorf("the cache of a target cluster selects by metadata.name and metadata.namespace only, not %s", r.Field)
			}
		}
		fieldSel = lo.FieldSelector
	}
	unsafe := lo.UnsafeDisableDeepCopy != nil && *lo.UnsafeDisableDeepCopy
	k.mu.RLock()
	var items []runtime.Object
	for _, o := range k.items {
		if lo.Namespace != "" && o.GetNamespace() != lo.Namespace {
			continue
		}
		if lo.LabelSelector != nil && !lo.LabelSelector.Matches(labels.Set(o.GetLabels())) {
			continue
		}
		if fieldSel != nil && !fieldSel.Matches(fields.Set{"metadata.name": o.GetName(), "metadata.namespace": o.GetNamespace()}) {
			continue
		}
		if unsafe {
			// Shared with the cache and every other reader: never changed here.
			items = append(items, o)
		} else {
			c := o.DeepCopyObject()
			c.GetObjectKind().SetGroupVersionKind(gvk)
			items = append(items, c)
		}
	}
	k.mu.RUnlock()
	return meta.SetList(list, items)
}

// typedGVK is the kind of a typed object; unstructured and metadata-only objects
// are read from the API server, never from this cache.
func (c *objectCache) typedGVK(obj runtime.Object) (schema.GroupVersionKind, error) {
	switch obj.(type) {
	case *metav1.PartialObjectMetadata, *metav1.PartialObjectMetadataList, runtime.Unstructured:
		return schema.GroupVersionKind{}, fmt.Errorf("the cache of a target cluster holds typed objects only, not %T", obj)
	}
	return apiutil.GVKForObject(obj, c.scheme)
}

func (c *objectCache) GetInformer(_ context.Context, obj client.Object, _ ...cache.InformerGetOption) (cache.Informer, error) {
	gvk, err := c.typedGVK(obj)
	if err != nil {
		return nil, err
	}
	return c.GetInformerForKind(context.Background(), gvk)
}

func (c *objectCache) GetInformerForKind(_ context.Context, gvk schema.GroupVersionKind, _ ...cache.InformerGetOption) (cache.Informer, error) {
	k, err := c.kind(gvk)
	if err != nil {
		return nil, err
	}
	return informer{k}, nil
}

func (c *objectCache) RemoveInformer(_ context.Context, obj client.Object) error {
	gvk, err := c.typedGVK(obj)
	if err != nil {
		return err
	}
	c.mu.Lock()
	k := c.kinds[gvk]
	delete(c.kinds, gvk)
	c.mu.Unlock()
	if k != nil {
		k.cancel()
	}
	return nil
}

// Start returns at once: kinds start on first use and stop with the connection.
func (c *objectCache) Start(context.Context) error { return nil }

func (c *objectCache) WaitForCacheSync(ctx context.Context) bool {
	c.mu.Lock()
	ks := make([]*kindCache, 0, len(c.kinds))
	for _, k := range c.kinds {
		ks = append(ks, k)
	}
	c.mu.Unlock()
	for _, k := range ks {
		if k.waitSynced(ctx) != nil {
			return false
		}
	}
	return true
}

func (c *objectCache) IndexField(context.Context, client.Object, string, client.IndexerFunc) error {
	return errors.New("the cache of a target cluster has no indexes")
}

// newObjectCache builds the cache of a connection.
func (c *Cluster) newObjectCache() (*objectCache, error) {
	lw, err := client.NewWithWatch(c.Config, client.Options{HTTPClient: c.HTTPClient, Scheme: c.scheme, Mapper: c.mapper})
	if err != nil {
		return nil, err
	}
	log := ctrl.Log.WithName("remote")
	return &objectCache{
		ctx: c.ctx, cluster: c.Name, lw: lw, scheme: c.scheme, mapper: c.mapper,
		defaultSelector:  OwnedSelector(),
		defaultTransform: cache.TransformStripManagedFields(),
		byKind:           map[schema.GroupVersionKind]kindOptions{corev1Node: {selector: labels.Everything(), transform: stripNode}},
		// A target that goes away is reported by its probe, on its ManagedCluster;
		// its watches failing meanwhile are expected, so they are logged quietly.
		onError: func(kind string, err error) {
			reason, _ := Classify(err, c.Endpoint, c.source)
			log.V(1).Info("Watch of a target failed; retrying", "cluster", c.Name, "kind", kind, "reason", reason)
		},
		kinds: map[schema.GroupVersionKind]*kindCache{},
	}, nil
}
