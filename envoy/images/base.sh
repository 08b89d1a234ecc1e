#!/usr/bin/env bash
# Builds the `meshgate-base:bookworm` image once: a Debian bookworm root filesystem made with
# `debootstrap --variant=minbase` from the Debian mirror apt already uses, imported with
# `podman import`. No base image is pulled from a container registry. Skipped when the image
# exists, so `make setup` can call it every time.
set -euo pipefail

image=${MESHGATE_BASE_IMAGE:-meshgate-base:bookworm}
if podman image exists "$image"; then
  exit 0
fi

# The first Debian archive apt is configured with (deb822 `URIs:` or one-line `deb` entries).
mirror=$(
  { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; } \
  | tr ' ' '\n' | grep -v -- '-security' | grep -m1 '/debian/\?$' || true
)
if [ -z "$mirror" ]; then
  echo "base.sh: no Debian mirror found in apt's sources" >&2
  exit 1
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
