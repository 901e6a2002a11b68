package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// fieldOwner is the field manager of everything make dev applies.
const fieldOwner = client.FieldOwner("drover-dev")

// namespace is the operator namespace on the hub, and the agent's namespace in targets.
const namespace = "drover-system"

// writeKubeconfig writes raw to path with its cluster, user and context renamed to
// name, so that several of them can be merged in $KUBECONFIG without clashing.
func writeKubeconfig(path, name string, raw []byte) error {
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		return err
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	if cur == nil {
		return fmt.Errorf("kubeconfig for %s has no current context", name)
	}
	out := clientcmdapi.NewConfig()
	out.Clusters[name] = cfg.Clusters[cur.Cluster]
	out.AuthInfos[name] = cfg.AuthInfos[cur.AuthInfo]
	out.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	out.CurrentContext = name
	return clientcmd.WriteToFile(*out, path)
}

// agentKubeconfig returns a kubeconfig for the agent's own ServiceAccount in a target,
// which the manager creates when it installs the agent: the agent process make dev
// runs has exactly the rights the agent Deployment would have. It waits until the
// ServiceAccount exists.
func agentKubeconfig(ctx context.Context, cfg *rest.Config, adminKubeconfig []byte, waiting func()) ([]byte, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var tok *authenticationv1.TokenRequest
	warned := false
	for {
		tok, err = cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "drover-agent",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7 * 24 * 3600)}},
			metav1.CreateOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("request a token for ServiceAccount %s/drover-agent: %w", namespace, err)
		}
		if !warned {
			waiting()
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	admin, err := clientcmd.Load(adminKubeconfig)
	if err != nil {
		return nil, err
	}
	cluster := admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	out := clientcmdapi.NewConfig()
	out.Clusters["cluster"] = cluster
	out.AuthInfos["drover-agent"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	out.Contexts["drover-agent"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "drover-agent", Namespace: namespace}
	out.CurrentContext = "drover-agent"
	return clientcmd.Write(*out)
}

// kustomizationFiles lists the files a kustomization.yaml names in resources, so
// that make dev applies what `kubectl apply -k` would without needing kustomize.
func kustomizationFiles(dir string) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	files := make([]string, len(k.Resources))
	for i, r := range k.Resources {
		files[i] = filepath.Join(dir, r)
	}
	return files, nil
}

// readObjects reads every object in a multi-document YAML file.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeObjects(raw, path)
}

// decodeObjects decodes every object in multi-document YAML read from source.
func decodeObjects(raw []byte, source string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// applyFiles server-side applies every object in files, except those whose kind
// is in skip. It returns "Kind name" for what it applied and what it skipped.
func applyFiles(ctx context.Context, c client.Client, files []string, skip ...string) (applied, skipped []string, err error) {
	for _, f := range files {
		objs, err := readObjects(f)
		if err != nil {
			return applied, skipped, err
		}
		objs = slices.DeleteFunc(objs, func(o *unstructured.Unstructured) bool {
			if slices.Contains(skip, o.GetKind()) {
				skipped = append(skipped, o.GetKind()+" "+o.GetName())
				return true
			}
			return false
		})
		done, err := applyObjects(ctx, c, objs, f)
		applied = append(applied, done...)
		if err != nil {
			return applied, skipped, err
		}
	}
	return applied, skipped, nil
}

// applyObjects server-side applies objs, read from source, in order. It returns
// "Kind name" for what it applied.
func applyObjects(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, source string) (applied []string, err error) {
	for _, o := range objs {
		desc := o.GetKind() + " " + o.GetName()
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), fieldOwner, client.ForceOwnership); err != nil {
			return applied, fmt.Errorf("apply %s from %s: %w", desc, source, err)
		}
		applied = append(applied, desc)
	}
	return applied, nil
}

// ensureNamespace creates a namespace if it is missing.
func ensureNamespace(ctx context.Context, c client.Client, name string) error {
	return c.Apply(ctx, corev1ac.Namespace(name), fieldOwner, client.ForceOwnership)
}

// nodeShape is the capacity of every simulated node.
var nodeShape = corev1.ResourceList{
	corev1.ResourceCPU:              resource.MustParse("4"),
	corev1.ResourceMemory:           resource.MustParse("16Gi"),
	corev1.ResourcePods:             resource.MustParse("110"),
	corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
}

// createNodes creates n Node objects for kwok to run: it marks them Ready and keeps
// their leases fresh, as a kubelet would.
func createNodes(ctx context.Context, c client.Client, n int) error {
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node-%d", i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: name,
				Labels: map[string]string{
					"kubernetes.io/hostname":         name,
					"kubernetes.io/os":               "linux",
					"kubernetes.io/arch":             "amd64",
					"node-role.kubernetes.io/worker": "",
					"type":                           "kwok",
				},
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			},
			Status: corev1.NodeStatus{Capacity: nodeShape.DeepCopy(), Allocatable: nodeShape.DeepCopy()},
		}
		if err := c.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", name, err)
		}
	}
	return nil
}

