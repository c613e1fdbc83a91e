#!/usr/bin/env bash
# The GPU checks, in one short run on a CUDA machine whose Python already has torch, transformers
# and accelerate: the tests marked gpu (FSDP under torchrun over 2 ranks when there are 2 GPUs,
# else 1; the FP8 copy's next-token agreement with the original), the SFT tests, FP8 against BF16
# matrix products at the teacher's layer shapes (torch's scaled matmul), and the packing benchmark
# at a GPU-sized model. Missing packages come as wheels in .whl/.
#   bash benchmarks/gpu_check.sh                      # every check
#   GPU_CHECKS="devices versions" bash benchmarks/gpu_check.sh
# Each check's output goes to the log, and its exit code to the JSON, both under $OUT
# (default benchmarks/results/gpu_check/); the script exits 1 when any check failed.
set -u -o pipefail
OUT=${OUT:-benchmarks/results/gpu_check}
CHECKS=${GPU_CHECKS:-devices versions pytest gemm packing}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
: >"$LOG"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HALA_CACHE=${HALA_CACHE:-/tmp/hala-cache}

check_devices() { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; }
check_versions() {
  python3 -c "import torch, transformers, trl, accelerate, llmcompressor; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__, 'llmcompressor', llmcompressor.__version__, 'cuda', torch.cuda.is_available())"
}
check_pytest() {
  # -rs lists what was skipped and why; on the GPU machine a skipped GPU test fails the check.
  local status
  timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/test_train_sft.py tests/test_stages.py \
    -k "gpu or packed or packing or template or fp8" | tee "$OUT/pytest.log"
  status=${PIPESTATUS[0]}
  if grep -q "^SKIPPED" "$OUT/pytest.log"; then
    echo "gpu_check: $(grep -c '^SKIPPED' "$OUT/pytest.log") test(s) skipped on the GPU machine"
    return 1
  fi
  return "$status"
}
check_gemm() {
  # Command A's four linear layers at 4,096 and 16,384 batched tokens; fails on a wrong FP8 result.
  timeout 300 python3 benchmarks/fp8_gemm.py --out "$OUT/fp8_gemm.json"
}
check_packing() {
  local attention status=0
  for attention in sdpa flex_attention; do
    (cd benchmarks && timeout 200 python3 sft_packing.py --attention $attention --hidden-size 1024 --layers 8 --rows 8192 \
      --batch-size 16 --max-length 1024 --out "$OUT/sft_packing_gpu_$attention.json") || status=1
  done
  return $status
}

declare -A RESULT
failed=0
for name in $CHECKS; do
  if ! declare -F "check_$name" >/dev/null; then
    echo "gpu_check: unknown check $name (known: devices versions pytest gemm packing)" | tee -a "$LOG" >&2
    RESULT[$name]=127
    failed=1
    continue
  fi
  echo "== $name" | tee -a "$LOG"
  started=$SECONDS
  "check_$name" 2>&1 | tee -a "$LOG" | grep -v "it/s\]"
  status=${PIPESTATUS[0]}
  RESULT[$name]=$status
  echo "== $name: exit $status after $((SECONDS - started)) s" | tee -a "$LOG"
  [ "$status" -eq 0 ] || failed=1
done

{
  echo "{"
  first=1
  for name in $CHECKS; do
    [ $first -eq 1 ] || echo ","
    first=0
    printf '  "%s": %s' "$name" "${RESULT[$name]}"
  done
  echo ""
  echo "}"
} >"$OUT/gpu_check.json"
echo "gpu_check: $([ $failed -eq 0 ] && echo 'every check passed' || echo 'a check FAILED'); log and exit codes in $OUT"
exit $failed
