# ipnet-traj prediction service: `ipnet serve` with the shipped weights, CPU only.
#   docker build -t ipnet-traj:0.1.0 .      (or `docker compose build`)
#   docker run -p 8000:8000 ipnet-traj:0.1.0
# Settings are TRAJPRED_* environment variables (README). Linted by hadolint in tests/deploy.

# Build arguments for machines without the public internet (README: "Without access to image registries"):
#   PYTHON_IMAGE     any Debian-based image with Python 3.11 and venv (scripts/local_images.sh builds one)
#   TORCH_INDEX_URL  a PEP 503 index that serves the CPU build of torch (default: PyTorch's CPU index)
ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# --- build: a virtualenv with CPU-only torch and the package --------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# a C compiler and Python's headers for the package's C extensions (models/native_build.py), built by its
# install below; the runtime stage keeps only the result. The headers come with the official python images;
# a Debian python (the local base image) needs its python3-dev
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && { [ -f "$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
      || apt-get install -y --no-install-recommends python3-dev; } \
 && rm -rf /var/lib/apt/lists/*
# torch first, in a layer of its own (the largest, and it changes least), from the CPU index: the default
# index serves the CUDA build, gigabytes of GPU libraries this image never uses. Without its dependencies:
# an index of torch alone is enough, and the package's install below brings them from the default index
RUN pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX_URL}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml setup.py ./
COPY models/ models/
COPY service/ service/
COPY clients/ clients/
# torch==2.13.0 of pyproject.toml is already satisfied by the CPU build (2.13.0+cpu): pip keeps it.
# A non-editable install: the served weights (package data models/weights/multimodal/seed0/*.pt) go into site-packages;
# the check runs isolated (-I) so that it sees site-packages, not the sources in the working directory.
RUN pip install --no-cache-dir . \
 && python -I -c "from models.checkpoint import shipped_path as p; import sys; m = [k for k in ('ipnet', 'gru', 'lstm', 'gru_nodt', 'ctgru') if not p(k).is_file()]; sys.exit(f'shipped weights missing: {m} (run ipnet train)' if m else 0)"
# the numba kernels (kinematics), compiled once here by the service's own warm-up into a cache the runtime
# copies: containers then start without compiling (numba recompiles by itself on another CPU); the check
# fails the build if a C extension (IPNet's MTJ layer, built for x86-64-v3, not this CPU; the answer
# writer) is not in use
RUN NUMBA_CACHE_DIR=/opt/numba-cache python -I -c "from service.app import load_models; from service.settings import Settings; from service.jsontext import available; import sys; m = load_models(Settings(snapshot_path=None)); sys.exit(0 if m['ipnet'].infer.native and available() else 'a C kernel did not build')"

# --- runtime: the virtualenv on a clean base, no compilers, no pip cache, not root -----------------------
FROM ${PYTHON_IMAGE}
# NUMBA_CACHE_DIR: the kernels compiled in the build stage, in a directory the runtime user owns (numba only
# uses a cache directory it can write to)
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    TRAJPRED_SNAPSHOT_PATH=/var/lib/trajpred/state.snap
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/trajpred --create-home trajpred
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/numba-cache /opt/numba-cache
USER 10001:10001
# the memory store's snapshot: mount a volume here to keep agent state across container restarts
# (docker run -v trajpred-state:/var/lib/trajpred ...); with TRAJPRED_STORE=redis://... it is unused
WORKDIR /var/lib/trajpred
EXPOSE 8000
# liveness: uvicorn accepts connections only once the lifespan has loaded and warmed the models
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["ipnet"]
# one uvicorn worker: agent state (memory store), the online scorer and the metrics live in the process;
# scale with replicas on Redis (docker-compose.yml, profile `replicas`)
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
