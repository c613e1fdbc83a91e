# hala-mlflow: the MLflow tracking server and registry of charts/hala-mlflow (and of
# `hala run --runner docker`), from images/locks/mlflow.txt (images/mlflow.in: MLflow with the
# PostgreSQL driver and boto3, which a database backend and S3 artifacts need; the upstream image
# has neither). Tagged with its MLflow version, not hala's. Build from the repository root:
#   podman build -f images/mlflow.Dockerfile --build-arg REVISION=$(git rev-parse HEAD) -t $REGISTRY/hala-mlflow:3.17.2 .
ARG PYTHON_BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${PYTHON_BASE}
ARG REVISION
ARG SOURCE=https://github.com/hala-mlops/hala
ENV VIRTUAL_ENV=/opt/mlflow/venv PATH=/opt/mlflow/venv/bin:${PATH} PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 HOME=/home/mlflow
RUN test -n "${REVISION}" || { echo "build argument REVISION is required" >&2; exit 1; } \
 && useradd --uid 10001 --gid 0 --home-dir /home/mlflow --create-home --shell /usr/sbin/nologin mlflow \
 && chmod -R g=u /home/mlflow \
 && python3 -m venv ${VIRTUAL_ENV}
COPY images/install_lock.py images/locks/mlflow.txt /opt/mlflow/locks/
RUN python3 /opt/mlflow/locks/install_lock.py /opt/mlflow/locks/mlflow.txt && python3 -m pip check
LABEL org.opencontainers.image.title="hala-mlflow" \
      org.opencontainers.image.description="MLflow tracking server and registry for Hala (PostgreSQL, S3 artifacts)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="3.17.2" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.hala.family="mlflow" \
      io.hala.lock="mlflow"
WORKDIR /home/mlflow
USER 10001
EXPOSE 5000
# A command, not an entrypoint: `podman run IMAGE python -m pip check` works as in every hala image,
# and the chart names its own command (mlflow server ...).
CMD ["mlflow", "server", "--host", "0.0.0.0"]
