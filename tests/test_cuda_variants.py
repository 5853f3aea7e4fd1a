"""benchmarks/cuda_variants.py without a GPU: every tuning variant of the CUDA kernels compiles for
sm_90 and its machine code does what the variant says (nvcc and cuobjdump; skipped without
nvcc), and the GPU run's logic (every variant checked bit for bit against base and the build's
op, then timed) runs end to end with a stand-in for CuPy whose kernels are the CUDA bodies
compiled for the CPU (tests/cuda_on_cpu.cpp)."""
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import _sass  # noqa: E402
import cuda_variants as cv  # noqa: E402

from _cuda_on_cpu import DTYPES as SHIM_DTYPES, GXX, build  # noqa: E402

NVCC = _sass.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None or _sass.find_cuobjdump() is None,
                                reason="nvcc / cuobjdump not found")


def test_arguments():
    a = cv.parse_args(["--variants", "pf2,cs", "--T", "2,9", "--N", "2^10", "--dtype", "bf16"])
    assert a.variants == ["base", "pf2", "cs"] and a.T == [2, 9] and a.N == 1024
    assert a.dtypes == ["bf16"] and a.modes == ["train"]
    for bad in (["--variants", "nope"], ["--dtype", "fp8"], ["--modes", "infer"],
                ["--N", "12"]):
        with pytest.raises(SystemExit):
            cv.parse_args(bad)


def test_variant_source_defines_only_its_switches():
    base = cv.variant_source("base", torch.bfloat16)
    pf = cv.variant_source("pf2-cs", torch.bfloat16)
    assert "#define LIF_NVRTC_WIDE_ONLY 1\n" in base and "LIF_L2_PREFETCH 2" not in base
    assert "#define LIF_L2_PREFETCH 2\n#define LIF_STREAMING 1\n" in pf
    assert "#define LIF_STORAGE_T tssd_fast::cuda::bf16_t" in pf
    assert cv.threads("t128") == 128 and cv.threads("pf2") == 256


def test_bitwise_equal():
    a = torch.tensor([1.0, float("nan"), -0.0])
    assert cv.bitwise_equal(a, a.clone())
    assert not cv.bitwise_equal(a, torch.tensor([1.0, float("nan"), 0.0]))  # -0 vs 0
    assert not cv.bitwise_equal(a, a.double())
    assert cv.differences({"x": a, "y": a}, {"x": a.clone(), "y": a + 1}) == ["y"]


# ------------------------------------------------------------------------- compiled (nvcc)
@pytest.fixture(scope="module")
def cubins(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    pairs = cv.build(["base", "pf2", "cs", "mb6"], ["fp32", "bf16"], "paper", out, "sm_90",
                     nvcc=NVCC)
    pairs["sj"] = cv.build(["pf2"], ["fp32"], "sj", out, "sm_90", nvcc=NVCC)["pf2", "fp32"]
    return pairs


def _ops(cubin):
    return re.findall(r"\b((?:LDG|STG|CCTL)\.[A-Z0-9.]+)", _sass.dump_sass(cubin))


@needs_nvcc
def test_base_is_plain_and_prefetch_keeps_read_only_loads(cubins):
    for d in ("fp32", "bf16"):
        base, pf = _ops(cubins["base", d]), _ops(cubins["pf2", d])
        assert not any(o.startswith("CCTL") or ".EF" in o for o in base), d
        assert "CCTL.E.PF2" in pf, d
        # the row loads stay on the read-only path (__ldg): the asm statement alone would
        # make them plain LDG.E.128
        loads = [o for o in pf if o.startswith("LDG") and ".128" in o]
        assert loads and all(o == "LDG.E.128.CONSTANT" for o in loads), (d, set(loads))


@needs_nvcc
def test_streaming_variant_is_evict_first_everywhere(cubins):
    for d in ("fp32", "bf16"):
        mem = [o for o in _ops(cubins["cs", d]) if o.startswith(("LDG", "STG"))]
        assert mem and all(".EF" in o for o in mem), (d, set(mem))


@needs_nvcc
def test_static_rows(cubins):
    rows = {(r[0], r[1]): dict(zip(cv.STATIC_HEADERS, r))
            for v, d in [("base", "fp32"), ("pf2", "fp32"), ("mb6", "bf16"), ("base", "bf16")]
            for r in [cv.static_row(v, d, "paper", cubins[v, d])]}
    base, pf = rows["base", "fp32"], rows["pf2", "fp32"]
    # one prefetch per step in each direction's loop (paper's backward reads only grad_s; its
    # window bits are left to the loads), none in base
    assert base["fwd pf/step"] == base["bwd pf/step"] == 0
    assert pf["fwd pf/step"] == pf["bwd pf/step"] == 1
    for r in rows.values():
        assert 5 < r["fwd insn/elem"] < 25 and 5 < r["bwd insn/elem"] < 25, r
    assert rows["base", "fp32"]["fwd stack"] == 0 and rows["base", "bf16"]["bwd stack"] == 0
    # at least 6 blocks of 256 threads: at most 40 registers, so 1536 threads per SM
    mb = rows["mb6", "bf16"]
    assert mb["fwd regs"] <= 40 and mb["bwd regs"] <= 40 and mb["fwd thr/SM"] == 1536
    # SpikingJelly's neuron: backward prefetches grad_s and H
    sj = dict(zip(cv.STATIC_HEADERS, cv.static_row("pf2", "fp32", "sj", cubins["sj"])))
    assert sj["fwd pf/step"] == 1 and sj["bwd pf/step"] == 2


@needs_nvcc
def test_static_main_writes_json(tmp_path):
    out = tmp_path / "v.json"
    assert cv.main(["--static", "--variants", "t128", "--dtype", "fp16", "--json",
                    str(out)]) == 0
    import json
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["static"]] == ["base", "t128"]
    assert data["timed"] == [] and data["arch"] == "sm_90"


