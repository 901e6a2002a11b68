// Package sharding splits the ManagedClusters of one hub across manager replicas.
//
// A replica started with --shard=K/N owns shard K: every ManagedCluster whose shard
// (Of) is K. Each shard is a coordination.k8s.io Lease in the operator namespace,
// drover-shard-K. A replica holds its own shard's Lease, renews it, and takes over
// the Lease of any other shard that nobody renews (its replica died or is being
// replaced); it gives such a shard back as soon as that shard's own replica asks for
// it. A replica connects to, syncs and writes the status of the clusters of the shards
// it holds, and of no others.
//
// The assignment is stable and documented (docs/sharding.md): the label
// management.drover.io/shard, when it holds a number below N, names the shard;
// otherwise the shard is FNV-1a (32 bit) of the ManagedCluster's name, modulo N, as
// Argo CD's application controller assigns clusters to its shards.
package sharding

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// Label, on a ManagedCluster, pins it to a shard: its value is the shard's number.
const Label = "management.drover.io/shard"

// MaxShards bounds N in --shard=K/N.
const MaxShards = v1alpha1.MaxShards

// Spec is this replica's --shard=K/N.
type Spec struct {
	// Index is K, the shard this replica owns.
	Index int
	// Count is N, the number of shards; zero means sharding is off.
	Count int
}

// Enabled tells whether sharding is on.
func (s Spec) Enabled() bool { return s.Count > 0 }

// String returns K/N, or "" when sharding is off.
func (s Spec) String() string {
	if !s.Enabled() {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// Parse reads K/N: 0 <= K < N <= MaxShards. An empty value turns sharding off.
func Parse(v string) (Spec, error) {
	if v == "" {
		return Spec{}, nil
	}
	k, n, ok := strings.Cut(v, "/")
	ki, err1 := strconv.Atoi(k)
	ni, err2 := strconv.Atoi(n)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return Spec{}, fmt.Errorf("want K/N (this replica's shard K of N shards, e.g. 0/2), got %q", v)
	case ni < 1 || ni > MaxShards:
		return Spec{}, fmt.Errorf("the number of shards in %q must be between 1 and %d", v, MaxShards)
	case ki < 0 || ki >= ni:
		return Spec{}, fmt.Errorf("the shard in %q must be between 0 and %d (shards are numbered from 0)", v, ni-1)
	}
	return Spec{Index: ki, Count: ni}, nil
}

// Set implements flag.Value.
func (s *Spec) Set(v string) error {
	p, err := Parse(v)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// Of returns the shard of the ManagedCluster with this name and labels, of n shards.
func Of(name string, labels map[string]string, n int) int {
	if n <= 1 {
		return 0
	}
	if v, ok := labels[Label]; ok {
		if k, err := strconv.Atoi(v); err == nil && k >= 0 && k < n {
			return k
		}
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return int(h.Sum32() % uint32(n))
}

// LeaseName is the name of shard k's Lease.
func LeaseName(k int) string { return "drover-shard-" + strconv.Itoa(k) }
