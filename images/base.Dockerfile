# hala-base: the hala package and its pinned stack; every other family image builds on it.
# Build from the repository root:  docker build -f images/base.Dockerfile -t $REGISTRY/hala-base:$TAG .
FROM python:3.11-slim-bookworm
# torch is installed first and on its own so that the GPU or CPU build is chosen explicitly.
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HOME=/cache/huggingface
RUN pip install "torch==${TORCH_VERSION}"
WORKDIR /opt/hala
COPY pyproject.toml README.md ./
COPY hala hala
COPY components components
COPY pipelines pipelines
RUN pip install . && useradd --uid 1000 --create-home hala
USER 1000
