package v1alpha1

// Condition types. Ready, Reconciling and Stalled follow kstatus, so that
// `kubectl wait --for=condition=Ready`, Flux and Argo CD understand every kind.
const (
	// ReadyCondition is True when the object's intent holds everywhere it should.
	ReadyCondition = "Ready"
	// ReconcilingCondition is True while the controller is working towards Ready.
	ReconcilingCondition = "Reconciling"
	// StalledCondition is True when progress needs a person: the spec is invalid or
	// refers to something that does not exist.
	StalledCondition = "Stalled"

	// ConnectedCondition (ManagedCluster) is True while the hub reaches the cluster's API server.
	ConnectedCondition = "Connected"
	// UpgradingCondition (provisioned ManagedCluster) is True while a Kubernetes
	// upgrade rolls out; its message names the phase and the node.
	UpgradingCondition = "Upgrading"
	// RotatingCertificatesCondition is True while new certificates roll out.
	RotatingCertificatesCondition = "RotatingCertificates"
	// SnapshottingEtcdCondition is True while an etcd snapshot is taken.
	SnapshottingEtcdCondition = "SnapshottingEtcd"
	// RestoringEtcdCondition is True while an etcd snapshot is restored.
	RestoringEtcdCondition = "RestoringEtcd"
	// RemovingNodesCondition is True while a ClusterNode is taken out of its cluster.
	RemovingNodesCondition = "RemovingNodes"
	// AgentReadyCondition (ManagedCluster) is True while the agent's heartbeat Lease is fresh.
	AgentReadyCondition = "AgentReady"
	// SyncedCondition (ManagedCluster) is True when the cluster holds every intent that selects it.
	SyncedCondition = "Synced"
	// WarningCondition (ManagedCluster) is True when the connection works but is
	// unsafe: TLS verification is off, a proxy is configured, or plain http is used.
	WarningCondition = "Warning"
)

// Condition reasons shared by the kinds.
const (
	// ReasonSucceeded: the last reconcile did what it set out to do.
	ReasonSucceeded = "Succeeded"
	// ReasonProgressing: work is under way.
	ReasonProgressing = "Progressing"
	// ReasonPaused: spec.paused is true; nothing is reconciled.
	ReasonPaused = "Paused"
	// ReasonDeleting: the object is being deleted and its cleanup is under way.
	ReasonDeleting = "Deleting"
	// ReasonInvalidSpec: the spec cannot be acted on as written.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonDisconnected: a target cluster is not reachable.
	ReasonDisconnected = "Disconnected"
)

