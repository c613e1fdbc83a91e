# hala-vllm: generation and judging on GPUs with vLLM (the production engine of hala.engines).
ARG BASE=ghcr.io/hala-mlops/hala-base:0.1.0
FROM ${BASE}
USER root
RUN pip install "vllm==0.33.0"
USER 1000
LABEL org.opencontainers.image.title="hala-vllm"
