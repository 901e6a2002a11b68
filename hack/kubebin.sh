#!/usr/bin/env bash
# Builds Kubernetes binaries from the Go module proxy (see hack/kubebin/go.mod for the
# pinned versions) and caches them outside the repository, keyed by version. Prints
# the directory.
#
#   hack/kubebin.sh        kube-apiserver, kube-controller-manager, etcd, and kwok for
#                          fake nodes: what KUBEBUILDER_ASSETS should point at.
#                          Cold: about 4-5 minutes on 2 cores. Warm: instant.
#   hack/kubebin.sh node   everything a provisioned host runs: kubelet, kube-scheduler,
#                          kube-proxy and etcdctl, built into a directory of their own,
#                          beside hard links to the first set's etcd, kube-apiserver and
#                          kube-controller-manager (built first if missing). The hosts
#                          harness (internal/hosts) and the provisioning tests use it.
#                          Cold, on top of the first set: about 3-4 minutes. Warm: instant.
#                          It includes etcdutl, which restores etcd snapshots.
#
# KUBE_VERSION=v1.36.1 builds another Kubernetes release than the one hack/kubebin/go.mod
# pins (the upgrade tests need two): the wrapper module is copied into the cache with
# its Kubernetes versions rewritten, and its go.sum is made there by `go mod tidy`.
#
# The two sets live in separate directories so that asking for the node binaries never
# rebuilds, or invalidates, the first set that every `make test` uses.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$here/kubebin/go.mod")"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
cache_root="${DROVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}"
dir="$cache_root/kubebin/kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
node_dir="$cache_root/kubebin/node-kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}"

mode="${1:-control-plane}"
case "$mode" in
control-plane | node) ;;
*)
	echo "usage: $0 [node]" >&2
	exit 2
	;;
esac

# Test binaries that run at the same time may all ask for the binaries: one builds,
# the others wait and then find them built.
mkdir -p "$cache_root/kubebin"
exec 9>"$cache_root/kubebin/.lock"
flock 9

# have DIR BINARY... succeeds when DIR holds every BINARY, executable.
have() {
	local d="$1"
	shift
	for b in "$@"; do
		[[ -x "$d/$b" ]] || return 1
	done
}

# The wrapper module to build from: hack/kubebin itself for the pinned release, else a
# copy of it in the cache, rewritten for KUBE_VERSION.
pinned="$(awk '$1=="k8s.io/kubernetes"{print $2}' "$here/kubebin/go.mod")"
src="$here/kubebin"
if [[ "$KUBE_VERSION" != "$pinned" ]]; then
	if ! [[ "$KUBE_VERSION" =~ ^v1\.[0-9]+\.[0-9]+$ ]]; then
		echo "KUBE_VERSION must look like v1.36.1, not $KUBE_VERSION" >&2
		exit 2
	fi
	staging="v0.${KUBE_VERSION#v1.}"
	src="$cache_root/kubebin/src-${KUBE_VERSION}"
	if [[ ! -f "$src/go.sum" ]]; then
		rm -rf "$src.tmp"
		cp -r "$here/kubebin" "$src.tmp"
		sed -i -E -e "s#^(\s*k8s\.io/kubernetes) ${pinned}\$#\1 ${KUBE_VERSION}#" \
			-e "s#^(\s*k8s\.io/[-a-z0-9]+( => k8s\.io/[-a-z0-9]+)?) v0\.${pinned#v1.}\$#\1 ${staging}#" "$src.tmp/go.mod"
		(cd "$src.tmp" && go mod tidy)
		rm -rf "$src"
		mv "$src.tmp" "$src"
	fi
fi

# kube_build OUT PACKAGE... builds the wrapper module's commands into OUT, stamped
# with KUBE_VERSION as upstream's release builds are.
kube_build() {
	local out="$1"
	shift
	(
		cd "$src"
		ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=${KUBE_VERSION#v} -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION}"
		ldflags="${ldflags/gitMajor=${KUBE_VERSION#v}/gitMajor=$(echo "${KUBE_VERSION#v}" | cut -d. -f1)} -X k8s.io/component-base/version.gitMinor=$(echo "${KUBE_VERSION#v}" | cut -d. -f2)"
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/" "$@"
	)
}

if ! have "$dir" kube-apiserver kube-controller-manager etcd kwok; then
	mkdir -p "$dir.tmp"
	echo "building kube-apiserver, kube-controller-manager, etcd ${ETCD_VERSION} (kubernetes ${KUBE_VERSION}) into $dir" >&2
	kube_build "$dir.tmp" ./kube-apiserver ./kube-controller-manager ./etcd
	echo "building kwok ${KWOK_VERSION}" >&2
	CGO_ENABLED=0 GOBIN="$dir.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
fi
if [[ "$mode" == control-plane ]]; then
	echo "$dir"
	exit 0
fi

if have "$node_dir" kubelet kube-scheduler kube-proxy etcdctl etcd kube-apiserver kube-controller-manager && ! have "$node_dir" etcdutl; then
	echo "building etcdutl ${ETCD_VERSION} into $node_dir" >&2
	kube_build "$node_dir" ./etcdutl
fi
if ! have "$node_dir" kubelet kube-scheduler kube-proxy etcdctl etcdutl etcd kube-apiserver kube-controller-manager; then
	rm -rf "$node_dir.tmp"
	mkdir -p "$node_dir.tmp"
	echo "building kubelet, kube-scheduler, kube-proxy, etcdctl, etcdutl ${ETCD_VERSION} (kubernetes ${KUBE_VERSION}) into $node_dir" >&2
	kube_build "$node_dir.tmp" ./kubelet ./kube-scheduler ./kube-proxy ./etcdctl ./etcdutl
	for b in etcd kube-apiserver kube-controller-manager; do
		ln -f "$dir/$b" "$node_dir.tmp/$b" 2>/dev/null || cp "$dir/$b" "$node_dir.tmp/$b"
	done
	rm -rf "$node_dir"
	mv "$node_dir.tmp" "$node_dir"
fi
echo "$node_dir"
