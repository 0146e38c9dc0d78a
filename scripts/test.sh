#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs lint, types and the tests.
# Real services only: the tests start redis-server, prometheus and alertmanager themselves on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
# the C compiler, libc's and Python's headers that the package's install needs to build IPNet's MTJ kernel
# and the answer writer (models/native_build.py); the tests compare them to torch and to orjson
{ command -v cc >/dev/null 2>&1 && [ -f /usr/include/math.h ]; } || need+=(gcc libc6-dev)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || need+=(python3-dev)
# a Docker engine and debootstrap for tests/e2e/test_container.py (the image built and run for real, on base
# images built from Debian packages by scripts/local_images.sh: no image registry is reachable here)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# start dockerd when none answers; its data root (images, build cache) under a cache folder that outlives
# the checkout, so a second run on the same machine rebuilds nothing
if ! docker info >/dev/null 2>&1; then
  data_root=${DOCKER_DATA_ROOT:-/var/cache/ipnet-traj/docker}
  mkdir -p "$data_root"
  nohup dockerd --data-root "$data_root" >"$data_root.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: $data_root.log" >&2; tail -20 "$data_root.log" >&2; exit 1; }
fi
scripts/local_images.sh >/dev/null  # cached: rebuilt only when its inputs change
# torch==2.13.0 is pinned in pyproject.toml: pip takes the local CPU wheel, never a CUDA build.
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
python3 -m pytest "$@"
