// Package install tests what Drover ships to install and run it, against real API
// servers: the Helm chart (charts/drover), the one-file manifest (dist/install.yaml),
// the samples (config/samples) and the Argo CD health checks (config/argocd).
//
// Its helpers apply YAML as `kubectl apply --server-side -f` does, in one pass: every
// object's kind is resolved against the API discovery taken before the first object
// is applied, so a custom resource in the same pass as its CRD fails exactly as it
// does with kubectl.
package install
