#!/usr/bin/env bash
# make test-swarm: docker-compose.yml deployed as a stack on a two-node Docker Swarm made on this
# machine, exercised, then torn down.
#
# Needs root and Debian (as make test-compose). Two Docker Engines stand for two hosts: each
# dockerd runs in a network namespace of its own (entered with nsenter, so it shares the mount
# namespace and sees the run folder), with its own data root, exec root, socket and container
# cgroup parent on a tmpfs at $RUN_DIR. The namespaces are joined by veth pairs to a bridge in a
# third namespace ("lan", 10.214.0.0/24): traffic stays inside the namespaces this run made, or
# on loopback. The nodes have no default route, so an engine trying a registry fails at once
# instead of waiting for DNS. Each dockerd keeps its iptables rules (NAT for its containers) in
# its own namespace; the host's tables are checked unchanged at the end.
# Then: node 1 inits a swarm (manager), node 2 joins it (worker); the images are built on node 1
# from the base tarball and wheelhouse make test-compose caches (shared cache, separate lock and
# run folder, so both tests can run at once) and copied to node 2 (docker save | docker load);
# `docker stack deploy -c docker-compose.yml skmaker` with the swarm replica backend;
# tests/swarm/smoke.py from the lan namespace (train and batch-transform with s3:// URIs, deploy
# 2 replicas on different nodes, predict through the gateway, stop node 2's engine under load:
# its replica is replaced on node 1, a training job started meanwhile completes, failover time
# and failed requests reported as JSON); `docker stack rm`; a cleanup (also on failure, Ctrl-C
# or SIGTERM) that leaves no process, mount, namespace, link or folder behind.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE_DIR=${SKMAKER_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skmaker-compose}
# A fixed folder and fixed names, so a run killed with SIGKILL is cleaned up by the next one.
RUN_DIR=${SKMAKER_SWARM_RUN_DIR:-/tmp/skmaker-swarm}
NS=skmsw   # namespaces skmsw-lan, skmsw-n1, skmsw-n2; links skmsw-*
SUBNET_PREFIX=10.214.0
ADDRESS_POOL=10.215.0.0/16         # each engine's local networks (docker_gwbridge)
SWARM_ADDRESS_POOL=10.216.0.0/16   # the swarm's overlay networks
NODES=(n1 n2)                      # n1 is the manager; n2's engine is stopped by the test
SUITE=${SKMAKER_COMPOSE_SUITE:-bookworm}
RUN_DIR_SIZE=${SKMAKER_SWARM_RUN_DIR_SIZE:-12g}
CGROUP_PARENT_PREFIX=skmaker-swarm-test
PY=$REPO/.venv/bin/python
DOCKER_BIN=/usr/bin/docker   # Debian's client, matching its engine
BASE_IMAGE=skmaker-test/debian-python:$SUITE
SKMAKER_TEST_IMAGE=skmaker-test/skmaker:swarm
PROMETHEUS_TEST_IMAGE=skmaker-test/prometheus:swarm
WHEELHOUSE_IN_CONTEXT=build/swarm-wheelhouse
APT_PACKAGES=(docker.io debootstrap prometheus)
STACK=skmaker
# The S3-compatible store both nodes reach: SeaweedFS (`make s3-server`) in the lan namespace.
S3_BUCKET=skmaker-swarm
S3_PORT=8333
S3_ACCESS_KEY=skmaker-swarm-test
S3_SECRET_KEY=skmaker-swarm-test-secret
# `docker stack deploy` of a compose file without `version:` needs a client of 23 or newer;
# Debian bookworm's is 20.10. The first docker on the caller's PATH that is new enough.
ORIGINAL_PATH=$PATH
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

TEST_NAME=test-swarm
# shellcheck source=tests/compose/run_lib.sh
source "$REPO/tests/compose/run_lib.sh"
node_socket() { echo "unix://$RUN_DIR/$1/docker.sock"; }
on_node() { local node=$1; shift; "$DOCKER_BIN" -H "$(node_socket "$node")" "$@"; }
# The manager: images are built there (the shared functions call docker and $DOCKER_BIN).
docker() { on_node n1 "$@"; }
export DOCKER_HOST=unix://$RUN_DIR/n1/docker.sock
in_lan() { nsenter --net="/run/netns/$NS-lan" "$@"; }
# shellcheck source=tests/compose/images.sh
source "$REPO/tests/compose/images.sh"

