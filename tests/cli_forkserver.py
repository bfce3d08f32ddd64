"""A fork server for ``python cli.py`` and ``python -m MODULE`` runs in the tests (tests/conftest.py
``run_cli``, ``run_python``).

It imports the CLI's modules once (policylab, Lightning, torch, transformers, diffusers: 4-8 s
per fresh interpreter on 2 cores), then forks one child per request; the child runs the script
or module as ``__main__`` with the request's arguments, working directory and environment, its
stdout and stderr in files, and exits with the status a fresh ``python ARGS`` would give.
Nothing runs in the server itself besides the imports, so every child starts from the same
state as a fresh interpreter that has imported these modules.

Protocol (one JSON object a line): the client writes ``{"args", "cwd", "env", "out", "err"}``
on stdin (``args``: what follows ``python``, a script path or ``-m MODULE``, then its
arguments); the server answers ``{"pid": N}`` when the child is started and
``{"pid": N, "returncode": R}`` when it ended (R is negative for a signal, as in subprocess).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

# Imported once by the server; the lazily loaded model code of transformers and diffusers too.
PRELOAD = (
    "torch",
    "lightning.pytorch",
    "policylab.cli",
    "policylab.datamodules",
    "policylab.modules",
    "policylab.callbacks",
    "policylab.datasets.build",
    "transformers.models.llama.modeling_llama",
    "transformers.models.clip.modeling_clip",
    "diffusers",
    "diffusers.models.unets.unet_2d_condition",
    "diffusers.schedulers.scheduling_ddpm",
    "diffusers.schedulers.scheduling_ddim",
)


def _child(request: dict) -> None:
    """Run ``python ARGS`` as a fresh interpreter would, then leave with its exit status."""
    import random
    import runpy
    import traceback

    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the server's stdout was redirected
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        random.seed()  # a fresh interpreter seeds from the OS; forks would all share the server's state
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(request["env"].get("OMP_NUM_THREADS") or os.cpu_count() or 1))
        args = request["args"]
        try:
            if args[0] == "-m":
                sys.path[0] = os.getcwd()  # as python -m puts it first
                sys.argv = [args[1], *args[2:]]
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:
                sys.path[0] = str(Path(args[0]).resolve().parent)  # as python SCRIPT puts it first
                sys.argv = list(args)
                runpy.run_path(args[0], run_name="__main__")
            code = 0
        except SystemExit as exit:
            if exit.code is None or isinstance(exit.code, int):
                code = exit.code or 0
            else:
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the imports print goes to stderr, not into the protocol
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a child that needs the module reports its error itself
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a forked child could not use CUDA
        protocol.write(json.dumps({"ready": False, "why": "CUDA was initialized while importing"}) + "\n")
        return
    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            protocol.close()
            _child(request)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        protocol.flush()
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        protocol.flush()


if __name__ == "__main__":
    serve()
