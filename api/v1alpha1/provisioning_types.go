package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// NodeRole is what a provisioned node does in its cluster.
// +kubebuilder:validation:Enum=etcd;control-plane;worker
type NodeRole string

// Node roles, in any combination.
const (
	NodeRoleEtcd         NodeRole = "etcd"
	NodeRoleControlPlane NodeRole = "control-plane"
	NodeRoleWorker       NodeRole = "worker"
)

// ProvisioningSpec asks Drover to build the cluster, RKE-style, on hosts that run its
// node agent (drover node-agent).
// +kubebuilder:validation:XValidation:rule="!has(self.etcdSnapshotRestore) || has(self.etcdSnapshotRestore.name)",message="spec.provisioning.etcdSnapshotRestore.name is required"
// +kubebuilder:validation:XValidation:rule="self.kubernetesVersion == oldSelf.kubernetesVersion || (int(self.kubernetesVersion.split('.')[1]) == int(oldSelf.kubernetesVersion.split('.')[1]) && int(self.kubernetesVersion.split('.')[2]) > int(oldSelf.kubernetesVersion.split('.')[2])) || int(self.kubernetesVersion.split('.')[1]) == int(oldSelf.kubernetesVersion.split('.')[1]) + 1",message="spec.provisioning.kubernetesVersion: Drover upgrades one minor version at a time (to a newer patch, or to the next minor) and never downgrades"
type ProvisioningSpec struct {
	// kubernetesVersion of the cluster's components, e.g. v1.36.3. The hub's artifact
	// source must hold it.
	// +required
	// +kubebuilder:validation:Pattern=`^v1\.[0-9]{1,3}\.[0-9]{1,3}$`
	// +kubebuilder:validation:MaxLength=16
	KubernetesVersion string `json:"kubernetesVersion"`

	// controlPlaneEndpoint is host:port of a load balancer in front of the API
	// servers. Default: the first control-plane node's address, port 6443.
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$`
	ControlPlaneEndpoint string `json:"controlPlaneEndpoint,omitempty"`

	// upgradeStrategy says how many nodes change at once when the version or the
	// configuration changes.
	// +optional
	UpgradeStrategy *UpgradeStrategy `json:"upgradeStrategy,omitempty"`

	// sshHosts are hosts Drover installs the node agent on over SSH, instead of
	// someone running the registration command on them.
	// +optional
	// +listType=map
	// +listMapKey=address
	// +kubebuilder:validation:MaxItems=100
	SSHHosts []SSHHost `json:"sshHosts,omitempty"`

	// artifactsURL points at a mirror of the artifact source (the layout of the
	// manager's --artifacts-dir: <kubernetesVersion>/<binary>, images/<name>.tar) with
	// a SHA256SUMS file at its root (sha256sum's output for every file). The nodes
	// download from it directly, and install only what matches SHA256SUMS. Default:
	// the hub's own artifact source.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	ArtifactsURL string `json:"artifactsURL,omitempty"`

	// nodeTokenSecretRef names the Secret, in the operator namespace, holding the
	// token hosts present when they register (key defaults to "token"). Without it
	// the hub creates Secret <cluster>-node-token. Changing the token stops hosts
	// that have not registered yet from joining with the old one.
	// +optional
	NodeTokenSecretRef *SecretKeyReference `json:"nodeTokenSecretRef,omitempty"`

	// etcdSnapshotCreate takes an etcd snapshot when its generation changes. The
	// snapshot is kept on the disk of the etcd node that takes it (and in
	// etcdSnapshotS3 when that is set), listed in status.provisioning.etcdSnapshots
	// and named <cluster>-<YYYYMMDD-HHMMSS>.
	// +optional
	EtcdSnapshotCreate *ActionGeneration `json:"etcdSnapshotCreate,omitempty"`

	// etcdSnapshotSchedule takes etcd snapshots on a schedule, in cron's five
	// fields (minute hour day-of-month month day-of-week, UTC), e.g. "0 */6 * * *",
	// or @hourly, @daily, @weekly. A snapshot due while another operation runs is
	// taken when it ends.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^(@(hourly|daily|midnight|weekly|monthly|yearly|annually)|[-0-9*/,A-Za-z]+( [-0-9*/,A-Za-z?]+){4})$`
	EtcdSnapshotSchedule string `json:"etcdSnapshotSchedule,omitempty"`

	// etcdSnapshotRetention is how many snapshots each etcd node keeps (5); taking
	// one more deletes the oldest. With etcdSnapshotS3, the folder keeps as many of
	// the cluster's snapshots too.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	EtcdSnapshotRetention int32 `json:"etcdSnapshotRetention,omitempty"`

	// etcdSnapshotS3 also stores every snapshot in S3-compatible object storage,
	// so that it outlives the node that took it: a restore then downloads it onto
	// an etcd member of the cluster as it is now.
	// +optional
	EtcdSnapshotS3 *EtcdSnapshotS3 `json:"etcdSnapshotS3,omitempty"`

	// etcdSnapshotRestore restores the named snapshot when its generation changes.
	// +optional
	EtcdSnapshotRestore *EtcdSnapshotRestore `json:"etcdSnapshotRestore,omitempty"`

	// rotateCertificates issues every certificate of the cluster anew when its
	// generation changes.
	// +optional
	RotateCertificates *ActionGeneration `json:"rotateCertificates,omitempty"`
}

