#!/usr/bin/env bash
# Installs what the tests need beyond Rust, from Debian's packages and PyPI, when it is
# missing: promtool (Debian `prometheus`) checks the node's /metrics; busybox-static (Debian)
# is the root file system of the container image the container executor's tests build with
# `docker import` (no registry is reachable); python3-numpy (Debian) is what the Python image
# of the container tests' numpy job is assembled from (scripts/python-image.sh); blender
# (Debian) renders the render example's frames in the worker tests, and ffmpeg (Debian) makes
# their video; schemathesis
# (PyPI, in target/api-fuzz-venv)
# runs scripts/api-fuzz.sh; OpenAI's Python client (PyPI `openai`, in target/openai-venv) asks
# the example service through its gateway (examples/service/chat.py). Idempotent; run as root (CI is) or with the tools already
# installed. The tests also need a running Docker engine (this machine kind starts one).
set -euo pipefail
need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
dpkg -s python3-numpy >/dev/null 2>&1 || need_apt+=(python3-numpy)
command -v blender >/dev/null || need_apt+=(blender)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # The package starts a Prometheus server where an init system runs; the tests need only
    # promtool.
    if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
        systemctl stop prometheus || true
    fi
fi

# schemathesis for scripts/api-fuzz.sh, in its own virtual environment under target/ (never at
# build time). python3-venv provides `python3 -m venv` on Debian.
venv="$(dirname "$0")/../target/api-fuzz-venv"
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi

# OpenAI's client for the service tests, likewise in its own environment.
openai_venv="$(dirname "$0")/../target/openai-venv"
if ! "$openai_venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
    rm -rf "$openai_venv"
    python3 -m venv "$openai_venv"
    "$openai_venv/bin/pip" install -q 'openai==3.63.0'
fi
