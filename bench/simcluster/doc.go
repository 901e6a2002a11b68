// Package simcluster serves many simulated Kubernetes API servers from one process,
// so that Drover's manager can be measured against a thousand clusters on one small
// machine. Each simulated cluster has its own URL (a path prefix,
// https://127.0.0.1:PORT/clusters/<name>) and its own bearer token behind one TLS
// listener, and a kubeconfig that a user would store in a Secret on the hub.
//
// It implements what Drover uses of a target's API: /version, /readyz, /livez,
// /healthz; discovery (/api, /apis and each group version); get, list, watch (with
// label and field selectors, resourceVersion, sendInitialEvents and bookmarks),
// create, update, delete and the status subresource; merge, strategic-merge and JSON
// patches; server-side apply, with the field manager of k8s.io/apimachinery and the
// schemas client-go's apply configurations carry (so managedFields and list merging
// are the real ones); metadata-only (PartialObjectMetadata) get and list; and
// SubjectAccessReview and SelfSubjectAccessReview, answered from the RBAC objects the
// cluster stores, with the rule matching of Kubernetes' RBAC authorizer. The kinds
// are Namespaces, Nodes, ServiceAccounts, Secrets, ConfigMaps, ResourceQuotas,
// LimitRanges, Deployments, Leases, NetworkPolicies and the four RBAC kinds. Requests
// that impersonate a user (Impersonate-User, Impersonate-Group) are authorized by the
// same RBAC.
//
// What it does not do, on purpose: no defaulting or validation beyond names and
// namespaces, no admission, no RBAC escalation checks, no controllers (deleting a
// Namespace removes it and its contents at once, as a fast namespace controller
// would; a ResourceQuota's status stays empty; aggregated ClusterRoles hold only
// their own rules), no protobuf or CBOR responses (JSON always, which every client
// accepts), no pagination (a list returns every item, which the API allows).
// TestFidelity in this package sends the same requests to a simulated cluster and a
// real kube-apiserver and compares what Drover depends on.
//
// Built beside Cluster API's in-memory API server
// (sigs.k8s.io/cluster-api/test/infrastructure/inmemory), not on it: that one serves
// one port per cluster from a controller-runtime-client store and has no
// server-side apply, no /version, none of the quota or policy kinds and no
// authorization, and importing it brings the whole cluster-api/test module (kind,
// Docker clients, etcd and go-restful) into Drover's go.mod. What this package needs
// of it, a store with resource versions and watch fan-out, is a few hundred lines
// here; server-side apply comes from k8s.io/apimachinery's field manager, which
// Drover already depends on.
package simcluster
