#!/usr/bin/env bash
# Every GPU figure of issue 5 in as few calls as possible, for a session lent a GPU machine
# (the device tool: run it in the repository root there; PYTHONPATH=src, that machine's own python3
# with torch, triton, timm and torchvision). Each part fits one 10-minute call:
#
#   bash benchmarks/gpu_suite.sh check   "$OUT"   # Triton + SDPA backends equal the reference on the GPU
#   bash benchmarks/gpu_suite.sh infer   "$OUT"   # Swin-T bf16 inference, batch 256, eager + compiled
#   bash benchmarks/gpu_suite.sh train   "$OUT"   # Swin-T bf16 training step, batch 128, eager + compiled
#   bash benchmarks/gpu_suite.sh scaling "$OUT"   # cost per pixel 224² → 896², Swin-T vs DeiT-S
#   bash benchmarks/gpu_suite.sh graphs  "$OUT"   # inference again, compiled with CUDA graphs
#   bash benchmarks/gpu_suite.sh study   "$OUT"   # issue 11's study: SHARDS (8) processes share the GPU for
#                                                 # STUDY_SECONDS (480); the finished runs come back in
#                                                 # OUT/study/runs (copy them into the study's --out here
#                                                 # and run --report-only); a run cut off is lost.
#                                                 # The device has no Fashion-MNIST: copy the idx .gz files
#                                                 # to runs/fashion-mnist (ignored), carry that path, and
#                                                 # give FASHION_MNIST=runs/fashion-mnist
#
# Results land in OUT (JSON + PNG, machine, versions and date inside); copy them into
# benchmarks/results/ and record what moved which number in benchmarks/results/README.md.
set -euo pipefail
usage="usage: gpu_suite.sh check|infer|train|scaling|graphs|study OUTDIR"
part=${1:?$usage}
out=${2:?$usage}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
case "$part" in
  check)
    $py -m pytest -q -p no:cacheprovider tests/test_triton_kernel.py tests/test_kernels.py tests/test_linear.py \
      2>&1 | tee "$out/check.log" ;;
  infer)
    $py benchmarks/bench.py --device cuda --dtype bfloat16 --batch-size 256 --mode infer \
      --backends auto sdpa triton --compile --warmup 5 --repeats 20 --brief --out "$out" \
      --name cuda_swin_t_b256_224_bfloat16_infer 2>&1 | grep -v " step " ;;
  train)
    $py benchmarks/bench.py --device cuda --dtype bfloat16 --batch-size 128 --mode train \
      --backends auto sdpa triton --compile --warmup 5 --repeats 20 --brief --out "$out" \
      --name cuda_swin_t_b128_224_bfloat16_train 2>&1 | grep -v " step " ;;
  scaling)
    $py benchmarks/bench.py --device cuda --dtype bfloat16 --scaling 224 448 672 896 --scaling-batch 16 \
      --repeats 10 --brief --out "$out" --name cuda_scaling_bfloat16 2>&1 | grep -v " step " ;;
  graphs)
    $py benchmarks/bench.py --device cuda --dtype bfloat16 --batch-size 256 --mode infer \
      --backends auto --compile reduce-overhead --warmup 5 --repeats 20 --brief --out "$out" \
      --name cuda_swin_t_b256_224_bfloat16_infer_cudagraphs 2>&1 | grep -v " step " ;;
  study)
    shards=${SHARDS:-8}
    for i in $(seq 0 $((shards - 1))); do
      timeout -s INT "${STUDY_SECONDS:-480}" $py -m swinlab.cli study ablations --seeds 3 --shard "$i/$shards" \
        ${FASHION_MNIST:+--data-dir "$FASHION_MNIST"} --out "$out/study" --work /tmp/study-work \
        > "$out/study_shard$i.log" 2>&1 &
    done
    wait || true
    $py -m swinlab.cli study ablations --seeds 3 --report-only --out "$out/study" --work /tmp/study-work \
      2>&1 | tail -1
    nvidia-smi --query-gpu=name,memory.used --format=csv >> "$out/gpu.txt" ;;
  *) echo "unknown part $part: check, infer, train, scaling, graphs or study" >&2; exit 2 ;;
esac
