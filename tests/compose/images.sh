# Shared by tests/compose/run.sh and tests/swarm/run.sh (sourced): the base image standing in
# for python:3.11-slim, the wheelhouse, and the skmaker and Prometheus images built from them.
# The caller defines REPO, PY, SUITE, CACHE_DIR, RUN_DIR, BASE_IMAGE, SKMAKER_TEST_IMAGE,
# PROMETHEUS_TEST_IMAGE, WHEELHOUSE_IN_CONTEXT, DOCKER_BIN and the functions log, die,
# in_background and docker (the engine the images are built in). The base tarball and the
# wheelhouse are cached in $CACHE_DIR, keyed by what they are made from, so both tests reuse them.

debian_mirror() {
  # The first apt source (deb822 or one-line) that serves $SUITE itself.
  "$PY" - "$SUITE" <<'EOF'
import glob, sys
suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in open(path).read().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines()
                      if ":" in line and not line.startswith(("#", " ")))
        if suite in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
            print(fields["URIs"].split()[0]); sys.exit(0)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = [w for w in line.split() if not w.startswith("[")] if "]" not in line else \
            line.split("]", 1)[0].split()[:1] + line.split("]", 1)[1].split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            print(words[1]); sys.exit(0)
sys.exit(f"no apt source serves {suite}")
EOF
}

# The base image stands in for python:3.11-slim: Debian with CPython in /usr/local. Debian
# bookworm's own python3.11 (3.11.2) predates tarfile's extraction filters (3.11.4), which
# skmaker's archive code uses, so the interpreter .venv is built on is copied in instead (its
# standard library without site-packages), with the shared libraries its modules link to.
# haproxy (the gateway's data plane) is in the base already because builds here have no network:
# the Dockerfile installs it with apt-get only when the base lacks it. debootstrap configures
# packages under a policy-rc.d that forbids starting services, so no system haproxy is started.
BASE_PACKAGES=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,liblzma5,libbz2-1.0,zlib1g,libexpat1,libuuid1,libreadline8,libncursesw6,libcrypt1,libnsl2,libtirpc3,haproxy

install_python() {  # install_python ROOTFS: copy .venv's base interpreter into ROOTFS/usr/local
  local rootfs=$1 prefix version
  prefix=$("$PY" -c 'import sys; print(sys.base_prefix)')
  version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib"
  cp -a "$prefix/bin/python$version" "$rootfs/usr/local/bin/"
  ln -sf "python$version" "$rootfs/usr/local/bin/python3"
  ln -sf python3 "$rootfs/usr/local/bin/python"
  cp -a "$prefix"/lib/libpython3*.so* "$rootfs/usr/local/lib/"
  tar -C "$prefix/lib" -c --exclude="python$version/site-packages/*" \
    --exclude="python$version/test" --exclude="python$version/idlelib" \
    --exclude="python$version/tkinter" --exclude="python$version/turtledemo" \
    --exclude="*.a" "python$version" | tar -C "$rootfs/usr/local/lib" -x
  chroot "$rootfs" /sbin/ldconfig
  chroot "$rootfs" /usr/local/bin/python3 -c \
    'import bz2, ctypes, lzma, sqlite3, ssl, tarfile, venv, zlib; tarfile.FilterError'
}

