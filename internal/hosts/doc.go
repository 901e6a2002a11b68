// Package hosts makes test hosts on this machine: each one a set of Linux namespaces
// that looks to the programs inside like a machine of its own, so that etcd, sshd,
// containerd, kubelet and the node agent run there for real and talk to each other
// over a real network.
//
// A host is
//   - a network namespace with one interface, eth0, on a Linux bridge in the root
//     namespace: its own IP address, reachable from the root namespace and from the
//     other hosts; the bridge's own address (Set.Gateway) is the hub as the hosts
//     see it, and is their default route;
//   - a mount namespace in which /etc is an overlay of the machine's /etc (so a host
//     may write /etc/kubernetes, /etc/containerd or /etc/ssh without touching the
//     machine), /var/lib, /var/log and /run are empty directories of its own, and
//     /sys shows its own network devices; everything else, /tmp and the binaries
//     among it, is the machine's;
//   - a UTS namespace with its own hostname;
//   - a cgroup of its own in every cgroup v1 hierarchy (drover-hosts/<run>/<host>),
//     which every process started in the host joins, and which kubelet may use as its
//     cgroupRoot: tearing a host down kills everything in it, pods included.
//
// Processes enter a host with nsenter(1) (--net, --mount, --uts), never with
// `ip netns exec`, which remounts /sys and so hides the cgroup hierarchies.
//
// New needs root, iproute2 and util-linux; NewForTest skips the test with a message
// where they are missing. Each Set takes a free slot (r0, r1, ...) under a lock, so
// that concurrent test binaries, even of different people, never share a bridge,
// subnet or cgroup; and before it does, it tears down what runs whose owner process
// has died left behind (processes, cgroups, bridge, veths, iptables rules, files).
// Close tears down everything it made, and NewForTest calls it from t.Cleanup, which
// also runs when the test fails or panics.
//
// See docs/hosts.md for what is real and what is simulated here, and how to use the
// harness by hand.
package hosts
