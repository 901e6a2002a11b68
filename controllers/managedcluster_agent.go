package controllers

import "github.com/drover-io/drover/render"

// The agent's objects in every target cluster. render.Agent renders them, and the
// cluster syncer applies them with everything else it writes into the target.
const (
	// AgentNamespace holds the agent and its Lease in each target.
	AgentNamespace = render.AgentNamespace
	// AgentName names the agent's ServiceAccount, Deployment and Lease.
	AgentName = render.AgentName
	// AgentRoleName names the agent's ClusterRole, Role and their bindings.
	AgentRoleName = render.AgentRoleName
)
