#!/usr/bin/env bash
# One short GPU check (run on a lent GPU machine; see benchmarks/RESULTS.md for what it printed):
# TD3+BC through the CLI on CUDA (fp32 and bf16-mixed), resume on CUDA, and the throughput benchmark.
# Packages the GPU image lacks travel as wheels in .whl/ (gymnasium, mujoco, jsonargparse, ...).
set -euo pipefail
rm -rf runs
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
common=(--config configs/td3bc_hopper.yaml --trainer.accelerator gpu --trainer.devices 1
        --evaluation.every_n_steps 1000 --evaluation.n_episodes 5 --trainer.log_every_n_steps 100 --trainer.enable_progress_bar false)
python3 cli.py fit "${common[@]}" --trainer.max_steps 2000 2>&1 | grep -v -i -E "tip|warn" | tail -3
python3 cli.py fit "${common[@]}" --trainer.max_steps 3000 --ckpt_path last 2>&1 | tail -2
python3 -c "import torch; c=torch.load('runs/td3bc_hopper/version_0/checkpoints/last.ckpt', weights_only=True, map_location='cpu'); print('resumed to global_step', c['global_step'])"
python3 cli.py fit "${common[@]}" --trainer.max_steps 1000 --trainer.precision bf16-mixed --trainer.logger.init_args.name bf16 2>&1 | tail -2
python3 cli.py validate "${common[@]}" --ckpt_path last 2>&1 | grep -E "eval/|val/" || true
(cd benchmarks && python3 offline_throughput.py --device cuda --steps 2000 --rounds 3 2>&1 | grep -E "GFLOP|round|plain")
(cd benchmarks && python3 offline_throughput.py --device cuda --steps 2000 --rounds 3 --methods td3bc a2pr --compile --compile-mode reduce-overhead 2>&1 | grep -E "GFLOP|round|plain")