// UpgradeStrategy bounds how many nodes change at once.
type UpgradeStrategy struct {
	// controlPlaneConcurrency is how many control-plane nodes change at once (1).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	ControlPlaneConcurrency int32 `json:"controlPlaneConcurrency,omitempty"`
	// workerConcurrency is how many workers change at once: a number or a
	// percentage ("25%", the default).
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^[1-9][0-9]?%$|^100%$')",message="a number of at least 1, or a percentage from 1% to 100%"
	WorkerConcurrency *intstr.IntOrString `json:"workerConcurrency,omitempty"`
	// drain evicts a worker's pods before it changes.
	// +optional
	Drain bool `json:"drain,omitempty"`
}

// SSHHost is a host reached over SSH.
type SSHHost struct {
	// address is the host's IP or name, as the hub reaches it; also the node's
	// address in the cluster unless it is a name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Address string `json:"address"`
	// port of sshd (22).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
	// user to log in as; it must be root or have passwordless sudo.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	User string `json:"user"`
	// sshKeySecretRef names the Secret, in the operator namespace, with the private
	// key (key defaults to "value").
	// +required
	SSHKeySecretRef SecretKeyReference `json:"sshKeySecretRef"`
	// hostKey pins the host's public key ("ssh-ed25519 AAAA..."), as in
	// known_hosts. Without it Drover records the key it sees first in status and
	// refuses any other afterwards.
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	HostKey string `json:"hostKey,omitempty"`
	// roles of the host.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	Roles []NodeRole `json:"roles"`
	// nodeAgentArgs are further flags of drover node-agent on this host, e.g.
	// --hostname=edge-7 or --kubelet-cgroup-root=/drover.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^--[a-z][-a-z]*(=.*)?$`
	NodeAgentArgs []string `json:"nodeAgentArgs,omitempty"`
}

// ActionGeneration triggers a day-2 action once per generation.
type ActionGeneration struct {
	// generation: change it (e.g. add one) to act once more.
	// +required
	// +kubebuilder:validation:Minimum=0
	Generation int64 `json:"generation"`
}