// ManagedCluster condition reasons.
const (
	// ReasonSecretNotFound: spec.kubeconfig.secretRef names a Secret that does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonSecretKeyNotFound: the Secret exists but lacks the key.
	ReasonSecretKeyNotFound = "SecretKeyNotFound"
	// ReasonInvalidKubeconfig: the Secret's kubeconfig cannot be used as written.
	ReasonInvalidKubeconfig = "InvalidKubeconfig"
	// ReasonNoConnectionMode: neither spec.kubeconfig nor spec.registration is set.
	ReasonNoConnectionMode = "NoConnectionMode"
	// ReasonUnreachable: the API server cannot be reached.
	ReasonUnreachable = "Unreachable"
	// ReasonCertificateInvalid: TLS with the API server failed (CA, host name, client certificate).
	ReasonCertificateInvalid = "CertificateInvalid"
	// ReasonUnauthorized: the API server rejected the credentials.
	ReasonUnauthorized = "Unauthorized"
	// ReasonForbidden: the credentials lack permissions Drover needs.
	ReasonForbidden = "Forbidden"
	// ReasonProbeFailed: the health probe failed for another reason.
	ReasonProbeFailed = "ProbeFailed"
	// ReasonConnected: the hub reaches the cluster.
	ReasonConnected = "Connected"
	// ReasonProbing: the first health probe has not finished.
	ReasonProbing = "Probing"

	// ReasonAgentReporting: the agent's Lease is fresh.
	ReasonAgentReporting = "AgentReporting"
	// ReasonAgentInstalling: the agent is being installed.
	ReasonAgentInstalling = "AgentInstalling"
	// ReasonAgentInstallFailed: installing the agent failed.
	ReasonAgentInstallFailed = "AgentInstallFailed"
	// ReasonLeaseNotFound: the agent has not created its Lease yet.
	ReasonLeaseNotFound = "LeaseNotFound"
	// ReasonLeaseExpired: the agent stopped renewing its Lease.
	ReasonLeaseExpired = "LeaseExpired"
	// ReasonAwaitingAgent: the cluster is registered with spec.registration and its
	// agent has not connected to the hub yet.
	ReasonAwaitingAgent = "AwaitingAgent"
	// ReasonTunnelDisconnected: the cluster is reached through its agent's tunnel,
	// and no tunnel is open (the agent stopped, or cannot reach the hub).
	ReasonTunnelDisconnected = "TunnelDisconnected"
	// ReasonHubServerDisabled: spec.registration needs the hub server, which the
	// manager runs without (--hub-bind-address=0).
	ReasonHubServerDisabled = "HubServerDisabled"
	// ReasonInProgress: a day-2 operation of a provisioned cluster is under way.
	ReasonInProgress = "InProgress"
	// ReasonFailed: the last day-2 operation of its kind could not be done.
	ReasonFailed = "Failed"
	// ReasonQueued: the operation waits for another to finish.
	ReasonQueued = "Queued"
	// ReasonProvisioning: Drover is building the cluster (spec.provisioning) and its
	// API server is not planned yet; status.provisioning says how far it is.
	ReasonProvisioning = "Provisioning"
	// ReasonIdentityUnknown: the cluster answers, but its identity (the UID of its
	// kube-system namespace) cannot be read; nothing is synced until it can.
	ReasonIdentityUnknown = "IdentityUnknown"
	// ReasonDuplicateCluster: another, older ManagedCluster already manages the same
	// target cluster (same status.clusterID); this one writes nothing there.
	ReasonDuplicateCluster = "DuplicateCluster"
	// ReasonOwnedByAnotherHub: the agent's objects in the target belong to another hub.
	ReasonOwnedByAnotherHub = "OwnedByAnotherHub"
	// ReasonFactsUnavailable: node facts could not be read.
	ReasonFactsUnavailable = "FactsUnavailable"
)

// Condition reasons of the intents (AccessBinding, RoleTemplate, ClusterProject),
// and the reasons of their per-cluster results in status.failures and
// status.clusters. An intent is Ready when every selected cluster that is connected
// holds it; it is Stalled when a person must act (the spec, a reference, or a
// conflict or rejection in a target); it is Reconciling while clusters are being
// synced or retried. See docs/observability.md.
const (
	// ReasonNoClustersSelected (Ready True): the selection matches no cluster.
	ReasonNoClustersSelected = "NoClustersSelected"
	// ReasonNoClustersConnected (Ready True): the intent selects clusters, none of
	// which is connected; it is applied to each as it connects.
	ReasonNoClustersConnected = "NoClustersConnected"
	// ReasonClusterNotFound (Stalled): spec.clusters.names (or the project's) names
	// a ManagedCluster that does not exist.
	ReasonClusterNotFound = "ClusterNotFound"
	// ReasonSyncFailed: a connected cluster does not hold the intent, or several
	// clusters fail for different reasons.
	ReasonSyncFailed = "SyncFailed"

	// ReasonPending (per cluster): the cluster has not been synced since the intent changed.
	ReasonPending = "Pending"
	// ReasonApplyFailed (per cluster): writing to the target failed in a way that
	// is retried (a timeout, a server error, the target going away).
	ReasonApplyFailed = "ApplyFailed"
	// ReasonRejected (per cluster): the target refused an object for good
	// (forbidden, invalid, too large, an unknown kind): a person must act.
	ReasonRejected = "Rejected"
	// ReasonConflict (per cluster): an object Drover needs exists in the target and
	// is not this hub's for this cluster (a namespace without adopt: true, say).
	ReasonConflict = "Conflict"
	// ReasonClusterRoleNotFound (per cluster): a binding's roleRef ClusterRole does
	// not exist in the target.
	ReasonClusterRoleNotFound = "ClusterRoleNotFound"
	// ReasonClusterDeleting (per cluster): the ManagedCluster is being deleted.
	ReasonClusterDeleting = "ClusterDeleting"
)
