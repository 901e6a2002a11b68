#!/usr/bin/env bash
# Writes config/argocd/argocd-cm.yaml from config/argocd/health.lua: the patch of Argo
# CD's argocd-cm ConfigMap that installs that health check for each of Drover's kinds.
# make manifests runs it; internal/install evaluates the scripts in the file it writes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
lua=config/argocd/health.lua
{
	cat <<'HEADER'
# Argo CD health checks for Drover's kinds, as a patch of Argo CD's argocd-cm ConfigMap
# (docs/install.md#argo-cd). Generated from health.lua by make manifests; do not edit.
#
#   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
HEADER
	for kind in ManagedCluster RoleTemplate AccessBinding ClusterProject ClusterNode; do
		echo "  resource.customizations.health.management.drover.io_${kind}: |"
		sed 's/^\(.\)/    \1/' "$lua"
	done
} > config/argocd/argocd-cm.yaml
