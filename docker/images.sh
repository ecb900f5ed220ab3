#!/usr/bin/env bash
# `make images`: the project's images, built here from Debian packages and PyPI alone.
#
#   docker/images.sh [IMAGE_KIND...]     kinds: base cpu launcher postgres s3 cuda
#                                        (default: base cpu launcher postgres s3)
# Environment (the Makefile passes these):
#   IMAGE_REPO, IMAGE_TAG     names: $IMAGE_REPO:$IMAGE_TAG-<kind>
#   PYTHON_IMAGE              the base every Dockerfile builds FROM. Default: the offline
#                             Debian base (docker/base-image.sh), built when missing. Where a
#                             registry answers: PYTHON_IMAGE=python:3.11.7-slim-bookworm.
#   TORCH_VERSION             the torch release in the images (default 2.13.0)
# pip in the build stages gets this machine's pip settings (CA bundle, the local torch wheel),
# staged in docker/pip-site/ (see its README); none of it reaches a final image.
# Prints each image's build time and size.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_REPO=${IMAGE_REPO:-clearrec}
IMAGE_TAG=${IMAGE_TAG:-0.1.0}
BASE_IMAGE=${BASE_IMAGE:-$IMAGE_REPO-base:bookworm}
PYTHON_IMAGE=${PYTHON_IMAGE:-$BASE_IMAGE}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
KINDS=("$@")
((${#KINDS[@]})) || KINDS=(base cpu launcher postgres s3)
PIP=${PIP:-$(command -v pip3 || command -v pip || true)}

docker/engine.sh up

# pip's settings on this machine, as `pip config list` shows them (global.cert='...', ...).
pip_setting() {
    [[ -n $PIP ]] || return 0
    "$PIP" config list 2>/dev/null | sed -nE "s/^[a-z:]+\.$1='(.*)'$/\1/p" | head -n1
}

stage_pip_site() {
    local site=docker/pip-site cert find_links wheel
    find "$site" -mindepth 1 ! -name README.md -delete
    mkdir -p "$site/wheels"
    {
        echo "# Staged by docker/images.sh from this machine's pip settings; build stage only."
        echo "[global]"
        cert=$(pip_setting cert)
        if [[ -n $cert && -f $cert ]]; then
            cp "$cert" "$site/ca.crt"
            echo "cert = /tmp/pip-site/ca.crt"
        fi
        find_links=$(pip_setting find-links)
        for dir in $find_links; do
            [[ -d $dir ]] || continue
            # Only torch's wheel for the images' Python (3.11): the folder may hold much more.
            for wheel in "$dir"/torch-"$TORCH_VERSION"*-cp311-*linux*x86_64.whl; do
                [[ -f $wheel ]] && { ln -f "$wheel" "$site/wheels/" 2>/dev/null || cp "$wheel" "$site/wheels/"; }
            done
        done
        echo "find-links = /tmp/pip-site/wheels"
    } >"$site/pip.conf"
}

TORCH_ARGS=()
stage_pip_site
if compgen -G "docker/pip-site/wheels/torch-*.whl" >/dev/null; then
    # The local wheel is found through find-links; PyPI serves torch's own dependencies.
    TORCH_ARGS=(--build-arg TORCH_INDEX_URL=https://pypi.org/simple)
fi

report() {  # kind seconds
    local size
    size=$(docker image inspect -f '{{.Size}}' "$3" | awk '{printf "%.0f MB", $1/1e6}')
    printf 'images.sh: %-9s %-32s %4ss  %s\n' "$1" "$3" "$2" "$size" | tee -a build/images.log >&2
}

build() {  # kind dockerfile image [args...]
    local kind=$1 file=$2 image=$3 start
    shift 3
    start=$(date +%s)
    echo "images.sh: building $image from $file (base $PYTHON_IMAGE)" >&2
    docker build -f "$file" --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" \
        --build-arg TORCH_VERSION="$TORCH_VERSION" "$@" -t "$image" . >"build/image-$kind.log" 2>&1 \
        || { tail -n 40 "build/image-$kind.log" >&2; echo "images.sh: $image failed (build/image-$kind.log)" >&2; exit 1; }
    report "$kind" $(($(date +%s) - start)) "$image"
}

mkdir -p build
for kind in "${KINDS[@]}"; do
    case $kind in
        base)
            if [[ $PYTHON_IMAGE == "$BASE_IMAGE" ]]; then
                start=$(date +%s)
                docker/base-image.sh "$BASE_IMAGE" build/base-image
                report base $(($(date +%s) - start)) "$BASE_IMAGE"
            fi ;;
        cpu) build cpu docker/Dockerfile.cpu "$IMAGE_REPO:$IMAGE_TAG-cpu" "${TORCH_ARGS[@]}" ;;
        launcher) build launcher docker/Dockerfile.cpu "$IMAGE_REPO:$IMAGE_TAG-launcher" "${TORCH_ARGS[@]}" \
            --build-arg EXTRAS=kfp ;;
        postgres) build postgres docker/Dockerfile.postgres "$IMAGE_REPO:$IMAGE_TAG-postgres" ;;
        s3) build s3 docker/Dockerfile.s3 "$IMAGE_REPO:$IMAGE_TAG-s3" ;;
        cuda) build cuda docker/Dockerfile.cuda "$IMAGE_REPO:$IMAGE_TAG-cuda" ;;
        *) echo "images.sh: unknown image kind $kind (base cpu launcher postgres s3 cuda)" >&2; exit 2 ;;
    esac
done
