# hala-merge: slerp merging with mergekit (stage 7).
# hala-base plus images/locks/merge.txt. Build from the repository root after hala-base:
#   podman build -f images/merge.Dockerfile --build-arg HALA_BASE=$REGISTRY/hala-base:0.1.0 -t $REGISTRY/hala-merge:0.1.0 .
# PyPI's torch is its CUDA build; test builds without a GPU pass TORCH_FROM, a folder with the CPU
# wheel of the same version, mounted into the build (make images). The hala package, its version and
# revision labels come with hala-base.
ARG HALA_BASE=ghcr.io/hala-mlops/hala-base:0.1.0
FROM ${HALA_BASE}
ARG TORCH_FROM=
USER root
COPY images/install_lock.py images/locks/merge.txt /opt/hala/locks/
RUN python3 /opt/hala/locks/install_lock.py /opt/hala/locks/merge.txt ${TORCH_FROM:+--torch-from ${TORCH_FROM}} \
 && python3 -m pip check
ENV HALA_IMAGE_FAMILY=merge
LABEL org.opencontainers.image.title="hala-merge" \
      org.opencontainers.image.description="Hala translate-and-tune: slerp merging with mergekit (stage 7)" \
      io.hala.family="merge" \
      io.hala.lock="merge" \
      io.hala.torch="${TORCH_FROM:+cpu}"
USER 1000