// EtcdSnapshotS3 is S3-compatible storage for etcd snapshots (AWS S3, MinIO, Ceph
// RGW, ...). The etcd nodes reach it directly; the hub never does.
type EtcdSnapshotS3 struct {
	// endpoint is host[:port] of the storage, without a scheme, e.g.
	// s3.eu-west-1.amazonaws.com or minio.example.com:9000.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.\[\]:-]+$`
	Endpoint string `json:"endpoint"`
	// bucket holds the snapshots; it must exist.
	// +required
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9][a-z0-9.-]*[a-z0-9]$`
	Bucket string `json:"bucket"`
	// folder is a prefix in the bucket, e.g. etcd/prod (default: the bucket's
	// root). Objects are named <folder>/<snapshot name>.db; retention deletes only
	// this cluster's snapshots there.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$`
	Folder string `json:"folder,omitempty"`
	// region of the bucket, where the storage needs one (e.g. eu-west-1).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9-]+$`
	Region string `json:"region,omitempty"`
	// credentialsSecretRef names a Secret in the operator's namespace with keys
	// accessKeyID and secretAccessKey (and sessionToken, optionally). Without it
	// the nodes use their own credentials: AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY in the node agent's environment, or the instance's IAM
	// role. The credentials reach only the node that takes or restores a
	// snapshot, in a file of its plan (mode 0600) removed when the operation ends.
	// +optional
	CredentialsSecretRef *SecretReference `json:"credentialsSecretRef,omitempty"`
	// endpointCA is a PEM bundle that verifies the endpoint's certificate, in
	// addition to the nodes' system roots.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	EndpointCA string `json:"endpointCA,omitempty"`
	// insecure speaks plain HTTP to the endpoint instead of HTTPS.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// SecretReference names a Secret in the operator's namespace.
