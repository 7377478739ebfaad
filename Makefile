# Assay: `make demo` and `make test` set everything up on a fresh Debian 12 host (as root) and run.
# Every step is idempotent: a second run only checks stamps and is fast.

# Debian's own interpreter where there is one: it is what a fresh Debian 12 host has, and it is built with
# profile-guided optimisation (measured ~25-30% faster on the sensor's decoding than a plain source build).
PYTHON   ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV     := .venv
VPY      := $(VENV)/bin/python
STAMP    := $(VENV)/.assay-deps

# Debian packages. Run time: libbpf1 (the sensor loads its prebuilt CO-RE object through ctypes),
# postgresql (tests of the PostgreSQL backend), iproute2 (sandbox and network-namespace tests), chromium (the
# web UI's browser tests drive it through Playwright; Playwright's own browser download does not work here).
# The built-in abilities use coreutils, procps, iproute2 (ss), tar, bash and /usr/bin/python3, and (issue 3's
# library) the tools listed in ABILITY_TOOLS: each ability runs real programs so the sensor sees real processes.
# `assay baseline` (issue 10): openssh-server (its own sshd in a netns, never the host's), logrotate, git.
# Build time of the BPF object (`make bpf`): clang, llvm, libbpf-dev, bpftool.
ABILITY_TOOLS := curl wget openssl gnupg zip unzip gzip xxd gcc libc6-dev openssh-client netcat-openbsd \
                 tcpdump iptables iputils-ping net-tools kmod usbutils pciutils sudo passwd login findutils \
                 nodejs bind9-dnsutils alsa-utils e2fsprogs cron
APT_RUN   := python3-venv libbpf1 libelf1 zlib1g postgresql iproute2 procps util-linux tar python3 chromium \
             $(ABILITY_TOOLS) openssh-server logrotate git
APT_BUILD := clang llvm libbpf-dev bpftool
APT_PKGS  := $(APT_RUN) $(APT_BUILD)

BPF_DIR  := src/assay/sensor/bpf

.PHONY: all setup apt venv demo test lint typecheck bench bpf clean help

all: setup

help:
	@echo "make demo   set up, then run the built-in adversary against this host and print the validation table"
	@echo "make test   set up, then run the test suite"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make bpf    rebuild the sensor's CO-RE BPF object from source"

setup: apt venv

# apt: install only what is missing, so a second run costs one dpkg query per package.
apt:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root, or install them)"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# A .venv built from another interpreter (an older checkout, a pyenv shim) is rebuilt from $(PYTHON).
venv:
	@if [ -x $(VPY) ] && [ "$$($(VPY) -c 'import os,sys; print(os.path.realpath(sys._base_executable))')" \
	      != "$$(readlink -f $(PYTHON))" ]; then echo "rebuilding .venv with $(PYTHON)"; rm -rf $(VENV); fi
	@$(MAKE) --no-print-directory $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv)
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/assay demo

test: setup
	$(VPY) -m pytest

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

typecheck: venv
	$(VENV)/bin/mypy

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VPY) $$b || exit 1; done

# The prebuilt object is committed so users need no clang; this rebuilds it from our own source.
bpf: apt
	$(MAKE) -C $(BPF_DIR)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
