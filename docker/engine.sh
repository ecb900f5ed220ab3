#!/usr/bin/env bash
# The one owner of the container engine for `make images`, the cluster targets and CI.
#
#   docker/engine.sh up      make sure an engine answers: use the one that does; otherwise install
#                            docker.io (+ debootstrap, which `make images` needs) with apt-get when
#                            dockerd is missing, start dockerd as root in the background, wait for it.
#   docker/engine.sh down    stop dockerd only if this script started it (its pid file says so);
#                            an engine someone else started is never touched.
#   docker/engine.sh status  say whether an engine answers and whether it is ours.
#
# Where no engine can start, it says so loudly and exits non-zero: callers (CI) fail, never skip.
set -euo pipefail

STATE_DIR=${CLEARREC_ENGINE_STATE:-/var/run/clearrec-engine}
PID_FILE=$STATE_DIR/dockerd.pid
LOG_FILE=$STATE_DIR/dockerd.log
WAIT_S=${CLEARREC_ENGINE_WAIT_S:-120}

answers() { docker info >/dev/null 2>&1; }

ours() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

die() { echo "engine.sh: ERROR: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "dockerd/debootstrap missing and not root: cannot apt-get install ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "dockerd missing and no apt-get to install it"
    echo "engine.sh: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

up() {
    if answers; then
        install_packages  # debootstrap may still be missing
        echo "engine.sh: engine answers$(ours && echo ' (started by engine.sh)' || echo ' (not ours; left alone)')" >&2
        return 0
    fi
    install_packages
    [[ $(id -u) == 0 ]] || die "no engine answers and not root: cannot start dockerd"
    mkdir -p "$STATE_DIR"
    echo "engine.sh: starting dockerd (log: $LOG_FILE)" >&2
    nohup dockerd --pidfile "$STATE_DIR/dockerd.own.pid" >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    local t=0
    until answers; do
        ours || { tail -n 30 "$LOG_FILE" >&2; rm -f "$PID_FILE"; die "dockerd exited before answering"; }
        ((t >= WAIT_S)) && { tail -n 30 "$LOG_FILE" >&2; die "dockerd did not answer within ${WAIT_S}s"; }
        sleep 1; t=$((t + 1))
    done
    echo "engine.sh: engine answers after ${t}s" >&2
}

down() {
    if ! ours; then
        echo "engine.sh: no engine started by engine.sh is running; nothing stopped" >&2
        return 0
    fi
    local pid; pid=$(cat "$PID_FILE")
    echo "engine.sh: stopping dockerd $pid (started by engine.sh)" >&2
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    rm -f "$PID_FILE"
}

status() {
    if answers; then echo "answers$(ours && echo ' (ours)' || echo ' (not ours)')"; else echo "no engine"; return 1; fi
}

case ${1:-up} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up|down|status" ;;
esac
