package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/drover-io/drover/controlplane"
)

// The schema tests run against a real kube-apiserver with the generated CRDs, so that
// OpenAPI validation and CEL rules behave exactly as they will for users.

var (
	hub *controlplane.ControlPlane
	cl  client.Client
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	hub, err = controlplane.Start(controlplane.Options{
		Name:              "schema",
		CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = hub.Stop() }()
	if cl, err = client.New(hub.Config, client.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// objects parses a multi-document YAML string.
func objects(t *testing.T, doc string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, part := range strings.Split(doc, "\n---") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(part), &u.Object); err != nil {
			t.Fatalf("parse YAML: %v\n%s", err, part)
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
	return out
}

func dryRunCreate(ctx context.Context, u *unstructured.Unstructured) error {
	return cl.Create(ctx, u.DeepCopy(), client.DryRunAll)
}

// TestSchemaRejectsBadInput applies bad objects and expects each to be rejected with a
// message that names the offending field.
func TestSchemaRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		obj  string
		want []string // substrings of the error
	}{
		// ManagedCluster
		{"managedcluster two connection modes", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: two-modes}
spec:
  kubeconfig: {secretRef: {name: k}}
  registration: {}`, []string{"spec", "set at most one connection mode: spec.kubeconfig, spec.registration or spec.provisioning"}},
		{"managedcluster provisioning and kubeconfig", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: two-modes}
spec:
  kubeconfig: {secretRef: {name: k}}
  provisioning: {kubernetesVersion: v1.36.3}`, []string{"set at most one connection mode"}},
		{"provisioning without a version", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: no-version}
spec: {provisioning: {}}`, []string{"spec.provisioning.kubernetesVersion: Required value"}},
		{"provisioning bad version", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-version}
spec: {provisioning: {kubernetesVersion: "1.36"}}`, []string{"spec.provisioning.kubernetesVersion: Invalid value"}},
		{"provisioning bad mirror", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-mirror}
spec: {provisioning: {kubernetesVersion: v1.36.3, artifactsURL: "ftp://mirror/x"}}`, []string{"spec.provisioning.artifactsURL: Invalid value"}},
		{"provisioning bad endpoint", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-endpoint}
spec: {provisioning: {kubernetesVersion: v1.36.3, controlPlaneEndpoint: "https://lb/"}}`, []string{"spec.provisioning.controlPlaneEndpoint: Invalid value"}},
		{"provisioning bad snapshot storage", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-s3}
spec: {provisioning: {kubernetesVersion: v1.36.3, etcdSnapshotS3: {endpoint: "https://s3.example.com", bucket: "B", folder: "/etcd/"}}}`, []string{
			"spec.provisioning.etcdSnapshotS3.endpoint: Invalid value", "spec.provisioning.etcdSnapshotS3.bucket: Invalid value", "spec.provisioning.etcdSnapshotS3.folder: Invalid value"}},
		{"provisioning snapshot storage without a bucket", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-s3}
spec: {provisioning: {kubernetesVersion: v1.36.3, etcdSnapshotS3: {endpoint: s3.example.com}}}`, []string{"spec.provisioning.etcdSnapshotS3.bucket: Required value"}},
		{"provisioning bad worker concurrency", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-concurrency}
spec: {provisioning: {kubernetesVersion: v1.36.3, upgradeStrategy: {workerConcurrency: "150%"}}}`, []string{"spec.provisioning.upgradeStrategy.workerConcurrency", "a percentage from 1% to 100%"}},
		{"ssh host with a bad role and no key", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-ssh}
spec: {provisioning: {kubernetesVersion: v1.36.3, sshHosts: [{address: 10.0.0.15, user: root, roles: [master]}]}}`, []string{`spec.provisioning.sshHosts[0].roles[0]: Unsupported value: "master"`, "spec.provisioning.sshHosts[0].sshKeySecretRef: Required value"}},
		// ClusterNode
		{"clusternode name", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterNode
metadata: {name: node-1}
spec: {cluster: edge-1, hostname: node-1, roles: [etcd], address: 10.0.0.11}`, []string{"metadata.name must be <spec.cluster>-<spec.hostname>"}},
		{"clusternode address and roles", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterNode
metadata: {name: edge-1-node-1}
spec: {cluster: edge-1, hostname: node-1, roles: [], address: node-1.local}`, []string{"spec.address must be an IP address", "spec.roles: Invalid value"}},
		{"managedcluster bad deletionPolicy", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-policy}
