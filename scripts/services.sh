#!/usr/bin/env bash
# Make PostgreSQL and Redis run on 127.0.0.1 for kaas's tests, benchmarks and chaos runs, on a machine that
# may have neither installed nor started: installs Debian's `postgresql` and `redis-server` when missing,
# lets the `postgres` role in without a password from loopback only (trust on 127.0.0.1/32 and ::1/128,
# added once, marked so a second run leaves the file alone), and starts both when their ports are closed.
# Idempotent: with both running it returns at once. Sourced by scripts/test.sh, or run on its own.
set -euo pipefail

services_log() { printf '[services.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
services_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ "$(id -u)" = 0 ]; then SERVICES_SUDO=""; else SERVICES_SUDO="sudo"; fi

services_apt_install() {
  services_log "installing Debian packages ($*)"
  $SERVICES_SUDO apt-get update -qq >/dev/null
  # policy-rc.d answers 101 so the packages' own init scripts do not start a service we configure first
  printf '#!/bin/sh\nexit 101\n' | $SERVICES_SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SERVICES_SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SERVICES_SUDO apt-get install -y -qq "$@" >/dev/null
  $SERVICES_SUDO rm -f /usr/sbin/policy-rc.d
}

start_postgresql() {
  services_port_open 5432 && return 0
  command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] || services_apt_install postgresql
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    $SERVICES_SUDO pg_createcluster "$version" main >/dev/null
  fi
  local hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q '# kaas tests' "$hba"; then
    services_log "PostgreSQL $version: trusting the postgres role on loopback ($hba)"
    # pg_hba is read top-down and the first match wins, so the trust lines go first
    { printf '# kaas tests: the postgres role from loopback without a password\n'
      printf 'host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n'
      cat "$hba"; } > "$hba.kaas"
    $SERVICES_SUDO install -o postgres -g postgres -m 0640 "$hba.kaas" "$hba"
    rm -f "$hba.kaas"
  fi
  services_log "starting PostgreSQL $version"
  $SERVICES_SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_redis() {
  services_port_open 6379 && return 0
  command -v redis-server >/dev/null 2>&1 || services_apt_install redis-server
  services_log "starting Redis"
  $SERVICES_SUDO mkdir -p /var/lib/redis /var/log/redis
  $SERVICES_SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/kaas.log
}

start_services() {
  start_postgresql
  start_redis
  for _ in $(seq 1 60); do
    services_port_open 5432 && services_port_open 6379 && return 0
    sleep 0.5
  done
  services_log "PostgreSQL (5432) or Redis (6379) did not open its port within 30 s"
  return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  start_services
fi
