#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs lint, types and the tests.
# Real services only: the tests start redis-server, prometheus and alertmanager themselves on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
# the C compiler and libc headers that build IPNet's MTJ kernel and the answer writer (models/native.py); the
# tests compare them to torch and to orjson
{ command -v cc >/dev/null 2>&1 && [ -f /usr/include/math.h ]; } || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# torch==2.13.0 is pinned in pyproject.toml: pip takes the local CPU wheel, never a CUDA build.
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
python3 -m pytest "$@"