spec: {deletionPolicy: Destroy}`, []string{`spec.deletionPolicy: Unsupported value: "Destroy"`}},
		{"managedcluster secret name not a DNS name", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-secret}
spec: {kubeconfig: {secretRef: {name: Bad_Name}}}`, []string{"spec.kubeconfig.secretRef.name", "should match"}},
		{"managedcluster secretRef without name", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: no-secret-name}
spec: {kubeconfig: {secretRef: {key: value}}}`, []string{"spec.kubeconfig.secretRef.name: Required value"}},
		{"managedcluster bad secret key", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: bad-key}
spec: {kubeconfig: {secretRef: {name: k, key: "a/b"}}}`, []string{"spec.kubeconfig.secretRef.key", "should match"}},
		{"managedcluster name too long", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: ` + strings.Repeat("a", 64) + `}
spec: {}`, []string{"metadata.name must be at most 63 characters"}},
		{"managedcluster displayName too long", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: long-display}
spec: {displayName: "` + strings.Repeat("x", 257) + `"}`, []string{"spec.displayName: Too long"}},
		{"managedcluster without spec", `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: no-spec}`, []string{"spec: Required value"}},

		// RoleTemplate
		{"roletemplate unknown context", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: bad-context}
spec: {context: Namespace}`, []string{`spec.context: Unsupported value: "Namespace"`, `"Cluster"`, `"Project"`}},
		{"roletemplate without context", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: no-context}
spec: {rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]}`, []string{"spec.context: Required value"}},
		{"roletemplate rule without verbs", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: no-verbs}
spec: {context: Cluster, rules: [{apiGroups: [""], resources: [pods]}]}`, []string{"spec.rules[0].verbs: Required value"}},
		{"roletemplate rule mixes resources and URLs", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: mixed}
spec: {context: Cluster, rules: [{apiGroups: [""], resources: [pods], nonResourceURLs: [/healthz], verbs: [get]}]}`, []string{"spec.rules[0]", "either to resources (apiGroups, resources) or to nonResourceURLs"}},
		{"roletemplate resource rule without apiGroups", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: no-groups}
spec: {context: Project, rules: [{resources: [pods], verbs: [get]}]}`, []string{"spec.rules[0]", "needs apiGroups"}},
		{"roletemplate project context with nonResourceURLs", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: project-urls}
spec: {context: Project, rules: [{nonResourceURLs: [/metrics], verbs: [get]}]}`, []string{"spec", "nonResourceURLs are only allowed in a RoleTemplate whose context is Cluster"}},
		{"roletemplate inherits itself", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: narcissus}
spec: {context: Project, inherits: [read-only, narcissus]}`, []string{"spec.inherits: a RoleTemplate cannot inherit itself"}},
		{"roletemplate inherits a bad name", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: bad-inherit}
spec: {context: Project, inherits: [Read_Only]}`, []string{"spec.inherits[0]", "should match"}},
		{"roletemplate bad verb", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: bad-verb}
spec: {context: Cluster, rules: [{apiGroups: [""], resources: [pods], verbs: ["get pods"]}]}`, []string{"spec.rules[0].verbs[0]", "should match"}},
		{"roletemplate bad nonResourceURL", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: bad-url}
spec: {context: Cluster, rules: [{nonResourceURLs: [healthz], verbs: [get]}]}`, []string{"spec.rules[0].nonResourceURLs[0]", "should match"}},

		// AccessBinding
		{"accessbinding both project and clusters", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: both}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}
  project: payments
  clusters: {names: [a]}`, []string{"spec", "set exactly one of spec.project (project scope) and spec.clusters (cluster scope)"}},
		{"accessbinding lowercase selector operator", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: lower-in}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {selector: {matchExpressions: [{key: env, operator: in, values: [prod]}]}}`, []string{"spec.clusters", "operator must be one of In, NotIn, Exists, DoesNotExist"}},
		{"accessbinding In without values", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: in-empty}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {selector: {matchExpressions: [{key: env, operator: In}]}}`, []string{"spec.clusters", "operators In and NotIn need at least one value"}},
		{"clusterproject Exists with values", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: exists-values}
spec:
  clusters: {selector: {matchExpressions: [{key: env, operator: Exists, values: [x]}]}}`, []string{"spec.clusters", "operators Exists and DoesNotExist take no values"}},
		{"accessbinding user subject with a wrong apiGroup", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: user-group}
spec:
  subjects: [{kind: User, name: alice, apiGroup: apps}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"spec.subjects[0]", "apiGroup of a User or Group subject must be rbac.authorization.k8s.io"}},
		{"accessbinding service account subject with an apiGroup", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: sa-group}
