"""The CUDA kernel bodies (csrc/cuda/lif_kernels.cuh) run on the CPU, against the CPU kernel.

tests/cuda_on_cpu.cpp compiles the bodies with g++ (CUDA built-ins defined there) and launches
them over the whole grid, block by block and thread by thread. Every output is compared bit for
bit with the `cpp` backend's op (the same per-step header, csrc/lif_step.h): spikes, v_last,
V[t], the saved H or window bits, grad_x and grad_v0 (asked for with a v0 tensor; without one,
a null grad_v0 the bodies must not touch), for fp32, bf16 and fp64, the 16-byte
width with the flags fixed at compile time (as the GPU build runs them) and at run time, the
VEC=1 fallback, odd T (partial window-bit bytes), N over several blocks, and every reset /
surrogate / decay_input / detach_reset combination. fp16 converts with PTX only and is left to
the GPU tests. Outputs start as NaN (bits: 0xA5), so an element a body forgets fails.
"""
import ctypes
from collections import Counter

import pytest
import torch

from tssd_fast.ops.config import FLAG_GRAD_V0, LIFConfig, window_rows
from tssd_fast.ops.lif_op import op_overloads
from _cuda_on_cpu import GXX, build
from _reference64 import Neuron, all_neurons

DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float64: 2}
VEC16 = {torch.float32: 4, torch.bfloat16: 8, torch.float64: 2}
SURROGATES = {"Rect": 0, "Sigmoid": 1, "ATan": 2}

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ not found")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build(tmp_path_factory.mktemp("cuda_on_cpu"))


def _p(t):
    return None if t is None else t.data_ptr()


def _fresh(shape, dtype):
    if dtype == torch.uint8:
        return torch.full(shape, 0xA5, dtype=torch.uint8)
    return torch.full(shape, float("nan"), dtype=dtype)


def _same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.shape, b.shape)
    # bit for bit (NaN-filled outputs that were never written fail here too)
    if a.dtype == torch.uint8:
        assert torch.equal(a, b), what
    else:
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), what


def _run(lib, n, dtype, T, N, vec, static_flags, with_v0, store_v, with_gvs, seed=0):
    g = torch.Generator().manual_seed(seed)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    cfg = LIFConfig(n.tau, n.v_threshold, n.v_reset, n.decay_input, SURROGATES[n.surrogate],
                    n.alpha, n.detach_reset)
    x = (torch.randn(T, N, generator=g, dtype=torch.float64) * 0.8 + 0.6).to(dtype)
    v0 = (torch.randn(N, generator=g, dtype=torch.float64) * 0.5).to(acc) if with_v0 else None
    fwd, bwd, _ = op_overloads("cpp")
    spikes, v_last, v_seq, saved = fwd(x, v0, cfg.v_init, *cfg.op_args(store_v, save=True))
    bits_mode = saved.dtype == torch.uint8

    e_spikes, e_vlast = _fresh((T, N), dtype), _fresh((N,), acc)
    e_vseq = _fresh((T, N), acc) if store_v else None
    e_h = None if bits_mode else _fresh((T, N), acc)
    e_bits = _fresh((window_rows(T), N), torch.uint8) if bits_mode else None
    save = 2 if bits_mode else 1
    tau, vth, vr, alpha = cfg.scalars()
    flags = (int(cfg.hard_reset), int(cfg.decay_input), int(cfg.detach_reset))
    assert lib.lif_emu_forward(DTYPES[dtype], vec, save, static_flags, _p(x), _p(v0),
                               cfg.v_init, _p(e_spikes), _p(e_vlast), _p(e_vseq), _p(e_h),
                               _p(e_bits), T, N, tau, vth, vr, alpha, *flags) == 0
    _same(e_spikes, spikes, "spikes")
    _same(e_vlast, v_last, "v_last")
    if store_v:
        _same(e_vseq, v_seq, "v_seq")
    _same(e_bits if bits_mode else e_h, saved, "saved bits" if bits_mode else "saved H")

    gs = torch.randn(T, N, generator=g, dtype=torch.float64).to(dtype)
    gvs = torch.randn(T, N, generator=g, dtype=torch.float64).to(acc) if with_gvs else None
    gvl = torch.randn(N, generator=g, dtype=torch.float64).to(acc) if with_gvs else None
    # grad_v0 is asked for when there is a v0 tensor (as the autograd formula does); else the
    # op returns [0] and the bodies get a null pointer
    gx, gv0 = bwd(gs, gvs, gvl, saved, *cfg.scalars(),
                  cfg.flags() | (FLAG_GRAD_V0 if with_v0 else 0), [])
    e_gx, e_gv0 = _fresh((T, N), dtype), _fresh((N,), acc) if with_v0 else None
    assert lib.lif_emu_backward(DTYPES[dtype], vec, SURROGATES[n.surrogate], int(bits_mode),
                                static_flags, _p(gs), _p(gvs), _p(gvl),
                                None if bits_mode else _p(saved), _p(saved) if bits_mode else None,
                                _p(e_gx), _p(e_gv0), T, N, tau, vth, vr, alpha, *flags) == 0
    _same(e_gx, gx, "grad_x")
    if with_v0:
        _same(e_gv0, gv0, "grad_v0")
    else:
        assert gv0.shape == (0,) and gv0.dtype == acc
    return dict(x=x, grad_s=gs, grad_v_seq=gvs, h=None if bits_mode else saved)


