"""The measuring tools of ``benchmarks/offline_throughput.py``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import negative_branch_probe  # noqa: E402
import offline_throughput  # noqa: E402


def test_matmul_recorder_keeps_each_matmuls_shapes_and_layout():
    x, weight, bias = torch.randn(8, 5), torch.randn(3, 5), torch.randn(3)
    recorder = offline_throughput._MatmulRecorder()
    with recorder:
        F.linear(x, weight, bias)
        torch.relu(x)  # not a matmul: not recorded
        torch.bmm(torch.randn(2, 4, 6), torch.randn(2, 6, 7))
    names = [func.name() for func, _, _ in recorder.calls]
    assert names == ["aten::addmm", "aten::bmm"]
    bias_arg, x_arg, weight_arg = recorder.calls[0][1][:3]
    assert (tuple(bias_arg[0]), tuple(x_arg[0]), tuple(weight_arg[0])) == ((3,), (8, 5), (5, 3))
    assert weight_arg[1] == (1, 5)  # F.linear multiplies by the transposed weight: its layout is kept


def test_operand_rebuilds_broadcast_and_transposed_layouts():
    expanded = offline_throughput._operand(torch.Size([2, 4, 3]), (0, 3, 1), torch.device("cpu"))
    assert expanded.shape == (2, 4, 3) and expanded.stride() == (0, 3, 1)
    assert torch.equal(expanded[0], expanded[1])
    transposed = offline_throughput._operand(torch.Size([5, 3]), (1, 5), torch.device("cpu"))
    assert transposed.stride() == (1, 5) and not transposed.is_contiguous()


def test_matmul_ceiling_is_at_least_the_rate_of_the_whole_computation():
    """The replay leaves out everything but the matmuls, so it runs more updates per second than
    the computation it was recorded from (here the matmuls and a large elementwise tail)."""
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    big = torch.randn(2_000_000)

    def two_steps():
        for _ in range(2):
            a @ b
            big.exp().sum()

    start = time.perf_counter()
    for _ in range(5):
        two_steps()
    whole = 10 / (time.perf_counter() - start)
    assert offline_throughput.matmul_ceiling(two_steps, torch.device("cpu"), passes=5) > whole


def test_negative_variants_mirror_and_match_the_change_per_tensor():
    start = {"weight": torch.randn(4, 3), "bias": torch.randn(4), "steps": torch.tensor(7)}
    trained = {
        "weight": start["weight"] + 0.1 * torch.randn(4, 3),
        "bias": start["bias"].clone(),
        "steps": torch.tensor(9),
    }
    variants = negative_branch_probe.negative_variants(start, trained, torch.Generator().manual_seed(0))
    plus, mirror, random = (
        variants["+ delta"],
        variants["- delta (mirror)"],
        variants["+ random change, same norm per tensor"],
    )
    assert torch.allclose(plus["weight"], trained["weight"])
    assert torch.allclose(mirror["weight"], 2 * start["weight"] - trained["weight"])
    for name in ("weight", "bias"):
        change = (trained[name] - start[name]).norm()
        assert torch.allclose((random[name] - start[name]).norm(), change, atol=1e-6)
    assert not torch.allclose(random["weight"], plus["weight"])  # same size, another direction
    assert all(int(v["steps"]) == 7 for v in variants.values())  # integer buffers are left alone