spec:
  subjects: [{kind: ServiceAccount, name: ci, namespace: ci, apiGroup: rbac.authorization.k8s.io}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"spec.subjects[0]", "apiGroup of a ServiceAccount subject must be empty"}},
		{"accessbinding neither project nor clusters", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: neither}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}`, []string{"set exactly one of spec.project"}},
		{"accessbinding empty cluster selection", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: empty-selection}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {}`, []string{"spec.clusters", "a cluster selection needs names or a selector"}},
		{"accessbinding unknown subject kind", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: robot}
spec:
  subjects: [{kind: Robot, name: r2d2}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{`spec.subjects[0].kind: Unsupported value: "Robot"`}},
		{"accessbinding service account without namespace", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: sa-no-ns}
spec:
  subjects: [{kind: ServiceAccount, name: ci}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"spec.subjects[0]", "a ServiceAccount subject needs a namespace"}},
		{"accessbinding user with namespace", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: user-ns}
spec:
  subjects: [{kind: User, name: alice, namespace: ops}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"spec.subjects[0]", "namespace is only allowed for a ServiceAccount subject"}},
		{"accessbinding service account with a bad name", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: sa-bad-name}
spec:
  subjects: [{kind: ServiceAccount, name: CI_Bot, namespace: ops}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"spec.subjects[0]", "a ServiceAccount name must be a DNS subdomain"}},
		{"accessbinding no subjects", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: nobody}
spec:
  subjects: []
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"spec.subjects", "should have at least 1 items"}},
		{"accessbinding roleRef kind Role", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: role-kind}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: Role, name: view}
  clusters: {names: [a]}`, []string{`spec.roleRef.kind: Unsupported value: "Role"`}},
		{"accessbinding bad project name", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: bad-project}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: RoleTemplate, name: project-member}
  project: "Payments!"`, []string{"spec.project", "should match"}},
		{"accessbinding bad cluster name", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: bad-cluster}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [Prod_EU]}`, []string{"spec.clusters.names[0]", "should match"}},

		{"roletemplate named agent", `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: agent}
spec:
  context: Cluster
  rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]`, []string{"metadata.name 'agent' is reserved"}},
		{"accessbinding named agent", `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: agent}
spec:
  subjects: [{kind: User, name: alice}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {names: [a]}`, []string{"metadata.name 'agent' is reserved"}},

		// ClusterProject
		{"clusterproject reserved namespace", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: sneaky}
spec:
  clusters: {names: [a]}
  namespaces: [{name: kube-system}]`, []string{"spec.namespaces[0]", "namespace name is reserved"}},
		{"clusterproject drover-system is reserved", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: sneaky2}
spec:
  clusters: {names: [a]}
  namespaces: [{name: drover-system}]`, []string{"spec.namespaces[0]", "namespace name is reserved"}},
		{"clusterproject duplicate namespaces", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: dup}
spec:
  clusters: {names: [a]}
  namespaces: [{name: web}, {name: web}]`, []string{"spec.namespaces[1]: Duplicate value"}},
		{"clusterproject namespace not a DNS label", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: bad-ns}
spec:
  clusters: {names: [a]}
  namespaces: [{name: Web_Frontend}]`, []string{"spec.namespaces[0].name", "should match"}},
		{"clusterproject namespace too long", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: long-ns}
spec:
  clusters: {names: [a]}
  namespaces: [{name: ` + strings.Repeat("n", 64) + `}]`, []string{"spec.namespaces[0].name: Too long"}},
		{"clusterproject bad deletion policy", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: bad-policy}
spec:
  clusters: {names: [a]}
  namespaceDeletionPolicy: Keep`, []string{`spec.namespaceDeletionPolicy: Unsupported value: "Keep"`}},
		{"clusterproject without clusters", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: nowhere}
spec:
  namespaces: [{name: web}]`, []string{"spec.clusters: Required value"}},
		{"clusterproject empty quota", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: empty-quota}
spec:
  clusters: {names: [a]}
  resourceQuota: {hard: {}}`, []string{"spec.resourceQuota", "hard needs at least one resource"}},
		{"clusterproject bad quantity", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: bad-quantity}
spec:
  clusters: {names: [a]}
  namespaceDefaultQuota: {hard: {requests.cpu: lots}}`, []string{"spec.namespaceDefaultQuota.hard.requests.cpu", "should match"}},
		{"clusterproject project quota without namespace quota", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: no-ns-quota}
