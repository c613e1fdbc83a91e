# hala-train: SFT with TRL (accelerate/FSDP come with it). The stack is pinned in pyproject.toml and installed in hala-base;
# this image exists so that the family can move to its own pins without touching the others.
ARG BASE=ghcr.io/hala-mlops/hala-base:0.1.0
FROM ${BASE}
LABEL org.opencontainers.image.title="hala-train"