build_base_image() {
  local mirror key tarball rootfs
  mirror=$(debian_mirror)
  key=$( (echo "$SUITE $mirror $BASE_PACKAGES"; "$PY" -c 'import sys; print(sys.base_prefix, sys.version)') \
    | sha256sum | cut -c1-12)
  tarball=$CACHE_DIR/base-$SUITE-$key.tar
  BASE_TARBALL=$tarball   # part of the images' cache key
  if [ ! -s "$tarball" ]; then
    log "debootstrap $SUITE from $mirror (cached afterwards in $tarball)"
    rootfs=$RUN_DIR/rootfs
    in_background debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" \
      "$mirror" >"$RUN_DIR/debootstrap.log" 2>&1 \
      || { tail -20 "$RUN_DIR/debootstrap.log"; die debootstrap; }
    install_python "$rootfs"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

build_wheelhouse() {
  local key wheelhouse
  key=$(cat "$REPO/requirements.lock" "$REPO/pyproject.toml" "$REPO/clients/python/pyproject.toml" \
    "$REPO"/runtimes/*.lock | sha256sum | cut -c1-12)
  wheelhouse=$CACHE_DIR/wheelhouse-$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')-$key
  WHEELHOUSE_DIR=$wheelhouse   # part of the images' cache key
  if [ ! -d "$wheelhouse" ]; then
    log "pip wheel: the image's dependencies (cached afterwards in $wheelhouse)"
    rm -rf "$wheelhouse.tmp"
    in_background "$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$wheelhouse.tmp" \
      -c "$REPO/requirements.lock" "$REPO/clients/python" "$REPO" \
      "setuptools==$(grep -i '^setuptools==' "$REPO/requirements.lock" | cut -d= -f3)" \
      >"$RUN_DIR/pip-wheel.log" 2>&1 || { tail -20 "$RUN_DIR/pip-wheel.log"; die "pip wheel"; }
    rm -f "$wheelhouse.tmp"/skmaker-*.whl "$wheelhouse.tmp"/skmaker_services-*.whl
    # setuptools builds the client in its tree; a build/ copy of skmaker there confuses mypy.
    rm -rf "$REPO/clients/python/build"
    log "pip wheel: the script runtimes' wheels (sdists built once, into .venv-runtimes/wheelhouse)"
    in_background "$PY" -m services.runtime.script_runtimes wheels --all \
      --wheelhouse "$REPO/.venv-runtimes/wheelhouse" >>"$RUN_DIR/pip-wheel.log" 2>&1 \
      || { tail -20 "$RUN_DIR/pip-wheel.log"; die "script runtime wheels"; }
    in_background "$PY" -m services.runtime.script_runtimes wheels --all --no-index \
      --find-links "$REPO/.venv-runtimes/wheelhouse" --wheelhouse "$wheelhouse.tmp" \
      >>"$RUN_DIR/pip-wheel.log" 2>&1 || { tail -20 "$RUN_DIR/pip-wheel.log"; die "runtime wheels"; }
    mv "$wheelhouse.tmp" "$wheelhouse"
  fi
  rm -rf "${REPO:?}/$WHEELHOUSE_IN_CONTEXT"
  mkdir -p "$(dirname "$REPO/$WHEELHOUSE_IN_CONTEXT")"
  cp -al "$wheelhouse" "$REPO/$WHEELHOUSE_IN_CONTEXT" 2>/dev/null || cp -a "$wheelhouse" "$REPO/$WHEELHOUSE_IN_CONTEXT"
}

# The built images are kept in $CACHE_DIR/images-<key>.tar when the caller sets
# SAVE_IMAGES=1 (make test-compose does), keyed by everything the build reads: the Dockerfiles,
# the base tarball, the wheelhouse and the source files in the build context (tracked, changed
# or new). A later run with the same key loads them instead of building (make test-swarm, right
# after make test-compose in CI). Only the newest such tarball is kept.
IMAGE_CONTEXT_PATHS=(services clients/python runtimes requirements.lock pyproject.toml deploy/docker)
CACHED_SKMAKER_TAG=skmaker-test/skmaker:cached
CACHED_PROMETHEUS_TAG=skmaker-test/prometheus:cached
IMAGES_TARBALL=""

images_key() {  # prints the key, or fails outside a git checkout
  git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 || return 1
  {
    echo "$BASE_TARBALL $WHEELHOUSE_DIR $(cat /usr/bin/prometheus | sha256sum)"
    cat "$REPO/tests/compose/prometheus.Dockerfile"
    git -C "$REPO" ls-files -s -- "${IMAGE_CONTEXT_PATHS[@]}"
    git -C "$REPO" diff HEAD -- "${IMAGE_CONTEXT_PATHS[@]}"
    git -C "$REPO" ls-files -o --exclude-standard -z -- "${IMAGE_CONTEXT_PATHS[@]}" \
      | (cd "$REPO" && xargs -0 -r sha256sum)
  } | sha256sum | cut -c1-16
}

build_images() {
  local key="" tarball=""
  if key=$(images_key); then
    tarball=$CACHE_DIR/images-$key.tar
    if [ -s "$tarball" ]; then
      log "loading the images built by an earlier run from $tarball"
      docker load -q -i "$tarball" >/dev/null
      docker tag "$CACHED_SKMAKER_TAG" "$SKMAKER_TEST_IMAGE"
      docker tag "$CACHED_PROMETHEUS_TAG" "$PROMETHEUS_TEST_IMAGE"
      IMAGES_TARBALL=$tarball
      return 0
    fi
  fi
  in_background "$DOCKER_BIN" build -q --network none -f "$REPO/deploy/docker/Dockerfile" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELHOUSE="$WHEELHOUSE_IN_CONTEXT" \
    -t "$SKMAKER_TEST_IMAGE" "$REPO" >/dev/null
  local context=$RUN_DIR/prometheus-context
  mkdir -p "$context"
  cp /usr/bin/prometheus /usr/bin/promtool "$context/"
  in_background "$DOCKER_BIN" build -q --network none -f "$REPO/tests/compose/prometheus.Dockerfile" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$PROMETHEUS_TEST_IMAGE" "$context" >/dev/null
  if [ -n "$tarball" ] && [ -n "${SAVE_IMAGES:-}" ]; then
    docker tag "$SKMAKER_TEST_IMAGE" "$CACHED_SKMAKER_TAG"
    docker tag "$PROMETHEUS_TEST_IMAGE" "$CACHED_PROMETHEUS_TAG"
    rm -f "$CACHE_DIR"/images-*.tar "$CACHE_DIR"/images-*.tar.tmp
    in_background "$DOCKER_BIN" save -o "$tarball.tmp" "$CACHED_SKMAKER_TAG" "$CACHED_PROMETHEUS_TAG" \
      && mv "$tarball.tmp" "$tarball"
    log "saved the images in $tarball for the next run with the same sources"
  fi
}
