#!/usr/bin/env bash
# Exports the webhook image meshgate:$TAG as an OCI layout (dist/image/meshgate, tag $TAG) and,
# with a registry, pushes it as REGISTRY/meshgate/meshgate:$TAG, signs it with `meshgate sign`
# and writes the pinned reference (REGISTRY/meshgate/meshgate@sha256:...) to dist/image/meshgate.ref,
# which `make istio` writes into the Deployment it renders (envoy/images/pin.sh).
#
#   envoy/images/publish.sh [REGISTRY]
#   envoy/images/publish.sh --check [REGISTRY]   # the checks below only (make image's first step)
#
# Environment: TAG (default 0.1.0), KEY (cosign key, default .state/dev/cosign.key, made on first
# use; its password in COSIGN_PASSWORD), INSECURE=1 (plain HTTP to REGISTRY, a local development
# registry), MESHGATE_BIN (default target/debug/meshgate), IMAGE_PROFILE (the cargo profile
# MESHGATE_BIN was built with, default debug), DIST (default dist), CONTAINERS_CONF (default
# envoy/containers.conf).
#
# Only a loopback registry (localhost, 127.x.y.z, [::1]) takes the dev key and a debug build:
# any other needs an explicit KEY, an existing file, and IMAGE_PROFILE=release.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/envoy/containers.conf}
tag=${TAG:-0.1.0}
check_only=
if [ "${1:-}" = --check ]; then
  check_only=1
  shift
fi
registry=${1:-}
dist=${DIST:-$repo/dist}
meshgate=${MESHGATE_BIN:-$repo/target/debug/meshgate}
key=${KEY:-$repo/.state/dev/cosign.key}
profile=${IMAGE_PROFILE:-debug}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "publish: $tag is not an image tag" >&2; exit 2; }

# What an earlier publish recorded must not outlive this one, refused or not: without a
# registry, or if the push fails, `make istio` would pin the Deployment to the old image.
rm -f "$dist/image/meshgate.ref" "$dist/image/meshgate.digest"

if [ -n "$registry" ] && ! [[ $registry =~ ^(localhost|127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\])(:[0-9]+)?$ ]]; then
  if [ -z "${KEY:-}" ]; then
    echo "publish: $registry is not a loopback registry: name the signing key, KEY=path/to/cosign.key (the dev key is for local registries only)" >&2
    exit 2
  fi
  if [ "$profile" != release ]; then
    echo "publish: $registry is not a loopback registry: publish a release build, IMAGE_PROFILE=release (this is $profile)" >&2
    exit 2
  fi
  if [ ! -f "$key" ]; then
    echo "publish: $key does not exist (a key for $registry is not made here)" >&2
    exit 2
  fi
fi
[ -z "$check_only" ] || exit 0

podman image exists "localhost/meshgate:$tag" || { echo "publish: meshgate:$tag is missing: make image" >&2; exit 1; }
mkdir -p "$dist/image"
rm -rf "$dist/image/meshgate"
podman push --quiet "localhost/meshgate:$tag" "oci:$dist/image/meshgate:$tag"
echo "publish: OCI layout $dist/image/meshgate ($tag)"
[ -n "$registry" ] || exit 0

insecure=()
tls_verify=true
if [ -n "${INSECURE:-}" ]; then
  insecure=(--insecure-registry "$registry")
  tls_verify=false
fi
ref=$registry/meshgate/meshgate:$tag
podman push --quiet --format oci --tls-verify="$tls_verify" --digestfile "$dist/image/meshgate.digest" \
  "localhost/meshgate:$tag" "docker://$ref"
digest=$(cat "$dist/image/meshgate.digest")
if [ ! -f "$key" ]; then
  mkdir -p "$(dirname "$key")"
  "$meshgate" generate-key-pair --output-prefix "${key%.key}"
fi
"$meshgate" sign "${insecure[@]}" --key "$key" "$registry/meshgate/meshgate@$digest" >/dev/null
echo "$registry/meshgate/meshgate@$digest" >"$dist/image/meshgate.ref"
echo "publish: $ref@$digest signed with $key"
