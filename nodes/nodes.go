// Package nodes is the hub's side of provisioned hosts: what a host reaches on the
// hub server to become, and stay, a node of a cluster Drover builds.
//
//	GET  /v1/nodes/<id>/install.sh  the install script (id is derived from the node token)
//	GET  /v1/nodes/<id>/ca          the hub's CA, signed with the node token, for hosts
//	                                that were given only the URL and the token
//	POST /v1/nodes/register         token (or current credential) + CSR -> ClusterNode
//	                                and a client certificate for this node only
//	GET  /v1/nodes/plan             the node's plan (long poll), with its credential
//	PUT  /v1/nodes/status           what the node agent reports, with its credential
//	GET  /v1/artifacts/<path>       binaries and images (--artifacts-dir), and drover
//
// A node's credential names its cluster, hostname and ClusterNode UID: it reads only
// its own plan and writes only its own ClusterNode's status. Deleting the ClusterNode
// revokes it. Tokens and plans are never logged.
package nodes

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Paths and names that are part of Drover's contract.
const (
	PathPrefix      = "/v1/nodes/"
	RegisterPath    = "/v1/nodes/register"
	PlanPath        = "/v1/nodes/plan"
	StatusPath      = "/v1/nodes/status"
	ArtifactsPrefix = "/v1/artifacts/"
	// CASecretName, in the operator namespace, holds the CA of node credentials.
	CASecretName = "drover-node-ca"
	// SignatureHeader carries hex(HMAC-SHA256(token, CA PEM)) on the CA endpoint.
	SignatureHeader = "X-Drover-Signature"
	// DefaultCredentialTTL is how long a node credential is valid; the node agent
	// renews it when two thirds have passed.
	DefaultCredentialTTL = 30 * 24 * time.Hour
	// PlanKey and ChecksumKey are the keys of a node's plan Secret.
	PlanKey     = "plan"
	ChecksumKey = "checksum"
	// ComponentPlan labels plan Secrets.
	ComponentPlan = "node-plan"
	// NodeLabel names the ClusterNode a plan Secret is for.
	NodeLabel = "management.drover.io/node"
	// DefaultDataDir is the node agent's data directory on a host.
	DefaultDataDir = "/var/lib/drover"
)

// credentialURIPrefix starts the URI SAN of a node credential:
// urn:drover:node:<cluster>:<hostname>:<ClusterNode UID>.
const credentialURIPrefix = "urn:drover:node:"

// ID derives the install URL's id from a node token: the URL changes when the token
// does, and the token never appears in status.
func ID(token string) string {
	sum := sha256.Sum256([]byte("drover-node:" + token))
	return base64.RawURLEncoding.EncodeToString(sum[:24])
}

// InstallURL is where a cluster's install script is served.
func InstallURL(hubURL, token string) string {
	return strings.TrimSuffix(hubURL, "/") + PathPrefix + ID(token) + "/install.sh"
}

// Command installs the node agent on a host; the roles go after it. With the hub's
// CA (a self-managed one, which no host trusts yet), the command first writes it to
// drover-hub-ca.crt, so that curl verifies the hub without --insecure.
func Command(hubURL, token string, ca []byte) string {
	cmd := "curl -fsSL " + InstallURL(hubURL, token) + " | sh -s -- --roles etcd,control-plane,worker"
	if len(ca) == 0 {
		return cmd
	}
	return "printf '%s' " + base64.StdEncoding.EncodeToString(ca) + " | base64 -d > drover-hub-ca.crt && curl -fsSL --cacert drover-hub-ca.crt " +
		strings.TrimPrefix(cmd, "curl -fsSL ")
}

// PlanSecretName is the Secret that holds a node's plan.
func PlanSecretName(node string) string { return node + "-plan" }

// NodeName is the ClusterNode of a host of a cluster.
func NodeName(cluster, hostname string) string { return cluster + "-" + hostname }

// Sign is the signature of the hub's CA with a node token, which proves to a host
// that knows only the token that it talks to the hub that issued it.
func Sign(token string, ca []byte) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write(ca)
	return hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks Sign's result.
func VerifySignature(token string, ca []byte, sig string) bool {
	want := Sign(token, ca)
	return len(sig) == len(want) && subtle.ConstantTimeCompare([]byte(sig), []byte(want)) == 1
}

// Identity is what a node credential says of its holder.
type Identity struct {
	Cluster, Hostname, UID string
}

// Node is the ClusterNode's name.
func (i Identity) Node() string { return NodeName(i.Cluster, i.Hostname) }

func (i Identity) uri() string {
	return credentialURIPrefix + i.Cluster + ":" + i.Hostname + ":" + i.UID
}

func identityOf(uris []string) (Identity, error) {
	for _, u := range uris {
		rest, ok := strings.CutPrefix(u, credentialURIPrefix)
		if !ok {
			continue
		}
		parts := strings.Split(rest, ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			break
		}
		return Identity{Cluster: parts[0], Hostname: parts[1], UID: parts[2]}, nil
	}
	return Identity{}, errors.New("the client certificate is not a node credential")
}

// RegisterRequest is what a node agent sends to register (or renew its credential).
type RegisterRequest struct {
	// Token is the node token; empty when renewing with the current credential.
	Token    string   `json:"token,omitempty"`
	Hostname string   `json:"hostname"`
	Address  string   `json:"address"`
	Roles    []string `json:"roles"`
	// CSR is a PEM certificate request for the node's own key.
	CSR string `json:"csr"`
	// KubeletCgroupRoot goes into the ClusterNode (--kubelet-cgroup-root).
	KubeletCgroupRoot string `json:"kubeletCgroupRoot,omitempty"`
	AgentVersion      string `json:"agentVersion,omitempty"`
}

// RegisterResponse is the node's credential.
type RegisterResponse struct {
	Node        string    `json:"node"`
	Certificate string    `json:"certificate"`
	NotAfter    time.Time `json:"notAfter"`
}

// PlanResponse is a node's plan as published.
type PlanResponse struct {
	Checksum string `json:"checksum"`
	// Plan is the plan's bytes (base64 in JSON), which must match Checksum.
	Plan []byte `json:"plan"`
}

// errorf is an error with the HTTP status it answers with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}
