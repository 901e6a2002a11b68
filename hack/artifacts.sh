#!/usr/bin/env bash
# Fills an artifact source for `drover --artifacts-dir DIR` from the binaries that
# `hack/kubebin.sh node` builds from the Go module proxy:
#   DIR/<version>/{etcd,etcdctl,etcdutl,kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy}
# Images (DIR/images/*.tar: at least the pause image, registry.k8s.io/pause:3.10, as
# `ctr images export` writes it) are yours to add: no registry is reached from here.
#
#   hack/artifacts.sh /srv/drover-artifacts
set -euo pipefail
dir=${1:?usage: hack/artifacts.sh DIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=$(hack/kubebin.sh node)
version=$(basename "$bin" | sed -E 's/^node-kube-(v[0-9.]+)_.*/\1/')
mkdir -p "$dir/$version" "$dir/images"
for b in etcd etcdctl etcdutl kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
	ln -f "$bin/$b" "$dir/$version/$b" 2>/dev/null || cp -f "$bin/$b" "$dir/$version/$b"
done
echo "$dir/$version"