# ------------------------------------------------------- the GPU run's logic, on the CPU
class _StandInKernel:
    """An entry point of a variant module, run by the CPU shim; variant 'broken' starts every
    neuron 0.25 higher (so the bitwise check has something to catch)."""

    def __init__(self, lib, name, dtype, neuron, variant):
        m = _sass.ENTRY_RE.fullmatch(name)
        self.lib, self.fwd, self.vec = lib, m.group(1) == "fwd", int(m.group(2))
        self.third, self.dtype, self.variant = int(m.group(3)), dtype, variant
        self.lif = cv.neuron_config(neuron).lif()
        self.launches = 0

    def __call__(self, grid, block, args):
        assert block == (cv.threads(self.variant),)
        ptrs = [int(a) or None for a in args[:7]]
        T, N = int(args[7]), int(args[8])
        assert grid[0] * block[0] * self.vec >= N > (grid[0] - 1) * block[0] * self.vec
        tau, _, vth, vr, alpha = (float(a) for a in args[9:14])
        flags = (int(self.lif.hard_reset), int(self.lif.decay_input),
                 int(self.lif.detach_reset))
        self.launches += 1
        if self.fwd:
            v_init = float(args[16]) + (0.25 if self.variant == "broken" else 0.0)
            assert self.lib.lif_emu_forward(self.dtype, self.vec, self.third, 1, ptrs[0],
                                            ptrs[1], v_init, *ptrs[2:7], T, N, tau, vth, vr,
                                            alpha, *flags) == 0
        else:
            assert self.lib.lif_emu_backward(self.dtype, self.vec, self.lif.surrogate_id,
                                             self.third, 1, *ptrs, T, N, tau, vth, vr, alpha,
                                             *flags) == 0


class _StandInCupy:
    """What cuda_variants uses of CuPy: RawModule(path=).get_function(name) and
    cuda.ExternalStream(ptr) as a context manager."""

    def __init__(self, lib):
        self.lib, self.kernels = lib, []
        outer = self

        class _Stream:
            def __init__(self, ptr):
                assert ptr == 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class _Cuda:
            ExternalStream = _Stream

        class _Module:
            def __init__(self, path):
                neuron, variant, dtype = Path(path).stem.split("_")
                self.args = (neuron, variant, SHIM_DTYPES[str(cv.DTYPES[dtype])[6:]])

            def get_function(self, name):
                neuron, variant, dtype = self.args
                k = _StandInKernel(outer.lib, name, dtype, neuron, variant)
                outer.kernels.append(k)
                return k

        self.cuda = _Cuda
        self.RawModule = _Module


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ not found")
    return build(tmp_path_factory.mktemp("variants_shim"))


def test_run_points_checks_then_times_every_variant(shim, monkeypatch, tmp_path):
    monkeypatch.setitem(cv.VARIANTS, "broken", ({}, "a stand-in variant that computes wrong"))
    args = cv.parse_args(["--variants", "t128,broken", "--dtype", "fp32,bf16", "--T", "3,9",
                          "--N", "2056", "--modes", "train,backward", "--min-reps", "2",
                          "--min-time", "0"])
    cupy = _StandInCupy(shim)
    cubins = {(v, d): tmp_path / f"paper_{v}_{d}.cubin" for v in args.variants
              for d in args.dtypes}
    rows = cv.run_points(args, cubins, torch.device("cpu"), cupy)
    table = [dict(zip(cv.TIME_HEADERS, r)) for r in rows]
    points = {(r["dtype"], r["T"], r["mode"]) for r in table}
    assert points == {(d, T, m) for d in args.dtypes for T in args.T for m in args.modes}
    for r in table:
        if r["variant"] == "broken":  # caught, not timed
            assert r["status"].startswith("DIFFERS") and "spikes" in r["status"], r
            assert r["median ms"] == "-"
        else:  # base, t128 and (train only) the build's CPU op: bit for bit base's outputs
            assert r["status"] == "ok", r
            assert r["median ms"] > 0 and r["%copy"].endswith("%"), r
    assert {r["variant"] for r in table if r["mode"] == "train"} == \
        {"base", "t128", "broken", "op"}
    assert "op" not in {r["variant"] for r in table if r["mode"] == "backward"}
    base = [r for r in table if r["variant"] == "base"]
    assert all(r["vs base"] == "1.000x" for r in base)
    assert all(k.launches > 0 for k in cupy.kernels)


def test_points_start_from_poisoned_outputs():
    p = cv.Point(torch.bfloat16, 3, 16, "sj", torch.device("cpu"))
    p.poison()
    out = p.outputs()
    assert set(out) == {"spikes", "v_last", "grad_x", "H"}
    assert all(torch.isnan(t).all() for t in out.values())
    q = cv.Point(torch.float32, 9, 16, "paper", torch.device("cpu"))
    q.poison()
    assert q.outputs()["bits"].shape == (2, 16) and (q.outputs()["bits"] == 0xA5).all()
    # the paper's neuron saves bits, SpikingJelly's H; 16-bit storage moves less
    mb = cv.min_bytes
    assert mb("train", 8, 16, torch.float32, "paper") < mb("train", 8, 16, torch.float32, "sj")
    assert mb("train", 8, 16, torch.bfloat16, "paper") < mb("train", 8, 16, torch.float32, "paper")
