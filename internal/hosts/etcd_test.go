package hosts

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdBinary is etcd from $KUBEBUILDER_ASSETS, as `make test` sets it, or else from
// hack/kubebin.sh node.
func etcdBinary(t *testing.T) string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "etcd")); err == nil {
			return filepath.Join(d, "etcd")
		}
	}
	return filepath.Join(NodeBinDir(t), "etcd")
}

// TestEtcdAcrossHosts runs one etcd member in each of three hosts and checks, with
// the etcd client, that they form one healthy cluster over the bridge.
func TestEtcdAcrossHosts(t *testing.T) {
	RequireRoot(t)
	etcd := etcdBinary(t)
	s := NewForTest(t, 3, Options{Names: []string{"etcd-0", "etcd-1", "etcd-2"}})

	var initial []string
	for _, h := range s.Hosts {
		initial = append(initial, fmt.Sprintf("%s=http://%s:2380", h.Name, h.IP))
	}
	var endpoints []string
	for _, h := range s.Hosts {
		_, err := h.Start(etcd,
			"--name", h.Name,
			"--data-dir", "/var/lib/etcd",
			"--listen-peer-urls", fmt.Sprintf("http://%s:2380", h.IP),
			"--initial-advertise-peer-urls", fmt.Sprintf("http://%s:2380", h.IP),
			"--listen-client-urls", fmt.Sprintf("http://%s:2379,http://127.0.0.1:2379", h.IP),
			"--advertise-client-urls", fmt.Sprintf("http://%s:2379", h.IP),
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", "drover-hosts-"+s.Run,
			"--log-level", "warn",
		)
		if err != nil {
			t.Fatal(err)
		}
		endpoints = append(endpoints, fmt.Sprintf("http://%s:2379", h.IP))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// Every member answers on its own address, and all agree on one leader.
	var leader uint64
	eventually(t, ctx, func() error {
		leader = 0
		for _, ep := range endpoints {
			st, err := cli.Status(ctx, ep)
			if err != nil {
				return fmt.Errorf("status of %s: %w", ep, err)
			}
			if len(st.Errors) > 0 {
				return fmt.Errorf("%s reports %v", ep, st.Errors)
			}
			if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				return fmt.Errorf("%s sees leader %x, others %x", ep, st.Leader, leader)
			}
			leader = st.Leader
		}
		return nil
	})

	members, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 3 {
		t.Fatalf("%d members, want 3: %v", len(members.Members), members.Members)
	}
	for _, m := range members.Members {
		var addr netip.AddrPort
		if len(m.PeerURLs) == 1 {
			u, err := url.Parse(m.PeerURLs[0])
			if err == nil {
				addr, _ = netip.ParseAddrPort(u.Host)
			}
		}
		if !s.Subnet.Contains(addr.Addr()) {
			t.Errorf("member %s has peer URLs %v, outside %s", m.Name, m.PeerURLs, s.Subnet)
		}
	}

	// A write through one member is read, linearizably, through each of the others.
	one, err := clientv3.New(clientv3.Config{Endpoints: endpoints[:1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if _, err := one.Put(ctx, "/drover/hosts", s.Run); err != nil {
		t.Fatal(err)
	}
	for _, ep := range endpoints[1:] {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Get(ctx, "/drover/hosts")
		c.Close()
		if err != nil {
			t.Fatalf("get through %s: %v", ep, err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != s.Run {
			t.Errorf("get through %s: %v", ep, resp.Kvs)
		}
	}

	// Each member keeps its data in its own host's /var/lib.
	for _, h := range s.Hosts {
		if _, err := os.Stat(h.Path("/var/lib/etcd/member/wal")); err != nil {
			t.Errorf("no WAL in %s's /var/lib/etcd: %v", h.Name, err)
		}
		if _, err := os.Stat(filepath.Join(h.Dir, "var/lib/etcd/member/wal")); err != nil {
			t.Errorf("%s's /var/lib is not its data directory: %v", h.Name, err)
		}
	}
}

// eventually retries f every 200 ms until it succeeds or ctx ends, then fails t
// with f's last error.
func eventually(t *testing.T, ctx context.Context, f func() error) {
	t.Helper()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gave up: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
