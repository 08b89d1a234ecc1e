#!/usr/bin/env bash
# Exports the webhook image meshgate:$TAG as an OCI layout (dist/image/meshgate, tag $TAG) and,
# with a registry, pushes it as REGISTRY/meshgate/meshgate:$TAG, signs it with `meshgate sign`
# and writes the pinned reference (REGISTRY/meshgate/meshgate@sha256:...) to dist/image/meshgate.ref,
# which `make istio` writes into the Deployment it renders (envoy/images/pin.sh).
#
#   envoy/images/publish.sh [REGISTRY]
#
# Environment: TAG (default 0.1.0), KEY (cosign key, default .state/dev/cosign.key, made on first
# use; its password in COSIGN_PASSWORD), INSECURE=1 (plain HTTP to REGISTRY, a local development
# registry), MESHGATE_BIN (default target/debug/meshgate), DIST (default dist).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
tag=${TAG:-0.1.0}
registry=${1:-}
dist=${DIST:-$repo/dist}
meshgate=${MESHGATE_BIN:-$repo/target/debug/meshgate}
key=${KEY:-$repo/.state/dev/cosign.key}

podman image exists "meshgate:$tag" || { echo "publish: meshgate:$tag is missing: make image" >&2; exit 1; }
mkdir -p "$dist/image"
rm -rf "$dist/image/meshgate"
podman push --quiet "meshgate:$tag" "oci:$dist/image/meshgate:$tag"
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
  "meshgate:$tag" "docker://$ref"
digest=$(cat "$dist/image/meshgate.digest")
if [ ! -f "$key" ]; then
  mkdir -p "$(dirname "$key")"
  "$meshgate" generate-key-pair --output-prefix "${key%.key}"
fi
"$meshgate" sign "${insecure[@]}" --key "$key" "$registry/meshgate/meshgate@$digest" >/dev/null
echo "$registry/meshgate/meshgate@$digest" >"$dist/image/meshgate.ref"
echo "publish: $ref@$digest signed with $key"
