package remote

import (
	"context"
	"net/http"
	"slices"
	"testing"
)

// TestNamesWithID: the index by identity lists exactly the current connections that
// have read that identity, as connections are identified, replaced and closed.
func TestNamesWithID(t *testing.T) {
	conn := func(name, id string) *Cluster {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		return &Cluster{Name: name, id: id, ctx: ctx, cancel: cancel, HTTPClient: &http.Client{}}
	}
	type step func(c *Cache)
	add := func(cl *Cluster) step {
		return func(c *Cache) {
			c.mu.Lock()
			c.unindex(c.clusters[cl.Name])
			c.clusters[cl.Name] = cl
			c.mu.Unlock()
			if cl.id != "" {
				c.identified(cl)
			}
		}
	}
	a1, a2, b, late := conn("a", "uid-1"), conn("a", "uid-2"), conn("b", "uid-1"), conn("c", "uid-1")
	cases := []struct {
		name  string
		steps []step
		want  map[string][]string
	}{
		{"one identified connection", []step{add(a1)}, map[string][]string{"uid-1": {"a"}, "uid-2": {}}},
		{"two names, one target", []step{add(a1), add(b)}, map[string][]string{"uid-1": {"a", "b"}}},
		{"not identified yet", []step{add(conn("a", ""))}, map[string][]string{"uid-1": {}, "": {}}},
		{"replaced by a connection to another target", []step{add(a1), add(b), add(a2)}, map[string][]string{"uid-1": {"b"}, "uid-2": {"a"}}},
		{"disconnected", []step{add(a1), add(b), func(c *Cache) { c.Disconnect("a") }}, map[string][]string{"uid-1": {"b"}}},
		{"identified after it was replaced: not listed", []step{add(a2), func(c *Cache) { c.identified(a1) }}, map[string][]string{"uid-1": {}, "uid-2": {"a"}}},
		{"identified after it was closed: not listed", []step{func(c *Cache) { c.identified(late) }}, map[string][]string{"uid-1": {}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{})
			for _, s := range tc.steps {
				s(c)
			}
			for id, want := range tc.want {
				got := c.NamesWithID(id)
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("NamesWithID(%q) = %v, want %v", id, got, want)
				}
			}
		})
	}
}
