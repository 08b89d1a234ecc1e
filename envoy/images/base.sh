#!/usr/bin/env bash
# Builds the `localhost/meshgate-base:bookworm` image once: a Debian bookworm root filesystem made
# with `debootstrap --variant=minbase` (which downloads its packages from a Debian mirror),
# imported with `podman import`. No base image is pulled from a container registry. Skipped when
# the image exists. `make base` runs it (as root), and so do the containers tests.
#
#   envoy/images/base.sh            # build the image unless it exists
#   envoy/images/base.sh --mirror   # print the mirror it would use, and exit
#
# The mirror: MESHGATE_DEBIAN_MIRROR, else the first http(s) Debian archive apt uses (deb822
# `URIs:` or one-line `deb` entries under MESHGATE_APT_ETC, default /etc/apt), else
# http://deb.debian.org/debian (Ubuntu hosts, `mirror+file:` sources).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/envoy/containers.conf}
image=${MESHGATE_BASE_IMAGE:-localhost/meshgate-base:bookworm}
apt_etc=${MESHGATE_APT_ETC:-/etc/apt}

mirror=${MESHGATE_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(
    { sed -n 's/^URIs:[[:space:]]*//p' "$apt_etc"/sources.list.d/*.sources 2>/dev/null
      sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
        "$apt_etc"/sources.list "$apt_etc"/sources.list.d/*.list 2>/dev/null; } \
      | tr ' ' '\n' | grep -E '^https?://' | grep -v -- '-security' | grep -m1 -E '/debian/?$' || true
  )
fi
mirror=${mirror:-http://deb.debian.org/debian}
if [ "${1:-}" = --mirror ]; then
  echo "$mirror"
  exit 0
fi

if podman image exists "$image"; then
  exit 0
fi

root=$(mktemp -d /var/tmp/meshgate-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "base.sh: debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Package lists and caches are not needed at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import --quiet - "$image" >/dev/null
echo "base.sh: $image built in $(($(date +%s) - start)) s"