spec:
  clusters: {names: [a]}
  resourceQuota: {hard: {requests.cpu: "8"}}`, []string{"spec.resourceQuota", "needs spec.namespaceDefaultQuota"}},
		{"clusterproject project quota resource not limited per namespace", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: unbounded}
spec:
  clusters: {names: [a]}
  resourceQuota: {hard: {requests.cpu: "8", pods: "50"}}
  namespaceDefaultQuota: {hard: {requests.cpu: "2"}}`, []string{"spec.namespaceDefaultQuota.hard", "must also be limited"}},
		{"clusterproject empty containerDefaults", `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: empty-defaults}
spec:
  clusters: {names: [a]}
  containerDefaults: {}`, []string{"spec.containerDefaults", "needs at least one of default, defaultRequest, max and min"}},
	}
	if len(cases) < 20 {
		t.Fatalf("the foundation promises at least 20 bad inputs, have %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			objs := objects(t, tc.obj)
			g.Expect(objs).To(HaveLen(1))
			err := dryRunCreate(ctx, objs[0])
			g.Expect(err).To(HaveOccurred(), "the API server accepted a bad %s", objs[0].GetKind())
			for _, w := range tc.want {
				g.Expect(err.Error()).To(ContainSubstring(w))
			}
		})
	}
}

// TestSchemaAcceptsGoodInput applies valid edge cases, including minimal objects.
func TestSchemaAcceptsGoodInput(t *testing.T) {
	docs := []string{`
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: minimal}
spec: {}`, `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: ` + strings.Repeat("a", 63) + `}
spec: {kubeconfig: {secretRef: {name: k}}, paused: true, deletionPolicy: Orphan}`, `
apiVersion: management.drover.io/v1alpha1
kind: RoleTemplate
metadata: {name: urls}
spec: {context: Cluster, rules: [{nonResourceURLs: ["/metrics", "/logs/*"], verbs: [get]}, {apiGroups: ["", apps], resources: ["pods/log", "*"], resourceNames: [web], verbs: ["*"]}]}`, `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: all-clusters}
spec:
  subjects: [{kind: ServiceAccount, name: ci.bot, namespace: ci}, {kind: Group, name: "system:authenticated"}, {kind: User, name: "CN=Alice Smith"}]
  roleRef: {kind: ClusterRole, name: "system:aggregate-to-view"}
  clusters: {selector: {}}`, `
apiVersion: management.drover.io/v1alpha1
kind: AccessBinding
metadata: {name: copied-from-rbac}
spec:
  # Subjects as an rbac/v1 RoleBinding writes them.
  subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: alice}, {kind: Group, apiGroup: rbac.authorization.k8s.io, name: devs}, {kind: ServiceAccount, apiGroup: "", name: ci, namespace: ci}]
  roleRef: {kind: ClusterRole, name: view}
  clusters: {selector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}, {key: tier, operator: Exists}]}}`, `
apiVersion: management.drover.io/v1alpha1
kind: ClusterProject
metadata: {name: within-quota}
spec:
  clusters: {names: [a, b], selector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}}
  namespaces: [{name: a, adopt: true}, {name: b, labels: {team: x}, annotations: {note: "a note"}}]
  resourceQuota: {hard: {requests.cpu: "4", requests.memory: 8Gi}}
  namespaceDefaultQuota: {hard: {requests.cpu: 2, requests.memory: 4Gi, pods: 10}}
  containerDefaults: {max: {cpu: "2"}}
  networkIsolation: false
  namespaceDeletionPolicy: Delete`, `
apiVersion: management.drover.io/v1alpha1
kind: ManagedCluster
metadata: {name: edge-1}
spec:
  provisioning:
    kubernetesVersion: v1.36.3
    controlPlaneEndpoint: 10.0.0.10:6443
    artifactsURL: https://mirror.example.com/drover
    upgradeStrategy: {controlPlaneConcurrency: 1, workerConcurrency: "25%", drain: true}
    sshHosts:
    - {address: 10.0.0.15, user: root, sshKeySecretRef: {name: edge-1-ssh}, roles: [worker]}
    etcdSnapshotCreate: {generation: 1}
    etcdSnapshotRestore: {name: edge-1-20261201-0600, generation: 1}
    etcdSnapshotS3: {endpoint: "minio.example.com:9000", bucket: etcd-backups, folder: fleet/edge-1, region: eu-west-1, credentialsSecretRef: {name: edge-1-s3}}
    rotateCertificates: {generation: 1}`, `
apiVersion: management.drover.io/v1alpha1
kind: ClusterNode
metadata: {name: edge-1-node-1}
spec: {cluster: edge-1, hostname: node-1, roles: [etcd, control-plane], address: "fd00::11"}`}
	for _, doc := range docs {
		for _, u := range objects(t, doc) {
			t.Run(u.GetKind()+"/"+u.GetName()[:min(20, len(u.GetName()))], func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := dryRunCreate(ctx, u); err != nil {
					t.Fatalf("rejected a valid object: %v", err)
				}
			})
		}
	}
}

