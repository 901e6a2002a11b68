package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/internal/hosts"
)

// With --provision, make dev also builds a cluster, provisioned-1, as a user does:
// a ManagedCluster with spec.provisioning, and the registration command from its
// status run on two hosts (network and mount namespaces of this machine): one etcd and
// control-plane node, one worker. It needs root, and Debian's containerd, runc,
// containernetworking-plugins and iptables (installed if missing).

const (
	provisionedName    = "provisioned-1"
	provisionedVersion = "v1.36.3"
	// pauseImage is the planner's sandbox image, which the artifact source holds.
	pauseImage = "registry.k8s.io/pause:3.10"
)

// startHosts makes the hosts and the artifact source, before the manager starts, so
// that the hub server can listen on the hosts' bridge.
func (d *dev) startHosts() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("--provision needs root: the hosts are namespaces of this machine")
	}
	for _, c := range []string{"containerd", "ctr", "runc", "iptables", "curl"} {
		if _, err := exec.LookPath(c); err != nil {
			d.con.printf("installing what the hosts need (containerd, runc, CNI plugins, iptables, curl)")
			cmd := exec.Command("apt-get", "install", "-y", "containerd", "runc", "containernetworking-plugins", "iptables", "curl")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("--provision: apt-get install: %w\n%s", err, out)
			}
			break
		}
	}
	bin, err := exec.Command(filepath.Join(d.root, "hack", "kubebin.sh"), "node").Output()
	if err != nil {
		return fmt.Errorf("hack/kubebin.sh node: %w", err)
	}
	d.artifacts = filepath.Join(d.dir, "artifacts")
	if err := hosts.WriteArtifactSource(d.artifacts, strings.TrimSpace(string(bin)), provisionedVersion, pauseImage); err != nil {
		return fmt.Errorf("artifact source: %w", err)
	}
	d.hostSet, err = hosts.New(2, hosts.Options{Names: []string{"node-cp", "node-w"}, BaseDir: filepath.Join(d.dir, "hosts")})
	if err != nil {
		return fmt.Errorf("hosts: %w", err)
	}
	for _, h := range d.hostSet.Hosts {
		d.con.tagf(provisionedName, colorServer, "host %s at %s", h.Name, h.IP)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(d.hostSet.Gateway.String(), "0"))
	if err != nil {
		return err
	}
	d.hubAddr = ln.Addr().String()
	return ln.Close()
}

// provision applies the ManagedCluster and runs its registration command on the
// hosts, once the manager has published it.
func (d *dev) provision(ctx context.Context, hubc client.Client) error {
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "management.drover.io/v1alpha1", "kind": "ManagedCluster",
		"metadata": map[string]any{"name": provisionedName, "labels": map[string]any{"env": "dev", "built-by": "drover"}},
		"spec":     map[string]any{"provisioning": map[string]any{"kubernetesVersion": provisionedVersion}},
	}}
	if err := hubc.Create(ctx, mc); err != nil {
		return fmt.Errorf("create ManagedCluster %s: %w", provisionedName, err)
	}
	d.con.printf("applied ManagedCluster %s with spec.provisioning (kubernetesVersion %s)", provisionedName, provisionedVersion)
	var command string
	for command == "" {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if err := hubc.Get(ctx, client.ObjectKey{Name: provisionedName}, mc); err != nil {
			return err
		}
		command, _, _ = unstructured.NestedString(mc.Object, "status", "provisioning", "registrationCommand")
	}
	install := strings.Replace(command, "--roles etcd,control-plane,worker", "", 1)
	for _, h := range d.hostSet.Hosts {
		roles := "worker"
		if h.Name == "node-cp" {
			roles = "etcd,control-plane"
		}
		cmd := h.Command(context.Background(), "sh", "-c", install+" --roles "+roles+" --kubelet-cgroup-root "+h.Cgroup())
		cmd.Dir = filepath.Join(d.dir, "hosts")
		if _, err := h.StartCommand(cmd); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		d.con.tagf(provisionedName, colorServer, "ran the registration command on %s with --roles %s (its output: %s)", h.Name, roles,
			d.rel(filepath.Join(d.dir, "hosts")))
	}
	// Once the API server is planned, run the cluster's agent here, as for the others.
	go func() {
		for ctx.Err() == nil {
			var sec unstructured.Unstructured
			sec.SetAPIVersion("v1")
			sec.SetKind("Secret")
			if err := hubc.Get(ctx, client.ObjectKey{Namespace: namespace, Name: provisionedName + "-kubeconfig"}, &sec); err == nil {
				value, _, _ := unstructured.NestedString(sec.Object, "data", "value")
				raw, err := decodeB64(value)
				if err == nil {
					d.startAgent(ctx, &target{name: provisionedName}, raw, "--cluster-name="+provisionedName)
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}

// provisionProgress prints each tier as the hub reaches it.
func (d *dev) provisionProgress(ctx context.Context, hubc client.Client) {
	last := ""
	for ctx.Err() == nil {
		var mc unstructured.Unstructured
		mc.SetAPIVersion("management.drover.io/v1alpha1")
		mc.SetKind("ManagedCluster")
		if err := hubc.Get(ctx, client.ObjectKey{Name: provisionedName}, &mc); err == nil {
			tier, _, _ := unstructured.NestedString(mc.Object, "status", "provisioning", "tier")
			waiting, _, _ := unstructured.NestedString(mc.Object, "status", "provisioning", "waiting")
			if now := tier + ": " + waiting; now != last && tier != "" {
				last = now
				if waiting != "" {
					d.con.tagf(provisionedName, colorServer, "tier %s, waiting for %s", tier, waiting)
				} else {
					d.con.tagf(provisionedName, colorServer, "tier %s", tier)
				}
			}
			if tier == "Ready" {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
