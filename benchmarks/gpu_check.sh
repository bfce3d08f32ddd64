#!/usr/bin/env bash
# One short GPU check, run on a lent GPU machine from the repository root (what it printed is in
# benchmarks/RESULTS.md):
#   1. the throughput benchmark on CUDA: TD3+BC and A2PR compiled (compile_mode reduce-overhead),
#      then with the whole update as CUDA graphs (cuda_graph=True), then all four methods eager;
#   2. the CLI on CUDA: TD3+BC in fp32 and bf16-mixed; A2PR offline -> online for a few steps.
# Packages the GPU image lacks travel as wheels in .whl/ (gymnasium, mujoco, jsonargparse, ...).
# Every part runs under its own time limit and a failing part does not stop the others.
# The log goes to $OUT/gpu_check.log when OUT is set.
set -uo pipefail
LOG="${OUT:-/tmp}/gpu_check.log" DETAIL="${OUT:-/tmp}/throughput_full.log"
exec > >(tee "$LOG") 2>&1
rm -rf runs
source benchmarks/gpu_env.sh
part() { local limit=$1; shift; echo "== $*"; timeout "$limit" "$@" || echo "!! exit $? from: $*"; }
quiet() { grep -v -i -E "tip|warn|available|LOCAL_RANK|^ *[|]|Params|params|Modules in|FLOPs|^-|^$" || true; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, lightning, gymnasium, mujoco; print('torch', torch.__version__, 'lightning', lightning.__version__, 'gymnasium', gymnasium.__version__, 'mujoco', mujoco.__version__)"

cd benchmarks
part 180 python3 offline_throughput.py --device cuda --steps 600 --rounds 3 --methods td3bc a2pr --compile --compile-mode reduce-overhead 2>&1 | tee -a "$DETAIL" | grep -E "GFLOP|round|steps/s|Error|error"
part 90 python3 offline_throughput.py --device cuda --steps 600 --rounds 3 --methods td3bc a2pr --cuda-graph 2>&1 | tee -a "$DETAIL" | grep -E "GFLOP|round|steps/s|Error|error"
part 100 python3 offline_throughput.py --device cuda --steps 600 --rounds 3 2>&1 | tee -a "$DETAIL" | grep -E "GFLOP|round|steps/s|Error|error"
cd ..

common=(--trainer.accelerator gpu --trainer.devices 1 --evaluation.every_n_steps 1000 --evaluation.n_episodes 5
        --trainer.log_every_n_steps 100 --trainer.enable_progress_bar false --video.every_n_steps 0)
part 45 python3 cli.py fit --config configs/td3bc_hopper.yaml "${common[@]}" --trainer.max_steps 1500 2>&1 | quiet | tail -3
part 45 python3 cli.py fit --config configs/td3bc_hopper.yaml "${common[@]}" --trainer.max_steps 1000 --trainer.precision bf16-mixed --trainer.logger.init_args.name bf16 2>&1 | quiet | tail -2
part 60 python3 cli.py fit --config configs/a2pr_hopper.yaml "${common[@]}" --trainer.max_steps 2500 --trainer.callbacks.init_args.start_step 1500 2>&1 | quiet | tail -3
python3 - <<'EOF' || true
import glob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for f in sorted(glob.glob("runs/a2pr_hopper/version_0/events.*")):
    acc = EventAccumulator(f); acc.Reload()
    for tag in ("eval/normalized_score", "online/episode_return", "online/env_steps"):
        if tag in acc.Tags()["scalars"]:
            print(tag, [(e.step, round(e.value, 1)) for e in acc.Scalars(tag)][-4:])
EOF