NEURONS = all_neurons()[::2] + [n for n in all_neurons(tau=1.7, v_threshold=0.6)[1::5]]


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("n", NEURONS, ids=str)
def test_sixteen_byte_kernels_static_flags(lib, n, dtype):
    vec = VEC16[dtype]
    # T = 9: a full window-bit byte and a partial one; N over three blocks of 256 threads
    _run(lib, n, dtype, T=9, N=vec * 600, vec=vec, static_flags=1, with_v0=True, store_v=True,
         with_gvs=True)
    _run(lib, n, dtype, T=3, N=vec * 7, vec=vec, static_flags=1, with_v0=False, store_v=False,
         with_gvs=False, seed=1)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("T", [1, 2, 7, 8, 16, 17])
def test_time_lengths_paper_and_sj_neurons(lib, dtype, T):
    paper = Neuron(2.0, False, 1.0, None, "Rect", 1.0, False)
    sj = Neuron(2.0, True, 1.0, 0.0, "Sigmoid", 4.0, False)  # SpikingJelly's LIFNode defaults
    for n in (paper, sj):
        for static_flags in (0, 1):
            _run(lib, n, dtype, T=T, N=VEC16[dtype] * 64, vec=VEC16[dtype],
                 static_flags=static_flags, with_v0=static_flags == 1, store_v=T % 2 == 1,
                 with_gvs=T % 2 == 0, seed=T)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("n", all_neurons()[::5], ids=str)
def test_vec1_fallback_runtime_flags(lib, n, dtype):
    # odd N: the launchers' VEC=1 kernel, flags read at run time
    _run(lib, n, dtype, T=5, N=37, vec=1, static_flags=0, with_v0=True, store_v=True,
         with_gvs=True)


# The tuning switch LIF_L2_PREFETCH (benchmarks/cuda_variants.py): the same results, and the
# prefetches land exactly on the rows the loads will want, each once, inside the inputs.
@pytest.fixture(scope="module", params=[1, 4], ids=lambda d: f"prefetch{d}")
def lib_prefetch(request, tmp_path_factory):
    so = build(tmp_path_factory.mktemp(f"cuda_on_cpu_pf{request.param}"),
                f"-DLIF_L2_PREFETCH={request.param}", "-DLIF_TEST_PREFETCH")
    so.lif_emu_prefetch_count.restype = ctypes.c_int64
    so.lif_emu_prefetch_copy.argtypes = [ctypes.c_void_p]
    return so


def _prefetched(lib):
    out = torch.empty(lib.lif_emu_prefetch_count(), dtype=torch.int64)
    lib.lif_emu_prefetch_copy(out.data_ptr())
    lib.lif_emu_prefetch_clear()
    return Counter(out.tolist())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("T", [1, 2, 3, 5, 9, 17])
def test_l2_prefetch_switch_prefetches_each_later_row_once(lib_prefetch, dtype, T):
    paper = Neuron(2.0, False, 1.0, None, "Rect", 1.0, False)
    sj = Neuron(2.0, True, 1.0, 0.0, "Sigmoid", 4.0, False)
    vec, N = VEC16[dtype], VEC16[dtype] * 300  # two blocks, the second one partly idle
    for n, with_gvs in ((paper, False), (sj, True)):
        lib_prefetch.lif_emu_prefetch_clear()
        inputs = _run(lib_prefetch, n, dtype, T=T, N=N, vec=vec, static_flags=1, with_v0=False,
                      store_v=False, with_gvs=with_gvs, seed=T)
        got = _prefetched(lib_prefetch)

        def rows(t, first, last):  # every thread's address in rows first .. last-1
            return Counter(t.data_ptr() + (r * N + i) * t.element_size()
                           for r in range(first, last) for i in range(0, N, vec))
        # forward loads rows 0, 1 and prefetches 2 .. T-1; backward loads T-1, T-2 and
        # prefetches T-3 .. 0 of every stream it reads (grad_s, + grad_v_seq, + H)
        want = rows(inputs["x"], 2, T)
        for name in ("grad_s", "grad_v_seq", "h"):
            if inputs[name] is not None:
                want += rows(inputs[name], 0, T - 2)
        assert got == want, (str(n), T, sum(got.values()), sum(want.values()))
