# hala-train: SFT with TRL, accelerate and torchrun/FSDP (stages 4 and 6, and the TrainJob nodes).
# hala-base plus images/locks/train.txt. Build from the repository root after hala-base:
#   podman build -f images/train.Dockerfile --build-arg HALA_BASE=$REGISTRY/hala-base:0.1.0 -t $REGISTRY/hala-train:0.1.0 .
# PyPI's torch is its CUDA build; test builds without a GPU pass TORCH_FROM, a folder with the CPU
# wheel of the same version, mounted into the build (make images). The hala package, its version and
# revision labels come with hala-base.
ARG HALA_BASE=ghcr.io/hala-mlops/hala-base:0.1.0
FROM ${HALA_BASE}
ARG TORCH_FROM=
USER root
COPY images/install_lock.py images/locks/train.txt /opt/hala/locks/
RUN python3 /opt/hala/locks/install_lock.py /opt/hala/locks/train.txt ${TORCH_FROM:+--torch-from ${TORCH_FROM}} \
 && python3 -m pip check
ENV HALA_IMAGE_FAMILY=train
LABEL org.opencontainers.image.title="hala-train" \
      org.opencontainers.image.description="Hala translate-and-tune: SFT with TRL, accelerate and torchrun/FSDP (stages 4 and 6, and the TrainJob nodes)" \
      io.hala.family="train" \
      io.hala.lock="train" \
      io.hala.torch="${TORCH_FROM:+cpu}"
USER 1000
