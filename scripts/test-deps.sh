#!/usr/bin/env bash
# Installs what the tests need beyond Rust, from Debian's packages and PyPI, when it is
# missing: promtool (Debian `prometheus`) checks the node's /metrics. Idempotent; run as root
# (CI is) or with the tools already installed.
set -euo pipefail
need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
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
