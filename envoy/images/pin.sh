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
case $ref in
  *@sha256:*) ;;
  *) echo "pin: $ref is not pinned by digest" >&2; exit 1 ;;
esac
out=${2:-$repo/dist/istio/webhook}
mkdir -p "$out"
cp "$repo"/istio/webhook/*.yaml "$out/"
# The one container image line of the Deployment.
sed -i "s|^\(          image: \).*meshgate/meshgate[:@].*$|\1$ref|" "$out/deployment.yaml"
grep -q "^          image: $ref\$" "$out/deployment.yaml" \
  || { echo "pin: no image line replaced in $out/deployment.yaml" >&2; exit 1; }
echo "istio: $out/deployment.yaml pinned to $ref"
