package render

import (
	"sort"
	"strings"
	"sync"
)

// PreparedCache keeps the Prepared of the intents it last saw, keyed by their
// Revision, so that the syncs of a whole fleet share one Prepare per change of the
// intents instead of resolving the templates and bindings once per cluster.
//
// It holds one entry: the intents change as a whole (every sync reads all of
// them), and an older revision is never asked for again once a newer one exists.
// Its zero value is ready to use, and it is safe for concurrent use.
type PreparedCache struct {
	mu       sync.Mutex
	revision string
	prepared *Prepared
}

// Prepare returns the Prepared of in: the one it keeps when in has the same
// revision, else a new one, which it keeps from then on. Intents that have no
// revision (objects built in memory rather than read from an API server) are
// prepared each time, never cached: nothing would tell an edit of them apart.
func (c *PreparedCache) Prepare(in Intents) *Prepared {
	rev := Revision(in)
	if rev == "" {
		return Prepare(in)
	}
	c.mu.Lock()
	if c.prepared != nil && c.revision == rev {
		p := c.prepared
		c.mu.Unlock()
		return p
	}
	c.mu.Unlock()
	// Prepared outside the lock: concurrent syncs of a new revision may each
	// prepare it once, rather than all wait on one.
	p := Prepare(in)
	c.mu.Lock()
	c.revision, c.prepared = rev, p
	c.mu.Unlock()
	return p
}

// Revision identifies a set of intents by the kind, name and resourceVersion of each:
// the API server gives an object a new resourceVersion on every change (its spec, a
// label, a deletion starting, a status write), so two sets with the same revision hold
// the same objects. It is "" when any intent has no resourceVersion.
func Revision(in Intents) string {
	parts := make([]string, 0, len(in.RoleTemplates)+len(in.AccessBindings)+len(in.Projects))
	for i := range in.RoleTemplates {
		o := &in.RoleTemplates[i]
		if o.ResourceVersion == "" {
			return ""
		}
		parts = append(parts, "t/"+o.Name+"/"+o.ResourceVersion)
	}
	for i := range in.AccessBindings {
		o := &in.AccessBindings[i]
		if o.ResourceVersion == "" {
			return ""
		}
		parts = append(parts, "b/"+o.Name+"/"+o.ResourceVersion)
	}
	for i := range in.Projects {
		o := &in.Projects[i]
		if o.ResourceVersion == "" {
			return ""
		}
		parts = append(parts, "p/"+o.Name+"/"+o.ResourceVersion)
	}
	// A cache lists in no particular order.
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}
