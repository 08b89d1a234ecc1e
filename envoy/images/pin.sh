#!/usr/bin/env bash
# Renders istio/webhook/ into OUT (default dist/istio/webhook) with the Deployment's image pinned
# to REF (default: dist/image/meshgate.ref, written by `make image REGISTRY=...`). Without a
# reference it does nothing, so `make istio` runs it every time.
#
#   envoy/images/pin.sh [REF [OUT]]
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
ref=${1:-}
if [ -z "$ref" ] && [ -f "$repo/dist/image/meshgate.ref" ]; then
  ref=$(cat "$repo/dist/image/meshgate.ref")
fi
[ -n "$ref" ] || exit 0
# Only a reference by digest, in the characters a reference has: it goes into a sed replacement
# and a YAML scalar, where `&`, `|`, `\`, quotes, spaces or newlines would mean something else.
pinned='^[][A-Za-z0-9._/:-]+@sha256:[0-9a-f]{64}$'
if ! [[ $ref =~ $pinned ]]; then
  echo "pin: $ref is not an image reference pinned by digest (NAME@sha256:<64 hex>)" >&2
  exit 1
fi
out=${2:-$repo/dist/istio/webhook}
mkdir -p "$out"
cp "$repo"/istio/webhook/*.yaml "$out/"
# The one container image line of the Deployment, quoted: `[::1]:5000/...` is no plain scalar.
sed -i "s|^\(          image: \).*meshgate/meshgate[:@].*$|\1\"$ref\"|" "$out/deployment.yaml"
grep -qxF "          image: \"$ref\"" "$out/deployment.yaml" \
  || { echo "pin: no image line replaced in $out/deployment.yaml" >&2; exit 1; }
echo "istio: $out/deployment.yaml pinned to $ref"