// registerCluster stores a target's kubeconfig in a Secret in drover-system on the
// hub and creates the ManagedCluster pointing at it, as a user would.
func registerCluster(ctx context.Context, hub client.Client, name, displayName string, labels map[string]string, kubeconfig []byte) error {
	secret := corev1ac.Secret(name+"-kubeconfig", namespace).
		WithLabels(map[string]string{"app.kubernetes.io/created-by": "drover-dev"}).
		WithData(map[string][]byte{"value": kubeconfig})
	if err := hub.Apply(ctx, secret, fieldOwner, client.ForceOwnership); err != nil {
		return fmt.Errorf("store the kubeconfig Secret of %s: %w", name, err)
	}
	return applyManagedCluster(ctx, hub, name, displayName, labels, "kubeconfig",
		map[string]any{"secretRef": map[string]any{"name": name + "-kubeconfig", "key": "value"}})
}

// applyManagedCluster creates (server-side applies) ManagedCluster name with its
// display name, labels and one connection mode (spec.<mode>).
func applyManagedCluster(ctx context.Context, hub client.Client, name, displayName string, labels map[string]string, mode string, source map[string]any) error {
	ls := map[string]any{}
	for k, v := range labels {
		ls[k] = v
	}
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "management.drover.io/v1alpha1",
		"kind":       "ManagedCluster",
		"metadata":   map[string]any{"name": name, "labels": ls},
		"spec":       map[string]any{"displayName": displayName, mode: source},
	}}
	if err := hub.Apply(ctx, client.ApplyConfigurationFromUnstructured(mc), fieldOwner, client.ForceOwnership); err != nil {
		return fmt.Errorf("create ManagedCluster %s: %w", name, err)
	}
	return nil
}

// clusterState is what make dev reports of a ManagedCluster.
type clusterState struct {
	name                  string
	ready, agentReady     bool
	reason, message       string
	version, nodes, agent string
}

func (s clusterState) String() string {
	if !s.ready {
		if s.reason == "" {
			return "waiting for the manager"
		}
		return fmt.Sprintf("Ready=False %s: %s", s.reason, s.message)
	}
	parts := []string{"Ready"}
	if s.version != "" {
		parts = append(parts, "Kubernetes "+s.version)
	}
	if s.nodes != "" {
		parts = append(parts, s.nodes+" nodes ready")
	}
	switch {
	case s.agentReady && s.agent != "":
		parts = append(parts, "agent "+s.agent+" reporting")
	case s.agentReady:
		// status.agent may not say the version yet.
		parts = append(parts, "agent reporting")
	default:
		parts = append(parts, "agent not reporting yet")
	}
	return strings.Join(parts, ", ")
}

// clusterStates reads the ManagedClusters' status from the hub.
func clusterStates(ctx context.Context, hub client.Client) (map[string]clusterState, error) {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("management.drover.io/v1alpha1")
	list.SetKind("ManagedClusterList")
	if err := hub.List(ctx, list); err != nil {
		return nil, err
	}
	states := map[string]clusterState{}
	for _, mc := range list.Items {
		s := clusterState{name: mc.GetName()}
		s.version, _, _ = unstructured.NestedString(mc.Object, "status", "kubernetesVersion")
		s.nodes, _, _ = unstructured.NestedString(mc.Object, "status", "nodesReady")
		s.agent, _, _ = unstructured.NestedString(mc.Object, "status", "agent", "version")
		conds, _, _ := unstructured.NestedSlice(mc.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			typ, _ := m["type"].(string)
			status, _ := m["status"].(string)
			switch typ {
			case "Ready":
				s.ready = status == string(metav1.ConditionTrue)
				s.reason, _ = m["reason"].(string)
				s.message, _ = m["message"].(string)
			case "AgentReady":
				s.agentReady = status == string(metav1.ConditionTrue)
			}
		}
		states[s.name] = s
	}
	return states, nil
}

// waitReady waits until every named ManagedCluster is Ready with its agent
// reporting, reporting each cluster's progress as it changes.
func waitReady(ctx context.Context, hub client.Client, names []string, report func(clusterState)) error {
	last := map[string]string{}
	for {
		states, err := clusterStates(ctx, hub)
		if err == nil {
			done := true
			for _, n := range names {
				s := states[n]
				s.name = n
				if msg := s.String(); msg != last[n] {
					last[n] = msg
					report(s)
				}
				done = done && s.ready && s.agentReady
			}
			if done {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			var waiting []string
			for _, n := range names {
				waiting = append(waiting, n+": "+last[n])
			}
			return fmt.Errorf("%w; %s", ctx.Err(), strings.Join(waiting, "; "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