# -- cleanup: runs on every exit, and at the start for a run that was killed -------------------

dockerd_pid() {  # dockerd_pid NODE
  local pid
  pid=$(cat "$RUN_DIR/$1/dockerd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qa -- "$RUN_DIR/$1" "/proc/$pid/cmdline" && echo "$pid"
}

run_pids() {  # every process under this run's folder, in its namespaces or its cgroups
  local pid ns
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = "$$" ] && continue
    grep -qa -- "$RUN_DIR/" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
  done
  for ns in lan "${NODES[@]}"; do
    [ -e "/run/netns/$NS-$ns" ] && ip netns pids "$NS-$ns" 2>/dev/null
  done
  cat /sys/fs/cgroup/*/"$CGROUP_PARENT_PREFIX"-*/*/cgroup.procs 2>/dev/null || true
}

cleanup_run() {
  local node pid pids dir mnt ns link
  for node in "${NODES[@]}"; do
    pid=$(dockerd_pid "$node") || continue
    log "stopping the dockerd of $node (pid $pid)"
    kill -TERM "$pid"
    wait_gone 30 "$pid" || { log "dockerd ignored SIGTERM; killing it"; kill -KILL "$pid"; }
  done
  pids=$(run_pids | sort -u)
  if [ -n "$pids" ]; then
    log "ending leftover processes of this run: $(echo $pids)"
    kill -TERM $pids 2>/dev/null
    wait_gone 10 $pids || kill -KILL $pids 2>/dev/null
    wait_gone 5 $pids
  fi
  for dir in /sys/fs/cgroup/*/"$CGROUP_PARENT_PREFIX"-*; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  findmnt -rn -o TARGET | grep -E "^$RUN_DIR(/|\$)" | sort -r | while IFS= read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  done
  for ns in lan "${NODES[@]}"; do
    if [ -e "/run/netns/$NS-$ns" ]; then ip netns delete "$NS-$ns"; fi
  done
  for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^$NS-" || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  rm -rf "$RUN_DIR" "$REPO/$WHEELHOUSE_IN_CONTEXT"
}

leftovers() {  # what a cleanup failed to remove, one per line
  run_pids | sort -u
  findmnt -rn -o TARGET | grep -E "^$RUN_DIR(/|\$)" || true
  ip netns list | grep -o "^$NS-[a-z0-9]*" || true
  ip -o link show | awk -F': ' '{print $2}' | grep "^$NS-" || true
  ls -d /sys/fs/cgroup/*/"$CGROUP_PARENT_PREFIX"-* 2>/dev/null || true
  [ ! -e "$RUN_DIR" ] || echo "$RUN_DIR"
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  stop_child
  if [ "$status" -ne 0 ] && dockerd_pid n1 >/dev/null; then
    log "the stack's services and their tasks:"
    timeout 20 "$DOCKER_BIN" -H "$(node_socket n1)" service ls 2>&1 | sed 's/^/    /'
    log "logs of the stack's services (last 30 lines each):"
    for service in control gateway trainer batch; do
      timeout 20 "$DOCKER_BIN" -H "$(node_socket n1)" service logs --no-trunc --tail 30 \
        "${STACK}_$service" 2>&1 | sed "s/^/    /"
    done
  fi
  cleanup_run
  local left
  left=$(leftovers | tr '\n' ' ')
  if [ -n "${left// /}" ]; then
    FAILURE="cleanup left behind: $left"
    log "FAILED: $FAILURE"
    [ "$status" -ne 0 ] || status=1
  fi
  if [ -f "$CACHE_DIR/swarm-iptables-before" ]; then
    if ! diff -q "$CACHE_DIR/swarm-iptables-before" <(host_iptables) >/dev/null; then
      FAILURE="the host's iptables rules changed"
      log "FAILED: $FAILURE:"
      diff "$CACHE_DIR/swarm-iptables-before" <(host_iptables) | sed 's/^/    /'
      [ "$status" -ne 0 ] || status=1
    fi
    rm -f "$CACHE_DIR/swarm-iptables-before"
  fi
  report_verdict "$status"
  exit "$status"
}

