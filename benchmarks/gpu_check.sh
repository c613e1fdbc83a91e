#!/usr/bin/env bash
# The GPU checks, in one short run on a CUDA machine whose Python already has torch, transformers
# and accelerate: the tests marked gpu (FSDP under torchrun, the FP8 copy on the GPU), the SFT
# tests, and the packing benchmark at a GPU-sized model. Missing packages come as wheels in .whl/.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
set -u -o pipefail
OUT=${OUT:-/tmp/hala-gpu-check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HALA_CACHE=/tmp/hala-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl, accelerate, llmcompressor; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__, 'llmcompressor', llmcompressor.__version__)"
timeout 300 python3 -m pytest -q -ra -p no:cacheprovider tests/test_train_sft.py tests/test_stages.py \
  -k "gpu or packed or packing or template or fp8" 2>&1 | tee "$OUT/pytest.log" | grep -v "it/s\]"
echo "pytest exit ${PIPESTATUS[0]}"
cd benchmarks
for attention in sdpa flex_attention; do
  timeout 200 python3 sft_packing.py --attention $attention --hidden-size 1024 --layers 8 --rows 8192 --batch-size 16 \
    --max-length 1024 --out "$OUT/sft_packing_gpu_$attention.json" 2>&1 | grep -v "it/s\]" | tail -32
done
