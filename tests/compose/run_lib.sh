# Shared by tests/compose/run.sh and tests/swarm/run.sh (sourced): logging, the failure summary,
# running a long command as a waitable child, waiting for processes to end, and installing the
# Debian packages the tests need. The caller defines TEST_NAME (the log prefix), CACHE_DIR and
# APT_PACKAGES before sourcing it.

started_at=$(date +%s)
phase_started_at=$started_at
log() { printf '[%s %4ss] %s\n' "$TEST_NAME" "$(($(date +%s) - started_at))" "$*"; }
phase() {
  local now; now=$(date +%s)
  log "$* (previous phase $((now - phase_started_at))s)"
  phase_started_at=$now
}
PASSED_CHECKS=0
passed() { PASSED_CHECKS=$((PASSED_CHECKS + 1)); log "ok: $*"; }
# What failed, repeated as the run's last line (CI shows only a log's tail, after the logs).
FAILURE=""
die() { FAILURE=$*; log "FAILED: $*"; exit 1; }

# The run's last lines: its verdict and the count of checks passed.
report_verdict() {  # report_verdict STATUS
  if [ "$1" -eq 0 ]; then
    log "PASSED in $(($(date +%s) - started_at))s; everything it started or made is gone"
    echo "$TEST_NAME: $PASSED_CHECKS passed, 0 failed"
  else
    log "FAILED (exit $1) after $(($(date +%s) - started_at))s${FAILURE:+: $FAILURE}; cleaned up"
    echo "$TEST_NAME: $PASSED_CHECKS passed, 1 failed"
  fi
}

# Runs a long command as a child and waits for it: bash runs traps only between commands, and
# `wait` returns at once on a signal, so Ctrl-C or SIGTERM reaches on_exit without delay.
CHILD=""
in_background() {
  local status=0
  "$@" 9>&- &   # fd 9 holds the run lock: children must not keep it past this run
  CHILD=$!
  wait "$CHILD" || status=$?
  CHILD=""
  return "$status"
}

stop_child() {  # ends the command in_background was waiting for when the run was interrupted
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null
    wait_gone 10 "$CHILD" || kill -KILL "$CHILD" 2>/dev/null
  fi
}

wait_gone() {  # wait_gone SECONDS PID...: true once none of the PIDs runs any more
  local end=$(($(date +%s) + $1)); shift
  local pid alive
  while :; do
    alive=""
    for pid in "$@"; do [ -d "/proc/$pid" ] && alive=1; done
    [ -z "$alive" ] && return 0
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}

install_packages() {  # the APT_PACKAGES not installed yet, from Debian's archive
  local missing=() package
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  # Keep the packages' init scripts from starting a system dockerd or prometheus.
  local made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local status=0 install_log=$CACHE_DIR/apt-install-$TEST_NAME.log
  { apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$install_log" 2>&1 || status=$?
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || { tail -20 "$install_log"; die "apt-get install"; }
}
