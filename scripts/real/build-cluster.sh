#!/usr/bin/env bash
# Builds the cluster tier's parts from their Go modules at the versions in
# scripts/real/versions.env: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# and kubectl (k8s.io/kubernetes), kwok, KEDA's operator and metrics adapter, and Argo
# Rollouts' controller. Each goes to target/real/<part>-<version>/ (REAL_OUT_DIR elsewhere);
# a second run with the same versions builds nothing. Go's module and build caches are the
# caller's (GOMODCACHE, GOCACHE); GOTOOLCHAIN=auto fetches a newer Go through the module
# proxy when a module needs one (KEDA does).
#
# Each part is built in a module of its own that requires the upstream module and repeats
# its replace and exclude directives, so the build picks the versions upstream's own build
# picks. Directives that point into upstream's repository (k8s.io/kubernetes' staging
# modules, etcd's sibling modules) become the published module at the matching version.
#
#   bash scripts/real/build-cluster.sh   # prints each part's path (KUBE_APISERVER_BIN=…),
#                                        # also kept in target/real/cluster.env
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/scripts/real"
# shellcheck source=versions.env
. "$here/versions.env"
log() { printf '%s\n' "$*" >&2; }

if ! command -v go >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  log "installing Debian's golang-go package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq golang-go >/dev/null
fi
out=${REAL_OUT_DIR:-$root/target/real}
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GOFLAGS="${GOFLAGS:-} -trimpath -mod=mod"

# wrapper_module NAME MODULE VERSION SIBLING_VERSION: writes go.mod for a module NAME in the
# current directory: requires MODULE@VERSION and
# repeats its replace/exclude directives; a replace into upstream's tree (=> ./x or ../x)
# becomes the same module at SIBLING_VERSION.
wrapper_module() {
  local name=$1 module=$2 version=$3 sibling=$4 gomod
  go mod init "slo-scaler.test/$name" >/dev/null 2>&1
  gomod=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { log "no go.mod for $module@$version"; return 1; }
  python3 - "$gomod" "$sibling" >>go.mod <<'PY'
import re, sys
text = open(sys.argv[1]).read()
sibling = sys.argv[2]
lines = []
# Single-line directives and the bodies of blocks.
for kind in ("replace", "exclude"):
    for m in re.finditer(r"^%s\s*\(\n(.*?)^\)" % kind, text, re.S | re.M):
        lines += [(kind, l.strip()) for l in m.group(1).splitlines()]
    for m in re.finditer(r"^%s\s+([^(\n].*)$" % kind, text, re.M):
        lines.append((kind, m.group(1).strip()))
for kind, line in lines:
    line = line.split("//")[0].strip()
    if not line:
        continue
    if kind == "replace":
        left, right = [s.strip() for s in line.split("=>")]
        if right.startswith("./") or right.startswith("../"):
            right = "%s %s" % (left.split()[0], sibling)
        line = "%s => %s" % (left, right)
    print("%s %s" % (kind, line))
PY
  go mod edit -require="$module@$version"
  # Upstream's Go version: a newer one than the machine's is fetched (GOTOOLCHAIN=auto).
  go mod edit -go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
}

# build NAME VERSION MODULE SIBLING_VERSION PACKAGE... : the packages' binaries into
# $out/NAME-VERSION/; scripts/real/cluster/NAME.go, when there, is the wrapper's own main.
build() {
  local name=$1 version=$2 module=$3 sibling=$4
  shift 4
  local dir="$out/$name-$version"
  if [ -f "$dir/built" ]; then return 0; fi
  log "building $name $version ($*)"
  rm -rf "$dir"
  mkdir -p "$dir/src"
  (
    cd "$dir/src"
    wrapper_module "$name" "$module" "$version" "$sibling"
    if [ -f "$here/cluster/$name.go" ]; then cp "$here/cluster/$name.go" main.go; fi
    go build -o "$dir/" "$@" >&2
  )
  touch "$dir/built"
}

k8s=k8s.io/kubernetes
build kubernetes "$KUBERNETES_VERSION" "$k8s" "$KUBERNETES_STAGING_VERSION" \
  "$k8s/cmd/kube-apiserver" "$k8s/cmd/kube-controller-manager" "$k8s/cmd/kube-scheduler" "$k8s/cmd/kubectl"
# etcd's own main (go.etcd.io/etcd/v3) lives in a module that replaces its siblings by path;
# scripts/real/cluster/etcd.go is that main, over the server module.
build etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" .
build kwok "$KWOK_VERSION" sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
keda=github.com/kedacore/keda/v2
build keda "$KEDA_VERSION" "$keda" "$KEDA_VERSION" "$keda/cmd/operator" "$keda/cmd/adapter"
rollouts=github.com/argoproj/argo-rollouts
build argo-rollouts "$ARGO_ROLLOUTS_VERSION" "$rollouts" "$ARGO_ROLLOUTS_VERSION" "$rollouts/cmd/rollouts-controller"

# The CRDs, from the same module versions.
modpath() { go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
keda_dir=$(modpath "$keda" "$KEDA_VERSION")
rollouts_dir=$(modpath "$rollouts" "$ARGO_ROLLOUTS_VERSION")
kwok_dir=$(modpath sigs.k8s.io/kwok "$KWOK_VERSION")
istio_dir=$(modpath istio.io/api "$ISTIO_API_VERSION")

kube="$out/kubernetes-$KUBERNETES_VERSION"
{
  echo "KUBE_APISERVER_BIN=$kube/kube-apiserver"
  echo "KUBE_CONTROLLER_MANAGER_BIN=$kube/kube-controller-manager"
  echo "KUBE_SCHEDULER_BIN=$kube/kube-scheduler"
  echo "KUBECTL_BIN=$kube/kubectl"
  echo "ETCD_BIN=$out/etcd-$ETCD_VERSION/etcd"
  echo "KWOK_BIN=$out/kwok-$KWOK_VERSION/kwok"
  echo "KWOK_STAGES=$kwok_dir/kustomize/stage"
  echo "KEDA_OPERATOR_BIN=$out/keda-$KEDA_VERSION/operator"
  echo "KEDA_ADAPTER_BIN=$out/keda-$KEDA_VERSION/adapter"
  echo "KEDA_CRDS=$keda_dir/config/crd/bases"
  echo "ARGO_ROLLOUTS_BIN=$out/argo-rollouts-$ARGO_ROLLOUTS_VERSION/rollouts-controller"
  echo "ARGO_ROLLOUTS_CRDS=$rollouts_dir/manifests/crds"
  echo "ISTIO_CRDS=$istio_dir/kubernetes/customresourcedefinitions.gen.yaml"
} | tee "$out/cluster.env"
