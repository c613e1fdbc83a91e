# hala-base: what every stage image shares (a Python 3.11 environment, the non-root user and its
# writable caches, the core requirements of images/locks/base.txt, the hala package); the light
# tasks (preflight, the MLflow run, screening, joins, the registry) run in it. The other families
# build on it. Build from the repository root (images/README.md, or `make images` for test builds):
#   podman build -f images/base.Dockerfile --build-arg HALA_VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t $REGISTRY/hala-base:0.1.0 .
# The base is a build argument so that mirrored or air-gapped builds can name their own copy.
ARG PYTHON_BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${PYTHON_BASE}
ARG HALA_VERSION
ARG REVISION
ARG SOURCE=https://github.com/hala-mlops/hala
ENV VIRTUAL_ENV=/opt/hala/venv \
    PATH=/opt/hala/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/hala \
    XDG_CACHE_HOME=/home/hala/.cache \
    HF_HOME=/home/hala/.cache/huggingface \
    HALA_CACHE=/home/hala/.cache/hala \
    MPLCONFIGDIR=/home/hala/.cache/matplotlib \
    TRITON_CACHE_DIR=/home/hala/.cache/triton
# Group 0 owns HOME and may write it: clusters that run pods as an arbitrary uid in group 0
# (OpenShift) then find writable caches too.
RUN test -n "${HALA_VERSION}" -a -n "${REVISION}" || { echo "build arguments HALA_VERSION and REVISION are required" >&2; exit 1; } \
 && useradd --uid 1000 --gid 0 --home-dir /home/hala --create-home --shell /usr/sbin/nologin hala \
 && mkdir -p /home/hala/.cache/huggingface /home/hala/.cache/hala /home/hala/.cache/matplotlib \
 && chown -R hala:0 /home/hala && chmod -R g=u /home/hala \
 && python3 -m venv ${VIRTUAL_ENV}
COPY images/install_lock.py images/locks/base.txt /opt/hala/locks/
RUN python3 /opt/hala/locks/install_lock.py /opt/hala/locks/base.txt
COPY pyproject.toml README.md /opt/hala/src/
COPY hala /opt/hala/src/hala
COPY components /opt/hala/src/components
COPY pipelines /opt/hala/src/pipelines
# The image's hala must be the commit's: the version label is checked against the package.
RUN pip install --no-deps /opt/hala/src \
 && python3 -c "import sys, hala; sys.exit(0 if hala.__version__ == '${HALA_VERSION}' else 'HALA_VERSION ${HALA_VERSION} is not the package version ' + hala.__version__)" \
 && rm -rf /opt/hala/src/build \
 && python3 -m pip check
ENV HALA_IMAGE_FAMILY=base HALA_REVISION=${REVISION}
LABEL org.opencontainers.image.title="hala-base" \
      org.opencontainers.image.description="Hala translate-and-tune: the core library and the light pipeline tasks" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${HALA_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.hala.family="base" \
      io.hala.lock="base"
WORKDIR /home/hala
USER 1000
