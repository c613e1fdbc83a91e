# hala-vllm: generation and evaluation on GPUs with vLLM (bootstrap, judge and corpus workers, the
# translator's and students' evaluation with lm-eval's vLLM backend). hala-base plus
# images/locks/vllm.txt, which is resolved on its own: vLLM 0.33 pins torch 2.14 and
# compressed-tensors 0.17, which llm-compressor's family cannot share. Build from the repository root:
#   podman build -f images/vllm.Dockerfile --build-arg HALA_BASE=$REGISTRY/hala-base:0.1.0 -t $REGISTRY/hala-vllm:0.1.0 .
# It downloads several GB of CUDA wheels. On a machine without a GPU, `make images` builds the same
# file with LOCK=inference and TORCH_FROM: the same stages on transformers and lm-eval's HF backend
# (what `engine: auto` picks without a GPU), with no vLLM in it.
ARG HALA_BASE=ghcr.io/hala-mlops/hala-base:0.1.0
FROM ${HALA_BASE}
ARG LOCK=vllm
ARG TORCH_FROM=
USER root
# Triton (vLLM's kernels) compiles small C launchers at run time: it needs a C compiler and
# Python's headers, which slim bases lack.
RUN if [ "${LOCK}" = vllm ]; then \
      apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
      && { test -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" \
           || apt-get install -y --no-install-recommends python3-dev; } \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY images/install_lock.py images/locks/${LOCK}.txt /opt/hala/locks/
RUN python3 /opt/hala/locks/install_lock.py /opt/hala/locks/${LOCK}.txt ${TORCH_FROM:+--torch-from ${TORCH_FROM}} \
 && python3 -m pip check
ENV HALA_IMAGE_FAMILY=vllm
LABEL org.opencontainers.image.title="hala-vllm" \
      org.opencontainers.image.description="Hala translate-and-tune: generation, judging and evaluation with vLLM" \
      io.hala.family="vllm" \
      io.hala.lock="${LOCK}" \
      io.hala.torch="${TORCH_FROM:+cpu}"
USER 1000
