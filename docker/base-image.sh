#!/usr/bin/env bash
# Builds the project's Debian base image offline, from Debian packages alone, for machines where no
# container registry answers (no `FROM python:3.11-slim`):
#   debootstrap --variant=minbase bookworm <rootfs> <this machine's Debian mirror>, then docker import.
# Its Python is Debian's 3.11, the same minor version as python:3.11-slim, so the Dockerfiles in
# docker/ build on either base (ARG PYTHON_IMAGE). Where a registry answers, skip this and pass
# PYTHON_IMAGE=python:3.11.7-slim-bookworm to `make images`.
#
#   docker/base-image.sh IMAGE [WORKDIR]     (skips the build when IMAGE already exists; FORCE=1 rebuilds)
set -euo pipefail

IMAGE=${1:?usage: $0 IMAGE [WORKDIR]}
WORKDIR=${2:-build/base-image}
SUITE=${SUITE:-bookworm}
PACKAGES=${PACKAGES:-python3,python3-venv,ca-certificates}

if [[ -z ${FORCE:-} ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base-image.sh: $IMAGE exists (FORCE=1 rebuilds)" >&2
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap missing (docker/engine.sh up installs it)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "base-image.sh: debootstrap needs root" >&2; exit 1; }

# The mirror this machine's apt already uses (deb822 .sources first, then one-line .list files),
# so that the image comes from the same place as the host's own packages.
mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v suite="$SUITE" '
            /^URIs:/ {uri=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==suite) ok=1}
            /^$/ {if (ok && uri ~ /debian\/?$/) {print uri; exit} ok=0; uri=""}
            END {if (ok && uri ~ /debian\/?$/) print uri}' "$f" | head -n1
    done
    grep -hsE "^deb .* $SUITE( |$)" /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' || true
}
MIRROR=${MIRROR:-$(mirror | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

ROOTFS=$WORKDIR/rootfs
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"
start=$(date +%s)
echo "base-image.sh: debootstrap $SUITE from $MIRROR into $ROOTFS" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORKDIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/debootstrap.log" >&2; exit 1; }
# Smaller layer: package caches and docs are not needed at run time.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE $MIRROR" \
    - "$IMAGE" >/dev/null
rm -rf "$ROOTFS"
echo "base-image.sh: $IMAGE built in $(( $(date +%s) - start ))s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')" >&2
