package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// changeLog remembers when the hub saw each intent's latest change, so that the
// cluster syncer can tell how long the change took to hold in each target
// (drover_intent_propagation_seconds). The clock starts when the hub's watch
// delivers the change, which is within milliseconds of the write on the hub.
type changeLog struct {
	mu      sync.Mutex
	changes map[intentKey]intentChange
	// swept is when deletions were last forgotten.
	swept time.Time
}

type intentKey struct{ kind, name string }

type intentChange struct {
	generation int64
	deleted    bool
	at         time.Time
}

// forgetDeletedAfter bounds how long a deletion is remembered: longer than any
// target takes to follow, unless it is away, in which case it is not measured.
const forgetDeletedAfter = 10 * time.Minute

func newChangeLog() *changeLog { return &changeLog{changes: map[intentKey]intentChange{}} }

// record notes that the hub saw an intent at generation gen, or deleted.
func (l *changeLog) record(kind, name string, gen int64, deleted bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := intentKey{kind, name}
	if c, ok := l.changes[k]; ok && c.generation == gen && c.deleted == deleted {
		return // the same state seen again (a resync, a status write)
	}
	l.changes[k] = intentChange{generation: gen, deleted: deleted, at: now}
	if now.Sub(l.swept) > forgetDeletedAfter {
		l.swept = now
		for k, c := range l.changes {
			if c.deleted && now.Sub(c.at) > forgetDeletedAfter {
				delete(l.changes, k)
			}
		}
	}
}

// handler wraps next so that every event of an intent of the given kind is noted.
func (l *changeLog) handler(kind string, next handler.EventHandler) handler.EventHandler {
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			l.record(kind, e.Object.GetName(), e.Object.GetGeneration(), false)
			next.Create(ctx, e, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			l.record(kind, e.ObjectNew.GetName(), e.ObjectNew.GetGeneration(), !e.ObjectNew.GetDeletionTimestamp().IsZero())
			next.Update(ctx, e, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) {
			l.record(kind, e.Object.GetName(), e.Object.GetGeneration(), true)
			next.Delete(ctx, e, q)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q queue) { next.Generic(ctx, e, q) },
	}
}

// carryHeld sets each item's HeldGeneration: its generation when the cluster holds
// it, else what the cluster's previous result said.
func carryHeld(before clusterResult, after *clusterResult) {
	for _, m := range []struct{ before, after map[string]itemResult }{
		{before.Bindings, after.Bindings}, {before.Templates, after.Templates}, {before.Projects, after.Projects},
	} {
		for name, it := range m.after {
			switch prev, ok := m.before[name]; {
			case it.OK:
				it.HeldGeneration = it.Generation
			case ok:
				it.HeldGeneration = prev.HeldGeneration
			}
			m.after[name] = it
		}
	}
}

// observe measures, for one cluster's completed sync, every intent change that this
// sync is the first to make hold there: an item now held at the generation the hub
// last saw, which the cluster's previous result did not hold at that generation, or
// an item of a deleted intent that the previous result held and this one no longer
// has. Only a cluster that has been synced without a break since before the change
// counts: one that connects (or is created) later would measure its outage, not
// propagation.
func (l *changeLog) observe(cluster string, before, after clusterResult, now time.Time) {
	if !before.Synced || !after.Synced || before.Since.IsZero() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, kind := range []struct {
		name          string
		before, after map[string]itemResult
	}{
		{kindAccessBinding, before.Bindings, after.Bindings},
		{kindRoleTemplate, before.Templates, after.Templates},
		{kindClusterProject, before.Projects, after.Projects},
	} {
		for name, it := range kind.after {
			if !it.OK {
				continue
			}
			c, ok := l.changes[intentKey{kind.name, name}]
			if !ok || c.deleted || c.generation != it.Generation || !c.at.After(before.Since) {
				continue
			}
			if prev, had := kind.before[name]; had && prev.HeldGeneration == it.Generation {
				continue // held before this sync (a repair of drift is no propagation)
			}
			propagationSeconds.WithLabelValues(cluster).Observe(now.Sub(c.at).Seconds())
		}
		for name, prev := range kind.before {
			if _, still := kind.after[name]; still || !prev.OK {
				continue
			}
			if c, ok := l.changes[intentKey{kind.name, name}]; ok && c.deleted && c.at.After(before.Since) {
				propagationSeconds.WithLabelValues(cluster).Observe(now.Sub(c.at).Seconds())
			}
		}
	}
}
