#!/usr/bin/env bash
# Score runs on a lent GPU machine (16 CPU cores, one GPU shared by all runs), for a fixed wall
# time; run from the repository root. Every run evaluates every 5k steps over 10 episodes, as on
# the CPU, and its TensorBoard events come back in $OUT/gpu_runs.tgz (no checkpoints: too large to
# bring back). Read them with benchmarks/score_table.py.
#   SECONDS_FOR_RUNS=400 bash benchmarks/gpu_scores.sh
# The runs use cuda_graph=True (8x faster updates than plain PyTorch, benchmarks/RESULTS.md). One
# graphed A2PR update keeps the GPU busy for about 1.7 ms of tiny kernels, so runs in separate
# processes only add up when their kernels can overlap: the script starts NVIDIA's MPS daemon
# when it can (with 9 eager runs and no MPS, each ran at 60 steps/s on an H200).
# Runs: A2PR and IQL, seeds 0-2, offline on the bundled medium-replay set, online from step 50k
# (the configs as shipped otherwise); A2PR ablations (mask 1, discount 0.99) and TD3+BC with
# A2PR's network depth, seed 0, to tell why A2PR and TD3+BC differ.
set -uo pipefail
source benchmarks/gpu_env.sh
export OMP_NUM_THREADS=1
limit=${SECONDS_FOR_RUNS:-400} accelerator=${ACCELERATOR:-gpu} graphs=${CUDA_GRAPH:-true} steps=${MAX_STEPS:-75000} online_from=${START_STEP:-50000}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
run() {  # run NAME CONFIG SEED ARGS...
  local name=$1 config=$2 seed=$3; shift 3
  timeout "$limit" python3 cli.py fit --config "configs/$config.yaml" --seed_everything "$seed" \
    --trainer.accelerator "$accelerator" --trainer.devices 1 --trainer.max_steps "$steps" \
    --trainer.enable_progress_bar false --video.every_n_steps 0 \
    --trainer.logger.init_args.save_dir gpu_runs --trainer.logger.init_args.name "$name" \
    --trainer.logger.init_args.version version_0 "$@" > "gpu_runs/$name.log" 2>&1
}
online=(--trainer.callbacks.init_args.start_step "$online_from")
graphed=(--model.init_args.cuda_graph "$graphs")  # not for IQL: its cosine LR schedule would be frozen in a graph
mkdir -p gpu_runs
if [ "$accelerator" = gpu ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && echo "MPS daemon started" || echo "MPS not available: runs time-share the GPU"
fi
for seed in 0 1 2; do
  run "a2pr_hopper_seed$seed" a2pr_hopper $seed "${online[@]}" "${graphed[@]}" &
  run "iql_hopper_seed$seed" iql_hopper $seed "${online[@]}" &
done
run a2pr_mask1_seed0 a2pr_hopper 0 "${online[@]}" "${graphed[@]}" --model.init_args.mask 1.0 &
run a2pr_discount099_seed0 a2pr_hopper 0 "${online[@]}" "${graphed[@]}" --model.init_args.discount 0.99 &
run td3bc_deep_seed0 td3bc_hopper 0 "${graphed[@]}" --model.init_args.hidden_dims "[256, 256, 256]" &
wait
nvidia-smi --query-gpu=name --format=csv,noheader || true
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control || true
for f in gpu_runs/*.log; do echo "== $f"; grep -E "Error|error|max_steps" "$f" | tail -3; done
tar czf "$OUT/gpu_runs.tgz" --exclude='*.ckpt' gpu_runs
rm -rf gpu_runs
ls -la "$OUT"