// TestSamplesApply applies every shipped sample and built-in RoleTemplate, as
// `kubectl apply --dry-run=server` does.
func TestSamplesApply(t *testing.T) {
	var files []string
	for _, dir := range []string{"samples", "roletemplates"} {
		matches, err := filepath.Glob(filepath.Join("..", "..", "config", dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			if filepath.Base(m) != "kustomization.yaml" {
				files = append(files, m)
			}
		}
	}
	if len(files) < 10 {
		t.Fatalf("expected the samples and five built-in RoleTemplates, found %d files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, u := range objects(t, string(data)) {
				if err := dryRunCreate(ctx, u); err != nil {
					t.Errorf("%s: %s/%s rejected: %v", f, u.GetKind(), u.GetName(), err)
				}
			}
		})
	}
}

// TestPrinterColumns asks the API server for the table view that `kubectl get` prints.
func TestPrinterColumns(t *testing.T) {
	want := map[string][]string{
		"managedclusters": {"Name", "Ready", "Version", "Nodes", "Age", "Endpoint", "Distribution", "Message"},
		"clusterprojects": {"Name", "Ready", "Clusters", "Namespaces", "Age"},
		"accessbindings":  {"Name", "Role", "Project", "Ready", "Synced", "Age"},
		"roletemplates":   {"Name", "Context", "Ready", "Installed", "Age"},
		"clusternodes":    {"Name", "Cluster", "Roles", "State", "Version", "Age"},
	}
	cfg := rest.CopyConfig(hub.Config)
	cfg.APIPath = "/apis"
	cfg.GroupVersion = &metav1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.WithoutConversionCodecFactory{CodecFactory: serializer.NewCodecFactory(runtime.NewScheme())}
	rc, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for resource, cols := range want {
		t.Run(resource, func(t *testing.T) {
			raw, err := rc.Get().AbsPath("/apis/management.drover.io/v1alpha1", resource).
				SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var table metav1.Table
			if err := yaml.Unmarshal(raw, &table); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range table.ColumnDefinitions {
				got = append(got, c.Name)
			}
			for _, c := range cols {
				if !contains(got, c) {
					t.Errorf("%s: no column %q in %v", resource, c, got)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestProvisioningModeIsFixed: a cluster Drover builds stays one, and no other becomes one.
func TestProvisioningModeIsFixed(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, from, to string }{
		{"add", `{registration: {}}`, `{provisioning: {kubernetesVersion: v1.36.3}}`},
		{"remove", `{provisioning: {kubernetesVersion: v1.36.3}}`, `{registration: {}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := objects(t, "apiVersion: management.drover.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: mode-"+tc.name+"}\nspec: "+tc.from)[0]
			if err := cl.Create(ctx, u); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Delete(ctx, u) })
			next := objects(t, "apiVersion: management.drover.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: mode-"+tc.name+"}\nspec: "+tc.to)[0]
			next.SetResourceVersion(u.GetResourceVersion())
			err := cl.Update(ctx, next)
			if err == nil || !strings.Contains(err.Error(), "spec.provisioning cannot be added to or removed from an existing ManagedCluster") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// The version may change (an upgrade).
	u := objects(t, "apiVersion: management.drover.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: mode-upgrade}\nspec: {provisioning: {kubernetesVersion: v1.36.3}}")[0]
	if err := cl.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Delete(ctx, u) })
	if err := unstructured.SetNestedField(u.Object, "v1.37.0", "spec", "provisioning", "kubernetesVersion"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
}

// TestVersionMoves: one minor version at a time, never backwards.
func TestVersionMoves(t *testing.T) {
	ctx := context.Background()
	for i, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"v1.36.3", "v1.36.4", true},
		{"v1.36.3", "v1.37.0", true},
		{"v1.36.3", "v1.38.0", false},
		{"v1.36.3", "v1.36.2", false},
		{"v1.36.3", "v1.35.9", false},
	} {
		name := fmt.Sprintf("version-%d", i)
		u := objects(t, "apiVersion: management.drover.io/v1alpha1\nkind: ManagedCluster\nmetadata: {name: "+name+"}\nspec: {provisioning: {kubernetesVersion: "+tc.from+"}}")[0]
		if err := cl.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(u.Object, tc.to, "spec", "provisioning", "kubernetesVersion"); err != nil {
			t.Fatal(err)
		}
		err := cl.Update(ctx, u)
		if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "one minor version at a time")) {
			t.Errorf("%s -> %s: %v", tc.from, tc.to, err)
		}
		_ = cl.Delete(ctx, u)
	}
}
