# hala-mlflow: the MLflow tracking server of charts/hala-mlflow. The upstream image lacks the
# PostgreSQL driver and boto3, which a database backend and S3 artifacts need.
# Build from the repository root:  docker build -f images/mlflow.Dockerfile -t $REGISTRY/hala-mlflow:3.17.2 .
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# The same MLflow as the pipeline's client (pyproject.toml), so their store schemas agree.
RUN pip install "mlflow==3.17.2" "psycopg2-binary==2.9.13" "boto3==1.44.8" \
    && useradd --uid 10001 --create-home mlflow
USER 10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0"]
