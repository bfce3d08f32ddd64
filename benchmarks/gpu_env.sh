# Sourced by the GPU scripts (run from the repository root on a lent GPU machine): installs the
# packages the GPU image lacks from the wheels carried in .whl/ (gymnasium, mujoco, jsonargparse,
# ...) and puts them and policylab on the Python path.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD" PYTHONWARNINGS=ignore
