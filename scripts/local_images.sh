#!/usr/bin/env bash
# Builds, from Debian packages only, the images this project needs where no image registry is reachable:
#   ipnet-local/debian:bookworm      debootstrap's minimal Debian, this machine's CA bundle
#   ipnet-local/python:3.11          Python 3.11 and venv: the Dockerfile's PYTHON_IMAGE
#   ipnet-local/redis, ipnet-local/prometheus, ipnet-local/alertmanager, ipnet-local/nginx
#                                    docker-compose.yml's REDIS_IMAGE, PROMETHEUS_IMAGE, ALERTMANAGER_IMAGE,
#                                    NGINX_IMAGE (same entry points and paths as the public images)
# Grafana has no Debian package: GRAFANA_IMAGE keeps the public image.
#
# Cached: each image carries a label with the hash of its inputs (this script, the CA bundle, the mirror) and
# is rebuilt only when that hash changes. Prints the images as KEY=image lines for `export`/`--env-file`.
#
#   scripts/local_images.sh            build what is missing or stale
#   DEBIAN_MIRROR=http://... CA_BUNDLE=/path/ca.crt scripts/local_images.sh
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PREFIX=${LOCAL_IMAGE_PREFIX:-ipnet-local}
WORK=${LOCAL_IMAGE_WORKDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ipnet-traj/rootfs}

command -v docker >/dev/null || { echo "docker is not installed" >&2; exit 1; }
[ -r "$CA_BUNDLE" ] || { echo "CA bundle $CA_BUNDLE not readable" >&2; exit 1; }

INPUTS=$( { cat "$0"; cat "$CA_BUNDLE"; echo "$MIRROR $SUITE"; } | sha256sum | cut -c1-16)

fresh() {  # fresh IMAGE: the image exists and was built from these inputs
  [ "$(docker image inspect -f '{{ index .Config.Labels "ipnet.inputs" }}' "$1" 2>/dev/null || true)" = "$INPUTS" ]
}

build() {  # build IMAGE: a Dockerfile on stdin, FROM the local Debian image; the build context is empty
  local image=$1
  if fresh "$image"; then
    echo "cached: $image" >&2
    cat >/dev/null
    return
  fi
  echo "building: $image" >&2
  docker build --quiet --network host --label "ipnet.inputs=$INPUTS" -t "$image" - >/dev/null
}

# --- the base: debootstrap's minbase, this machine's CA bundle, apt without recommends -------------------
BASE=$PREFIX/debian:$SUITE
if fresh "$BASE"; then
  echo "cached: $BASE" >&2
else
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  echo "building: $BASE (debootstrap $SUITE from $MIRROR)" >&2
  rm -rf "$WORK" && mkdir -p "$WORK"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$WORK" "$MIRROR" >/dev/null
  cp "$CA_BUNDLE" "$WORK/etc/ssl/certs/ca-certificates.crt"
  # the bundle is trusted by apt, pip, requests and OpenSSL alike
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$WORK/etc/apt/apt.conf.d/90local"
  rm -rf "$WORK"/var/cache/apt/archives/*.deb "$WORK"/var/lib/apt/lists/*
  tar -C "$WORK" -c . | docker import \
    -c "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8" \
    -c "LABEL ipnet.inputs=$INPUTS" \
    -c 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$WORK"
fi

build "$PREFIX/python:3.11" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y python3 python3-venv python-is-python3 && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
EOF

# like the public image: listening on every interface without protected mode (a container network is the
# boundary), whatever options a command line adds (compose's: --appendonly yes ...)
build "$PREFIX/redis:7" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y redis-server && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data \
 && printf '#!/bin/sh\nexec /usr/bin/redis-server "\$@" --bind 0.0.0.0 --protected-mode no\n' >/usr/local/bin/redis-server \
 && chmod 755 /usr/local/bin/redis-server
WORKDIR /data
USER redis
CMD ["redis-server"]
EOF

build "$PREFIX/prometheus:2" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y prometheus wget && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF

build "$PREFIX/alertmanager:0" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y prometheus-alertmanager wget && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /alertmanager && chown prometheus:prometheus /alertmanager
USER prometheus
WORKDIR /alertmanager
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
EOF

build "$PREFIX/nginx:1" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y nginx wget && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
CMD ["nginx", "-g", "daemon off;"]
EOF

cat <<EOF
PYTHON_IMAGE=$PREFIX/python:3.11
REDIS_IMAGE=$PREFIX/redis:7
PROMETHEUS_IMAGE=$PREFIX/prometheus:2
ALERTMANAGER_IMAGE=$PREFIX/alertmanager:0
NGINX_IMAGE=$PREFIX/nginx:1
EOF