host_iptables() {
  local table
  for table in filter nat mangle raw; do
    iptables-save -t "$table" 2>/dev/null | grep -E '^(:|-A)' | sed 's/ \[[0-9:]*\]$//' | sort
  done
}

# -- steps --------------------------------------------------------------------------------------

stack_client() {  # the first docker client on the caller's PATH with `stack deploy` for us
  local candidate major
  for candidate in ${SKMAKER_STACK_DOCKER:-} $(PATH=$ORIGINAL_PATH which -a docker 2>/dev/null); do
    major=$("$candidate" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || true
    major=${major%%[!0-9]*}
    if [ -n "$major" ] && [ "$major" -ge 23 ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

make_network() {
  ip netns add "$NS-lan"
  ip -n "$NS-lan" link set lo up
  ip -n "$NS-lan" link add "$NS-br" type bridge
  ip -n "$NS-lan" addr add "$SUBNET_PREFIX.1/24" dev "$NS-br"
  ip -n "$NS-lan" link set "$NS-br" up
  local i=0 node
  for node in "${NODES[@]}"; do
    i=$((i + 1))
    ip netns add "$NS-$node"
    ip -n "$NS-$node" link set lo up
    ip link add "$NS-$node-e" type veth peer name "$NS-$node-b"
    ip link set "$NS-$node-e" netns "$NS-$node"
    ip link set "$NS-$node-b" netns "$NS-lan"
    ip -n "$NS-lan" link set "$NS-$node-b" master "$NS-br" up
    ip -n "$NS-$node" link set "$NS-$node-e" name eth0
    ip -n "$NS-$node" addr add "$SUBNET_PREFIX.1$i/24" dev eth0
    ip -n "$NS-$node" link set eth0 up
  done
}

node_address() {  # node_address NODE -> its address on the lan
  local i=0 node
  for node in "${NODES[@]}"; do
    i=$((i + 1))
    [ "$node" = "$1" ] && { echo "$SUBNET_PREFIX.1$i"; return 0; }
  done
  return 1
}

start_dockerd() {  # start_dockerd NODE
  local node=$1 dir=$RUN_DIR/$1
  mkdir -p "$dir"
  echo '{}' >"$dir/daemon.json"   # not /etc/docker/daemon.json: only these flags apply
  nsenter --net="/run/netns/$NS-$node" dockerd \
    --config-file "$dir/daemon.json" \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
    --host "$(node_socket "$node")" \
    --bridge none --default-address-pool "base=$ADDRESS_POOL,size=24" \
    --cgroup-parent "$CGROUP_PARENT_PREFIX-$node" \
    --storage-driver overlay2 --log-level warn \
    >"$dir/dockerd.log" 2>&1 9>&- &
}

wait_dockerd() {  # wait_dockerd NODE
  local end=$(($(date +%s) + 60))
  until on_node "$1" version >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { tail -20 "$RUN_DIR/$1/dockerd.log"; die "dockerd of $1 not up in 60s"; }
    sleep 0.2
  done
}

make_swarm() {
  local manager token node
  manager=$(node_address n1)
  on_node n1 swarm init --advertise-addr "$manager" --listen-addr "$manager:2377" \
    --default-addr-pool "$SWARM_ADDRESS_POOL" --dispatcher-heartbeat 1s >/dev/null
  token=$(on_node n1 swarm join-token -q worker)
  for node in "${NODES[@]:1}"; do
    on_node "$node" swarm join --token "$token" --advertise-addr "$(node_address "$node")" \
      --listen-addr "$(node_address "$node"):2377" "$manager:2377" >/dev/null
  done
  # Every engine here has the same hostname; a label names each node in the report.
  for node in "${NODES[@]}"; do
    on_node n1 node update --label-add "skmaker-test.node=$node" \
      "$(on_node "$node" info -f '{{.Swarm.NodeID}}')" >/dev/null
  done
}

copy_images() {  # the manager's images to every other node
  local node
  for node in "${NODES[@]:1}"; do
    if [ -n "$IMAGES_TARBALL" ]; then   # loaded from the cache: the same file again
      in_background "$DOCKER_BIN" -H "$(node_socket "$node")" load -q -i "$IMAGES_TARBALL" >/dev/null
      on_node "$node" tag "$CACHED_SKMAKER_TAG" "$SKMAKER_TEST_IMAGE"
      on_node "$node" tag "$CACHED_PROMETHEUS_TAG" "$PROMETHEUS_TEST_IMAGE"
    else
      in_background bash -c "'$DOCKER_BIN' -H '$(node_socket n1)' save '$SKMAKER_TEST_IMAGE' \
        '$PROMETHEUS_TEST_IMAGE' | '$DOCKER_BIN' -H '$(node_socket "$node")' load -q" >/dev/null
    fi
  done
}

s3_store_available() {  # this checkout has the S3 artifact store and the test S3 server
  grep -q '^s3-server:' "$REPO/Makefile" && grep -q 'artifact_store' "$REPO/services/control/config.py"
}

start_s3_server() {  # SeaweedFS on the lan's address (its own namespace: default ports are free)
  local dir=$RUN_DIR/s3 end
  make -C "$REPO" -s s3-server >"$RUN_DIR/s3-install.log" 2>&1 \
    || { tail -20 "$RUN_DIR/s3-install.log"; die "make s3-server"; }
  mkdir -p "$dir/data"
  printf '{"identities": [{"name": "skmaker-swarm-test", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$dir/identities.json"
  in_lan "$REPO/.venv-s3server/bin/weed" mini -dir="$dir/data" -ip="$SUBNET_PREFIX.1" \
    -ip.bind="$SUBNET_PREFIX.1" -s3.port="$S3_PORT" -s3.config="$dir/identities.json" \
    -admin.ui=false -webdav=false -bucket="$S3_BUCKET" >"$dir/weed.log" 2>&1 9>&- &
  export AWS_ENDPOINT_URL=http://$SUBNET_PREFIX.1:$S3_PORT AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
  export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY AWS_DEFAULT_REGION=us-east-1
  end=$(($(date +%s) + 90))
  until in_lan env S3_BUCKET="$S3_BUCKET" "$PY" -c \
      'import boto3, os; boto3.client("s3").head_bucket(Bucket=os.environ["S3_BUCKET"])' \
      >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { tail -20 "$dir/weed.log"; die "SeaweedFS not serving $S3_BUCKET in 90s"; }
    sleep 0.5
  done
}

wait_stack() {
  local end=$(($(date +%s) + 180)) pending
  while :; do
    pending=$(on_node n1 service ls --filter "label=com.docker.stack.namespace=$STACK" \
      --format '{{.Name}} {{.Replicas}}' | awk '{split($2, r, "/"); if (r[1] != r[2]) print}')
    [ -z "$pending" ] && return 0
    [ "$(date +%s)" -lt "$end" ] || { echo "$pending"; die "the stack did not converge in 180s"; }
    sleep 1
  done
}

# -- main ---------------------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || die "needs root (it starts its own dockerds)"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/swarm.lock"
flock -w 600 9 || die "another test-swarm holds $CACHE_DIR/swarm.lock"
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if compgen -G "$RUN_DIR*" >/dev/null || ip netns list | grep -q "^$NS-"; then
  log "cleaning up what an earlier run left"
  cleanup_run
fi
phase "installing what is missing"
install_packages
STACK_DOCKER=$(stack_client) || die "no docker client >= 23 for docker stack deploy (SKMAKER_STACK_DOCKER names one)"
host_iptables >"$CACHE_DIR/swarm-iptables-before"
phase "two engines in network namespaces of their own"
mkdir -p "$RUN_DIR"
mount -t tmpfs -o "size=$RUN_DIR_SIZE,mode=0755" skmaker-swarm "$RUN_DIR"
make_network
for node in "${NODES[@]}"; do start_dockerd "$node"; done
for node in "${NODES[@]}"; do wait_dockerd "$node"; done
log "dockerd $(on_node n1 version -f '{{.Server.Version}}') on ${NODES[*]}"
phase "swarm: n1 manager, n2 worker"
make_swarm
on_node n1 node ls --format '{{.ID}} {{.Status}} {{.ManagerStatus}}' | sed 's/^/    /'
passed "two engines in one swarm"
phase "base image $BASE_IMAGE"
build_base_image
phase "wheelhouse"
build_wheelhouse
phase "building $SKMAKER_TEST_IMAGE and $PROMETHEUS_TEST_IMAGE on n1 (or loading make test-compose's)"
SAVE_IMAGES=1 build_images
phase "copying the images to the other nodes"
copy_images
SMOKE_S3_ARGS=()
if s3_store_available; then
  phase "S3-compatible store: SeaweedFS at $SUBNET_PREFIX.1:$S3_PORT, bucket $S3_BUCKET"
  start_s3_server
  # Passed to the control by the compose file; workers and replicas get presigned URLs.
  export SKMAKER_CONTROL_ARTIFACT_STORE=s3://$S3_BUCKET
  SMOKE_S3_ARGS=(--s3-bucket "$S3_BUCKET")
else
  log "this checkout has no S3 artifact store: the stack keeps artifacts on the control's volume"
fi
phase "docker stack deploy -c docker-compose.yml $STACK ($STACK_DOCKER)"
export SKMAKER_IMAGE=$SKMAKER_TEST_IMAGE PROMETHEUS_IMAGE=$PROMETHEUS_TEST_IMAGE
export SKMAKER_REPLICA_BACKEND=swarm SKMAKER_NETWORK=skmaker
export SKMAKER_CONTROL_PORT=50051 SKMAKER_GATEWAY_PORT=50052 PROMETHEUS_PORT=9090
export DOCKER_SOCKET=$RUN_DIR/n1/docker.sock
DOCKER_GID=$(stat -c %g "$DOCKER_SOCKET")
export DOCKER_GID
DOCKER_HOST=$(node_socket n1) in_background "$STACK_DOCKER" stack deploy --detach=true \
  --resolve-image never -c "$REPO/docker-compose.yml" "$STACK" >"$RUN_DIR/stack-deploy.log" 2>&1 \
  || { cat "$RUN_DIR/stack-deploy.log"; die "docker stack deploy"; }
wait_stack
on_node n1 service ls --format '{{.Name}} {{.Replicas}} {{.Ports}}' | sed 's/^/    /'
passed "docker stack deploy: every service at its replica count"
phase "smoke test from the lan namespace"
manager=$(node_address n1)
SKMAKER_GATEWAY_ADDRESS=$manager:50052 in_background nsenter --net="/run/netns/$NS-lan" \
  "$PY" "$REPO/tests/swarm/smoke.py" --control "$manager:50051" \
  --docker-url "$(node_socket n1)" --stop-pidfile "$RUN_DIR/n2/dockerd.pid" \
  --report "$RUN_DIR/report.json" "${SMOKE_S3_ARGS[@]}"
passed "smoke test: $(cat "$RUN_DIR/report.json")"
phase "docker stack rm $STACK"
DOCKER_HOST=$(node_socket n1) in_background "$STACK_DOCKER" stack rm "$STACK" >/dev/null
end=$(($(date +%s) + 60))
until [ -z "$(on_node n1 service ls -q)" ] && [ -z "$(on_node n1 ps -q)" ]; do
  [ "$(date +%s)" -lt "$end" ] || die "docker stack rm left: $(on_node n1 service ls; on_node n1 ps -a)"
  sleep 0.5
done
passed "docker stack rm left no service or container (replica services included)"
phase "stopping the engines and cleaning up"