type SecretReference struct {
	// name of the Secret, in the operator's namespace (drover-system by default).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// EtcdSnapshotRestore restores an etcd snapshot.
type EtcdSnapshotRestore struct {
	// name of the snapshot, as listed in status.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// generation: change it to restore once more.
	// +required
	// +kubebuilder:validation:Minimum=0
	Generation int64 `json:"generation"`
}

// ProvisioningStatus says how far building the cluster has come.
type ProvisioningStatus struct {
	// registrationCommand installs the node agent on a host: run it there as root,
	// after "--roles" with the host's roles. It embeds a value derived from the node
	// token, so treat it as a secret.
	// +optional
	// +kubebuilder:validation:MaxLength=2100
	RegistrationCommand string `json:"registrationCommand,omitempty"`
	// tier is the step being worked on: EtcdInit, EtcdJoin, ControlPlane, Workers
	// or Ready.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Tier string `json:"tier,omitempty"`
	// reachedTier is the furthest tier reached: from then on its components stay
	// planned whatever their health.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ReachedTier string `json:"reachedTier,omitempty"`
	// waiting says what the tier waits for, naming the node and the probe.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Waiting string `json:"waiting,omitempty"`
	// etcdMembers are the etcd nodes in the order they joined; the first started
	// the cluster. Drover keeps this to plan every later node the same way.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=253
	EtcdMembers []string `json:"etcdMembers,omitempty"`
	// nodes are the version and certificate generation each node is planned at;
	// during an upgrade or a certificate rotation they move to the spec's, a few
	// nodes at a time.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=200
	Nodes []ProvisionedNode `json:"nodes,omitempty"`
	// operation is the day-2 operation under way (an upgrade, a certificate
	// rotation, an etcd snapshot or restore, a node removal), if one is.
	// +optional
	Operation *ProvisioningOperation `json:"operation,omitempty"`
	// etcdSnapshots are the snapshots taken, newest last.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=100
	EtcdSnapshots []EtcdSnapshot `json:"etcdSnapshots,omitempty"`
	// etcdSnapshotCreateGeneration, etcdSnapshotRestoreGeneration and
	// rotateCertificatesGeneration are the generations of the day-2 actions last
	// acted on (or found at creation, where there is nothing to act on yet).
	// +optional
	EtcdSnapshotCreateGeneration *int64 `json:"etcdSnapshotCreateGeneration,omitempty"`
	// +optional
	EtcdSnapshotRestoreGeneration *int64 `json:"etcdSnapshotRestoreGeneration,omitempty"`
	// etcdSnapshotScheduledAt is when the last scheduled snapshot was started,
	// whether it succeeded or not: one that failed is tried again at the next
	// time the schedule names, not at once.
	// +optional
	EtcdSnapshotScheduledAt *metav1.Time `json:"etcdSnapshotScheduledAt,omitempty"`
	// +optional
	RotateCertificatesGeneration *int64 `json:"rotateCertificatesGeneration,omitempty"`
	// certificatesGeneration is the generation the cluster's certificates are
	// issued at. A rotateCertificates bump moves it on by one, and so does Drover
	// itself when a certificate in use is due to end within 60 days, so that
	// certificates are renewed node by node, restarting what uses them, long
	// before they expire.
	// +optional
	CertificatesGeneration *int64 `json:"certificatesGeneration,omitempty"`
	// certificatesExpire is when the first of the certificates in use ends.
	// +optional
	CertificatesExpire *metav1.Time `json:"certificatesExpire,omitempty"`
	// sshHostKeys are the host keys seen first for sshHosts without a pinned one.
	// +optional
	// +listType=map
	// +listMapKey=address
	// +kubebuilder:validation:MaxItems=100
	SSHHostKeys []SSHHostKey `json:"sshHostKeys,omitempty"`
}

// ProvisionedNode is what one node is planned at.
type ProvisionedNode struct {
	// name of the ClusterNode.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// kubernetesVersion of the binaries the node's plan runs.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// certificatesGeneration is the rotateCertificates generation the node's
	// certificates were issued for.
	// +optional
	CertificatesGeneration int64 `json:"certificatesGeneration,omitempty"`
}

// Day-2 operation types.
const (
	OperationUpgrade             = "Upgrade"
	OperationCertificateRotation = "CertificateRotation"
	OperationEtcdSnapshot        = "EtcdSnapshot"
	OperationEtcdRestore         = "EtcdRestore"
	OperationNodeRemoval         = "NodeRemoval"
)

// ProvisioningOperation is a day-2 operation under way. Only one runs at a time;
// the others wait for it.
type ProvisioningOperation struct {
	// type is Upgrade, CertificateRotation, EtcdSnapshot, EtcdRestore or NodeRemoval.
	// +required
	// +kubebuilder:validation:MaxLength=32
	Type string `json:"type"`
	// generation of the action that asked for it (for the generation-triggered ones).
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// target is what the operation moves to: the version, the snapshot's name, the
	// node removed.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Target string `json:"target,omitempty"`
	// phase of the operation.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Phase string `json:"phase,omitempty"`
	// node the operation is on now.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`
	// message says what it waits for.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
	// startTime is when it began.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
}

// EtcdSnapshot is a snapshot of a provisioned cluster's etcd.
type EtcdSnapshot struct {
	// name of the snapshot: <cluster>-<YYYYMMDD-HHMMSS>.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// node that took it and keeps it.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`
	// path of the file on that node.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Path string `json:"path"`
	// createdAt is when it was taken.
	// +optional
	CreatedAt *metav1.Time `json:"createdAt,omitempty"`
	// kubernetesVersion of the cluster when it was taken.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// s3 is where the snapshot is stored in S3-compatible storage, when
	// spec.provisioning.etcdSnapshotS3 was set when it was taken.
	// +optional
	S3 *EtcdSnapshotS3Location `json:"s3,omitempty"`
}

// EtcdSnapshotS3Location is a snapshot's object in S3-compatible storage.
type EtcdSnapshotS3Location struct {
	// endpoint of the storage.
	// +required
	// +kubebuilder:validation:MaxLength=261
	Endpoint string `json:"endpoint"`
	// bucket holding the object.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`
	// key of the object: <folder>/<name>.db.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Key string `json:"key"`
}

// SSHHostKey is the public key an SSH host presented.
type SSHHostKey struct {
	// +required
	// +kubebuilder:validation:MaxLength=253
	Address string `json:"address"`
	// +required
	// +kubebuilder:validation:MaxLength=16384
	Key string `json:"key"`
}

// ClusterNodeSpec is a host of a provisioned cluster, as it registered.
type ClusterNodeSpec struct {
	// cluster is the ManagedCluster the node belongs to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.cluster is immutable"
	Cluster string `json:"cluster"`
	// hostname of the host; the node's name is <cluster>-<hostname>.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.hostname is immutable"
	Hostname string `json:"hostname"`
	// roles of the node.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	Roles []NodeRole `json:"roles"`
	// address is the node's IP, where the other nodes and the hub reach it.
	// +required
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="spec.address must be an IP address"
	Address string `json:"address"`
	// kubeletCgroupRoot is the cgroup under which kubelet puts pods on this host
	// (default: the root), for hosts that share a machine (containers, namespaces).
	// drover node-agent --kubelet-cgroup-root sets it.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/[-A-Za-z0-9_./]*$`
	KubeletCgroupRoot string `json:"kubeletCgroupRoot,omitempty"`
}

// ProbeResult is one probe of a node's plan.
type ProbeResult struct {
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// +required
	Healthy bool `json:"healthy"`
	// message says why it is unhealthy.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`
}

// ProcessResult is one process of a node's plan.
type ProcessResult struct {
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// +required
	Running bool `json:"running"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	Restarts int32 `json:"restarts,omitempty"`
	// lastExit says how it last ended.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastExit string `json:"lastExit,omitempty"`
}

// PlanFailure is the step of a node's plan that fails.
type PlanFailure struct {
	// +required
	// +kubebuilder:validation:MaxLength=256
	Step string `json:"step"`
	// message is the error and the end of the step's output.
	// +required
	// +kubebuilder:validation:MaxLength=8192
	Message string `json:"message"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	Attempts int32 `json:"attempts,omitempty"`
}

// ClusterNodeStatus is what the node agent reports.
type ClusterNodeStatus struct {
	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// conditions: Ready, PlanApplied, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// state is Registered, Applying, Applied or Failed, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	State string `json:"state,omitempty"`
	// planChecksum is the checksum of the plan the hub published for the node.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	PlanChecksum string `json:"planChecksum,omitempty"`
	// appliedChecksum is the checksum of the plan the node last applied in full.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AppliedChecksum string `json:"appliedChecksum,omitempty"`
	// failure is the step of the latest plan that fails, if one does.
	// +optional
	Failure *PlanFailure `json:"failure,omitempty"`
	// processes the node agent supervises.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Processes []ProcessResult `json:"processes,omitempty"`
	// probes of the plan.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Probes []ProbeResult `json:"probes,omitempty"`
	// kubernetesVersion the node runs.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// agentVersion of the node agent.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	AgentVersion string `json:"agentVersion,omitempty"`
	// lastHeartbeatTime is when the node agent last reported.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`
}

// ClusterNode is a host of a cluster that Drover provisions: it appears when the
// host's node agent registers, and says what the host runs and how it is.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cn,categories=drover
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Roles",type=string,JSONPath=`.spec.roles`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.kubernetesVersion`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Address",type=string,priority=10,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Message",type=string,priority=10,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.cluster + '-' + self.spec.hostname",message="metadata.name must be <spec.cluster>-<spec.hostname>"
type ClusterNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the node as it registered.
	// +required
	Spec ClusterNodeSpec `json:"spec"`

	// status is what its node agent reports.
	// +optional
	Status ClusterNodeStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions (for condition helpers).
func (n *ClusterNode) GetConditions() []metav1.Condition { return n.Status.Conditions }

// SetConditions replaces the status conditions (for condition helpers).
func (n *ClusterNode) SetConditions(conds []metav1.Condition) { n.Status.Conditions = conds }

// ProbeHealthy says whether the node agent reports the named probe healthy (false
// when it does not report it at all).
func (n *ClusterNode) ProbeHealthy(probe string) bool {
	for _, p := range n.Status.Probes {
		if p.Name == probe {
			return p.Healthy
		}
	}
	return false
}

// ClusterNodeList is a list of ClusterNodes.
//
// +kubebuilder:object:root=true
type ClusterNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterNode `json:"items"`
}

func init() {
	register(&ClusterNode{}, &ClusterNodeList{})
}
