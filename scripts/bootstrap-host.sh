#!/usr/bin/env bash
# Install and start what celerykit's stack and tests need on a Debian host that lacks it:
# Docker engine, the compose v2 plugin and the Debian base image the Dockerfiles build FROM;
# with --test-tools also the checkers the tests and benchmarks use (testssl.sh 3.2, wrk, redis-server).
# Idempotent and quiet when everything is already there. Run as root.
#
#   CELERYKIT_BASE_IMAGE   base image tag the Dockerfiles use (default debian:bookworm-slim)
#   CELERYKIT_DEBIAN_MIRROR mirror for debootstrap when the image must be built offline
set -euo pipefail

BASE_IMAGE=${CELERYKIT_BASE_IMAGE:-debian:bookworm-slim}
MIRROR=${CELERYKIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
DOCKERD_LOG=/var/log/celerykit-dockerd.log

say() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Download one package of Debian 13 (trixie) into DIR through a throw-away apt state, leaving the
# host's sources alone. Used for the few tools Debian 12 ships too old.
trixie_updated=
trixie_deb() {
  local package=$1 dir=$2
  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  echo "deb ${MIRROR} trixie main" >"$dir/trixie.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$dir/trixie.list" -o "Dir::Etc::SourceParts=-"
                  -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives"
                  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")
  [ -n "$trixie_updated" ] || { apt-get "${apt_opts[@]}" update -qq; trixie_updated=1; }
  (cd "$dir" && apt-get "${apt_opts[@]}" download "$package" >/dev/null)
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Docker engine ---------------------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1; then
  say "installing the Docker engine (docker.io)"
  apt_install docker.io iptables
fi

if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    say "starting dockerd (log: $DOCKERD_LOG)"
    nohup dockerd >"$DOCKERD_LOG" 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { say "dockerd did not come up; see $DOCKERD_LOG"; exit 1; }
fi

# Compose v2 ------------------------------------------------------------------------------
# Debian 12 ships only compose v1. Debian 13's docker-compose package carries the v2 plugin,
# whose binary runs on Debian 12.
if ! docker compose version >/dev/null 2>&1; then
  say "installing the compose v2 plugin from Debian trixie's docker-compose package"
  trixie_deb docker-compose "$tmp"
  dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN_DIR/docker-compose"
  docker compose version >/dev/null
fi

# Base image ------------------------------------------------------------------------------
# Online machines pull it; air-gapped ones build the same tag from a Debian mirror.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if ! timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    say "no registry reachable: building $BASE_IMAGE with debootstrap from $MIRROR"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    suite=${BASE_IMAGE#*:}; suite=${suite%%-*}
    root=$(mktemp -d)
    debootstrap --variant=minbase "$suite" "$root" "$MIRROR" >/dev/null
    tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
  fi
fi

# Test tools ------------------------------------------------------------------------------
# testssl.sh rates servers from 3.2 on (Debian 12 has 3.0): trixie's package is plain shell and
# data, and its dependencies are in Debian 12. wrk drives the benchmarks. promtool and amtool
# (the same Debian 12 packages the monitoring image and roles install) check and test the alert
# rules and configurations: only the two binaries are unpacked, so no Prometheus service starts here.
# The unit tests start their own throw-away redis-server (tests/unit/test_atomic_fetch.py), unpacked
# the same way so that no Redis service starts here either: Debian 12's redis-server package holds
# only a symlink, the binary is redis-tools' redis-check-rdb (it runs as a server under any other
# name); of the libraries it links, liblzf1 and libjemalloc2 are often missing.
if [ "${1:-}" = --test-tools ]; then
  command -v wrk >/dev/null 2>&1 || apt_install wrk
  # tcpdump: the capture of Redis's traffic (tests/stack/test_attack_surface.py), in its network namespace.
  command -v tcpdump >/dev/null 2>&1 || apt_install tcpdump
  # Headless Chromium for the browser test (tests/stack/test_browser.py).
  command -v chromium >/dev/null 2>&1 || { say "installing chromium (headless browser)"; apt_install chromium; }
  if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
    say "unpacking promtool and amtool from Debian's prometheus packages"
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    (cd "$tmp" && apt-get download prometheus prometheus-alertmanager >/dev/null)
    for deb in "$tmp"/prometheus_*.deb "$tmp"/prometheus-alertmanager_*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
    install -m 0755 "$tmp/root/usr/bin/promtool" "$tmp/root/usr/bin/amtool" /usr/local/bin/
  fi
  if ! redis-server --version >/dev/null 2>&1; then  # missing, or unpacked without its libraries
    say "unpacking redis-server from Debian's redis-tools package"
    apt_install libatomic1 libjemalloc2 liblzf1 libssl3 libsystemd0
    (cd "$tmp" && apt-get download redis-tools >/dev/null)
    dpkg-deb -x "$tmp"/redis-tools_*.deb "$tmp/redis"
    install -m 0755 "$tmp/redis/usr/bin/redis-check-rdb" /usr/local/bin/redis-server
    redis-server --version >/dev/null
  fi
  if ! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' testssl.sh 2>/dev/null || echo 0)" ge 3.2; then
    say "installing testssl.sh 3.2 from Debian trixie"
    trixie_deb testssl.sh "$tmp"
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tmp"/testssl.sh_*.deb >/dev/null
  fi
fi
