"""Backend 'triton': Triton kernels of the fused multi-step LIF op (forward and backward).

The portable GPU path, and the one CI runs on CPU tensors under TRITON_INTERPRET=1 (set before
triton is imported). Triton is optional: this module imports it inside a try, and
tssd_fast.ops.registry imports this module only when the 'triton' backend is asked for.

Layout and math follow csrc/lif_step.h and csrc/cuda/lif_kernels.cuh: one program owns BLOCK
neurons and walks the time axis over x [T, N] (row t at t*N), loading step t+1 before computing
step t; window bits [ceil(T/8), N] uint8 hold bit t%8 of row t//8. fp16 / bf16 storage is
computed in fp32, fp64 in fp64.

Exactness: fp32 division uses tl.math.div_rn (Triton's plain `/` on fp32 is an approximate
division), and every launch passes enable_fp_fusion=False (no mul+add -> FMA contraction), so
the forward runs the reference's operations in the reference's order and fp32 spikes are
bitwise equal to it. The float scalars are fp64 kernel arguments rounded in the kernel to the
compute type (round to nearest even, as make_lif_params does in C++).

Launch (host cost; a GPU step calls this twice per LIFNode): the launch shape and the kernels'
scalars are memoised per (N, dtype) and per neuron; the first launch of a specialisation goes
through Triton's JITFunction, later ones straight into the compiled kernel's launcher (_Launch).
A fresh neuron's state is the scalar v_init (HAS_V0 False), not a tensor filled per call.
"""
import functools
import os
import re
from typing import NamedTuple, Optional

import torch

from .config import LIFConfig, backward_reads_bits, save_mode, tau_is_pow2
from .reference import compute_dtype

try:  # optional dependency
    import triton
    import triton.language as tl
    _IMPORT_ERROR: Optional[BaseException] = None
except Exception as e:  # noqa: BLE001 - any import failure only disables this backend
    triton = None
    tl = None
    _IMPORT_ERROR = e

AHEAD = 2  # rows in flight per input stream when a step loads one 16-byte row per thread


def _minor_version(v: str):
    """(major, minor) of a version string; (0, 0) when it does not start with them."""
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


# The oldest Triton the kernels are checked with (CI compiles them for sm_90 and runs the launch
# path with it). Older releases break them: 3.4 and 3.5 compile fp32 division to flush-to-zero
# div.rn.ftz (not the reference's rounding of subnormals), 3.4's compiled kernels lack the
# launch API the direct launch uses, and before 3.6 nothing here was tested.
MIN_TRITON = (3, 6)
_TOO_OLD = triton is not None and _minor_version(triton.__version__) < MIN_TRITON


def unavailable_reason() -> str:
    """Why launcher() returns None ('' when it does not)."""
    if triton is None:
        return (f"triton is not importable ({type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}); "
                f"pip install triton")
    if _TOO_OLD:
        need = ".".join(map(str, MIN_TRITON))
        return (f"triton {triton.__version__} is older than {need}, the oldest release the "
                f"kernels are checked with (3.4 and 3.5 round fp32 division differently); "
                f"pip install 'triton>={need}'")
    return ""


if triton is not None:

    @triton.jit
    def _fdiv(a, b, F64: tl.constexpr):
        # Correctly rounded division (IEEE), as C++ `/` under nvcc and on the CPU.
        if F64:
            return a / b
        else:
            a, b = tl.broadcast(a, b)  # div_rn wants operands of one shape
            return tl.math.div_rn(a, b)

    # The per-step math, one function per function of csrc/lif_step.h (same names without
    # the lif_ prefix, same operation order), so the two can be read side by side.

    @triton.jit
    def _div_tau(a, tau, inv_tau, TAU_POW2: tl.constexpr, F64: tl.constexpr):
        # lif_div_tau: a / tau; for a power-of-two tau the multiply by 1/tau, the same bits.
        if TAU_POW2:
            return a * inv_tau
        else:
            return _fdiv(a, tau, F64)

    @triton.jit
    def _charge(v, x, tau, inv_tau, v_reset, HARD: tl.constexpr, DECAY: tl.constexpr,
                TAU_POW2: tl.constexpr, F64: tl.constexpr):
        # lif_charge: H[t] from V[t-1] and X[t] (soft reset: Vr = +0, and v - 0 is v).
        if HARD:
            vm = v - v_reset
        else:
            vm = v
        if DECAY:
            h = v + _div_tau(x - vm, tau, inv_tau, TAU_POW2, F64)
        else:
            h = v - _div_tau(vm, tau, inv_tau, TAU_POW2, F64) + x
        return h

    @triton.jit
    def _fire(h, v_th):
        # lif_fire: S[t] = heaviside(H[t] - v_threshold); H == threshold fires.
        return tl.where(h - v_th >= 0.0, 1.0, 0.0).to(h.dtype)

    @triton.jit
    def _reset(h, s, v_th, v_reset, HARD: tl.constexpr):
        # lif_reset: V[t] from H[t] and S[t] (s is exactly 0 or 1).
        if HARD:
            v = s * v_reset + (1.0 - s) * h
        else:
            v = h - s * v_th
        return v

    @triton.jit
    def _rect_window(h, v_th, half_width):
        # lif_rect_window: 1{|H - v_threshold| < 0.5/alpha}.
        return tl.abs(h - v_th) < half_width

    @triton.jit
    def _surrogate_grad(h, v_th, alpha, half_width, atan_scale, SURR: tl.constexpr,
                        F64: tl.constexpr):
        # lif_surrogate_grad: dS/dH at u = H - v_threshold (0 Rect, 1 Sigmoid, 2 ATan).
        u = h - v_th
        if SURR == 0:
            sg = tl.where(_rect_window(h, v_th, half_width), alpha, 0.0)
        elif SURR == 1:
            sig = _fdiv(tl.full(u.shape, 1.0, u.dtype), 1.0 + tl.exp(-(alpha * u)), F64)
            sg = alpha * sig * (1.0 - sig)
        else:
            z = atan_scale * u
            sg = _fdiv(alpha * 0.5, 1.0 + z * z, F64)  # alpha * 0.5 == alpha / 2 exactly
        return sg

    @triton.jit
    def _dv_dh(h, s, sg, v_th, v_reset, HARD: tl.constexpr, DETACH: tl.constexpr):
        # lif_dv_dh: dV[t]/dH[t] given the surrogate gradient sg.
        if HARD:
            if DETACH:
                d = 1.0 - s
            else:
                d = (1.0 - s) + (v_reset - h) * sg
        else:
            if DETACH:
                d = tl.full(sg.shape, 1.0, sg.dtype)
            else:
                d = 1.0 - v_th * sg
        return d

    @triton.jit
    def _backward_step(gs, gv, h, s, sg, tau, inv_tau, v_th, v_reset, HARD: tl.constexpr,
                       DECAY: tl.constexpr, DETACH: tl.constexpr, TAU_POW2: tl.constexpr,
                       F64: tl.constexpr):
        # lif_backward_step: (dL/dX[t], dL/dV[t-1]) from dL/dS[t], dL/dV[t], H[t], S[t], sg.
        gh = gs * sg + gv * _dv_dh(h, s, sg, v_th, v_reset, HARD, DETACH)
        gh_tau = _div_tau(gh, tau, inv_tau, TAU_POW2, F64)
        gv_prev = gh - gh_tau  # dH[t]/dV[t-1] = 1 - 1/tau, written as autograd computes it
        if DECAY:
            gx = gh_tau
        else:
            gx = gh
        return gx, gv_prev

    # The time loops run T // 8 groups of 8 steps (a window-bit byte is stored or loaded once
    # per group), then the T % 8 remaining steps. Row pointers are scalars moved by N per step;
    # `offs` stays int32. A step always loads the row AHEAD rows on, clamped to the last (or
    # first) row, so no step computes a mask and no load leaves the tensor.

    @triton.jit
    def _load_row(ptr, mask):
        if mask is None:
            return tl.load(ptr)
        else:
            return tl.load(ptr, mask=mask, other=0.0)

    @triton.jit
    def _first_rows(row, row2, offs, mask, AHEAD: tl.constexpr):
        # The rows in flight when the time loop starts: row, and row2 too when AHEAD is 2.
        first = _load_row(row + offs, mask)
        second = first
        if AHEAD == 2:
            second = _load_row(row2 + offs, mask)
        return first, second

    @triton.jit
    def _fwd_step(t, T, N, bit, xa, s_row, h_row, v_row, offs, mask, v, m, x_next, x_next2, tau,
                  inv_tau, v_th, v_reset, half_width, HARD: tl.constexpr, DECAY: tl.constexpr,
                  TAU_POW2: tl.constexpr, SAVE: tl.constexpr, STORE_V: tl.constexpr,
                  F64: tl.constexpr, AHEAD: tl.constexpr):
        # Step t at rows s_row, ...; x_next (and x_next2) hold x rows t (and t + 1), and row
        # xa = min(t + AHEAD, T - 1) is loaded now. Ors the window bit into bit `bit` of m and
        # returns the state, the rows in flight and the row pointers of step t + 1.
        x = x_next.to(v.dtype)
        if AHEAD == 2:
            x_next = x_next2
            x_next2 = _load_row(xa + offs, mask)
        else:
            x_next = _load_row(xa + offs, mask)
        h = _charge(v, x, tau, inv_tau, v_reset, HARD, DECAY, TAU_POW2, F64)
        s = _fire(h, v_th)
        tl.store(s_row + offs, s.to(s_row.dtype.element_ty), mask=mask)
        if SAVE == 1:
            tl.store(h_row + offs, h, mask=mask)
        if SAVE == 2:
            m = m | tl.where(_rect_window(h, v_th, half_width), 1 << bit, 0)
        v = _reset(h, s, v_th, v_reset, HARD)
        if STORE_V:
            tl.store(v_row + offs, v, mask=mask)
        xa += tl.where(t + AHEAD < T - 1, N, 0)
        return v, m, x_next, x_next2, xa, s_row + N, h_row + N, v_row + N

    @triton.jit(do_not_specialize=["T"])
    def _lif_fwd_kernel(x_ptr, v0_ptr, s_ptr, v_last_ptr, v_seq_ptr, h_ptr, bits_ptr, T, N,
                        tau_d: tl.float64, inv_tau_d: tl.float64, v_th_d: tl.float64,
                        v_reset_d: tl.float64, half_width_d: tl.float64,
                        v_init_d: tl.float64,
                        HARD: tl.constexpr, DECAY: tl.constexpr, TAU_POW2: tl.constexpr,
                        SAVE: tl.constexpr, STORE_V: tl.constexpr, F64: tl.constexpr,
                        HAS_V0: tl.constexpr, BLOCK: tl.constexpr, EVEN: tl.constexpr,
                        AHEAD: tl.constexpr):
        # HAS_V0 False: every neuron starts at the scalar v_init (v0_ptr is a placeholder), so
        # a fresh neuron costs no fill launch and no read of a state row.
        ACC = v_last_ptr.dtype.element_ty
        tau = tl.full([], tau_d, ACC)
        inv_tau = tl.full([], inv_tau_d, ACC)  # exact when TAU_POW2, unused otherwise
        v_th = tl.full([], v_th_d, ACC)
        v_reset = tl.full([], v_reset_d, ACC)
        half_width = tl.full([], half_width_d, ACC)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        # mask None when every program is full (EVEN: N % BLOCK == 0): unpredicated accesses,
        # and no zeroing of masked-off lanes before each load. Chosen here, in the kernel:
        # Triton 3.6 (torch 2.11's) rejects a jit helper that returns None.
        if EVEN:
            mask = None
        else:
            mask = offs < N
        if HAS_V0:
            v = _load_row(v0_ptr + offs, mask)
        else:
            v = tl.full([BLOCK], v_init_d, ACC)
        x_next, x_next2 = _first_rows(x_ptr, x_ptr + tl.where(T > 1, N, 0), offs, mask, AHEAD)
        # xa: the row the step loads, min(t + AHEAD, T - 1), so it stops moving at the last row
        xa = x_ptr + tl.minimum(AHEAD, T - 1).to(tl.int64) * N
        s_row, h_row, v_row, b_row = s_ptr, h_ptr, v_seq_ptr, bits_ptr
        t = 0
        for g in range(0, T // 8):
            m = tl.zeros([BLOCK], dtype=tl.int32)
            for j in tl.range(0, 8, loop_unroll_factor=1):
                v, m, x_next, x_next2, xa, s_row, h_row, v_row = _fwd_step(
                    t, T, N, j, xa, s_row, h_row, v_row, offs, mask, v, m, x_next, x_next2, tau,
                    inv_tau, v_th, v_reset, half_width, HARD, DECAY, TAU_POW2, SAVE, STORE_V, F64,
                    AHEAD)
                t += 1
            if SAVE == 2:
                tl.store(b_row + offs, m.to(tl.uint8), mask=mask)
                b_row += N
        m = tl.zeros([BLOCK], dtype=tl.int32)
        for j in range(0, T % 8):
            v, m, x_next, x_next2, xa, s_row, h_row, v_row = _fwd_step(
                t, T, N, j, xa, s_row, h_row, v_row, offs, mask, v, m, x_next, x_next2, tau,
                inv_tau, v_th, v_reset, half_width, HARD, DECAY, TAU_POW2, SAVE, STORE_V, F64,
                AHEAD)
            t += 1
        if SAVE == 2:  # the last, partial byte row (masks from scalar conditions are built as
            # `offs < limit`: the interpreter mishandles block & scalar boolean masks)
            tl.store(b_row + offs, m.to(tl.uint8), mask=offs < tl.where(T % 8 != 0, N, 0))
        tl.store(v_last_ptr + offs, v, mask=mask)

    @triton.jit
    def _shift_in(nxt, row, offs, mask, AHEAD: tl.constexpr):
        # The backward's stream rotation at step t: returns the rows (t - 1, t - 2) from nxt
        # (row t - 1 when AHEAD is 2) and a load of row `row` = max(t - AHEAD, 0).
        if AHEAD == 2:
            return nxt, _load_row(row + offs, mask)
        else:
            return _load_row(row + offs, mask), nxt

    @triton.jit
    def _bwd_step(t, N, gsa, gvsa, ha, gx_row, offs, mask, gv, gs_next, gs_next2, gvs_next,
                  gvs_next2, h_next, h_next2, bit, tau, inv_tau, v_th, v_reset, alpha,
                  half_width, atan_scale, HARD: tl.constexpr, DECAY: tl.constexpr,
                  DETACH: tl.constexpr, TAU_POW2: tl.constexpr, SURR: tl.constexpr,
                  BITS: tl.constexpr, HAS_GVS: tl.constexpr, F64: tl.constexpr,
                  AHEAD: tl.constexpr):
        # Step t, writing row gx_row; the *_next (and *_next2) hold rows t (and t - 1), and the
        # rows gsa, gvsa, ha = max(t - AHEAD, 0) are loaded now. Returns dL/dV[t-1], the rows
        # in flight and the row pointers of step t - 1.
        gs = gs_next.to(gv.dtype)
        gs_next, gs_next2 = _shift_in(gs_next2, gsa, offs, mask, AHEAD)
        if HAS_GVS:
            gv = gv + gvs_next
            gvs_next, gvs_next2 = _shift_in(gvs_next2, gvsa, offs, mask, AHEAD)
        if BITS:
            # Rect + soft reset (the only case saving bits): dV/dH reads neither H nor S
            sg = tl.where(bit != 0, alpha, 0.0).to(gv.dtype)
            h = tl.zeros_like(gv)
            s = h
        else:
            h = h_next
            h_next, h_next2 = _shift_in(h_next2, ha, offs, mask, AHEAD)
            sg = _surrogate_grad(h, v_th, alpha, half_width, atan_scale, SURR, F64)
            s = _fire(h, v_th)
        gx, gv = _backward_step(gs, gv, h, s, sg, tau, inv_tau, v_th, v_reset, HARD, DECAY,
                                DETACH, TAU_POW2, F64)
        tl.store(gx_row + offs, gx.to(gx_row.dtype.element_ty), mask=mask)
        down = tl.where(t > AHEAD, N, 0)
        return (gv, gs_next, gs_next2, gvs_next, gvs_next2, h_next, h_next2, gsa - down,
                gvsa - down, ha - down, gx_row - N)

    @triton.jit(do_not_specialize=["T"])
    def _lif_bwd_kernel(gs_ptr, gvs_ptr, gvl_ptr, h_ptr, bits_ptr, gx_ptr, gv0_ptr, T, N,
                        tau_d: tl.float64, inv_tau_d: tl.float64, v_th_d: tl.float64,
                        v_reset_d: tl.float64, alpha_d: tl.float64, half_width_d: tl.float64,
                        atan_scale_d: tl.float64,
                        HARD: tl.constexpr, DECAY: tl.constexpr, DETACH: tl.constexpr,
                        TAU_POW2: tl.constexpr, SURR: tl.constexpr, BITS: tl.constexpr,
                        HAS_GVS: tl.constexpr, HAS_GVL: tl.constexpr, HAS_GV0: tl.constexpr,
                        F64: tl.constexpr, BLOCK: tl.constexpr, EVEN: tl.constexpr,
                        AHEAD: tl.constexpr):
        # Time runs backward: first the T % 8 steps of the partial byte row T // 8 (from the
        # top), then the full groups T // 8 - 1 .. 0, each from its bit 7 to its bit 0.
        ACC = tl.float64 if F64 else tl.float32  # gv0_ptr is a stand-in without HAS_GV0
        tau = tl.full([], tau_d, ACC)
        inv_tau = tl.full([], inv_tau_d, ACC)
        v_th = tl.full([], v_th_d, ACC)
        v_reset = tl.full([], v_reset_d, ACC)
        alpha = tl.full([], alpha_d, ACC)
        half_width = tl.full([], half_width_d, ACC)
        atan_scale = tl.full([], atan_scale_d, ACC)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        if EVEN:  # as in _lif_fwd_kernel
            mask = None
        else:
            mask = offs < N
        top = tl.cast(T - 1, tl.int64) * N  # row T - 1 (64-bit: T*N may pass 2^31)
        gs_row, gvs_row, h_row, gx_row = gs_ptr + top, gvs_ptr + top, h_ptr + top, gx_ptr + top
        below = tl.where(T > 1, N, 0)  # row T - 2, or T - 1 again
        # the rows the step at t loads, max(t - AHEAD, 0): they stop moving at row 0
        down = tl.minimum(AHEAD, T - 1).to(tl.int64) * N
        gsa, gvsa, ha = gs_row - down, gvs_row - down, h_row - down
        if HAS_GVL:
            gv = _load_row(gvl_ptr + offs, mask)
        else:
            gv = tl.zeros([BLOCK], dtype=ACC)
        gs_next, gs_next2 = _first_rows(gs_row, gs_row - below, offs, mask, AHEAD)
        gvs_next = tl.zeros([BLOCK], dtype=ACC)
        gvs_next2 = gvs_next
        if HAS_GVS:
            gvs_next, gvs_next2 = _first_rows(gvs_row, gvs_row - below, offs, mask, AHEAD)
        h_next = tl.zeros([BLOCK], dtype=ACC)
        h_next2 = h_next
        if not BITS:
            h_next, h_next2 = _first_rows(h_row, h_row - below, offs, mask, AHEAD)
        groups = T // 8
        b_row = bits_ptr + tl.cast(groups, tl.int64) * N
        m = tl.zeros([BLOCK], dtype=tl.int32)
        if BITS:
            m = tl.load(b_row + offs, mask=offs < tl.where(T % 8 != 0, N, 0), other=0)
            m = m.to(tl.int32)
        t = T - 1
        for i in range(0, T % 8):
            (gv, gs_next, gs_next2, gvs_next, gvs_next2, h_next, h_next2, gsa, gvsa, ha,
             gx_row) = _bwd_step(
                t, N, gsa, gvsa, ha, gx_row, offs, mask, gv, gs_next, gs_next2, gvs_next,
                gvs_next2, h_next, h_next2, m & (1 << (T % 8 - 1 - i)), tau, inv_tau, v_th,
                v_reset, alpha, half_width, atan_scale, HARD, DECAY, DETACH, TAU_POW2, SURR,
                BITS, HAS_GVS, F64, AHEAD)
            t -= 1
        m_next = tl.zeros([BLOCK], dtype=tl.int32)
        if BITS:  # the next full byte row, one group ahead
            m_next = tl.load(b_row - N + offs, mask=offs < tl.where(groups > 0, N, 0), other=0)
            m_next = m_next.to(tl.int32)
        for g in range(0, groups):
            b_row -= N
            m = m_next
            if BITS:
                m_next = _load_row(b_row - tl.where(g + 1 < groups, N, 0) + offs, mask)
                m_next = m_next.to(tl.int32)
            for k in tl.range(0, 8, loop_unroll_factor=1):
                (gv, gs_next, gs_next2, gvs_next, gvs_next2, h_next, h_next2, gsa, gvsa, ha,
                 gx_row) = _bwd_step(
                    t, N, gsa, gvsa, ha, gx_row, offs, mask, gv, gs_next, gs_next2, gvs_next,
                    gvs_next2, h_next, h_next2, m & (1 << (7 - k)), tau, inv_tau, v_th, v_reset,
                    alpha, half_width, atan_scale, HARD, DECAY, DETACH, TAU_POW2, SURR, BITS,
                    HAS_GVS, F64, AHEAD)
                t -= 1
        if HAS_GV0:  # else not wanted: no v0 tensor needs a gradient
            tl.store(gv0_ptr + offs, gv, mask=mask)


@functools.lru_cache(maxsize=1024)
def _launch_shape(N: int, storage: torch.dtype):
    """(BLOCK, num_warps): 4 warps, each thread 16 bytes of a row of the storage dtype (4 fp32,
    8 bf16 / fp16, 2 fp64), so every row access is one 16-byte load or store per thread and the
    window-bit bytes share the rows' layout (no shared-memory layout conversion). Small N get a
    smaller block. Plain Python: triton.cdiv / next_power_of_2 are JIT functions, ~5 µs a call
    from the host."""
    per_thread = max(1, 16 // storage.itemsize)
    block = min(128 * per_thread, max(32, 1 << max(0, N - 1).bit_length()))
    return block, max(1, min(4, block // (32 * per_thread)))


def _ahead(forward: bool, bits: bool = False, has_gvs: bool = False) -> int:
    """Rows each input stream keeps in flight: AHEAD when a step loads one row per thread (the
    forward's x; the backward's grad_s with window bits and no grad_v_seq), else 1 (grad_s + H
    or + grad_v_seq: two rows ahead would cost too many registers)."""
    return AHEAD if forward or (bits and not has_gvs) else 1


class _Scalars(NamedTuple):
    """A neuron's kernel arguments for one compute dtype: the float scalars (rounded in the
    kernels) and the flags that are constexprs."""
    tau: float
    inv_tau: float
    v_th: float
    v_reset: float
    alpha: float
    half_width: float
    atan_scale: float
    HARD: bool
    DECAY: bool
    DETACH: bool
    TAU_POW2: bool
    F64: bool


@functools.lru_cache(maxsize=256)
def _scalars(cfg: LIFConfig, acc: torch.dtype) -> _Scalars:
    """The kernel arguments of neuron `cfg` with compute dtype `acc` (memoised: every launch
    asks)."""
    tau = float(cfg.tau)
    return _Scalars(tau, 1.0 / tau, float(cfg.v_threshold), cfg.v_reset_value, float(cfg.alpha),
                    float(cfg.half_width), 1.5707963267948966 * float(cfg.alpha),
                    bool(cfg.hard_reset), bool(cfg.decay_input), bool(cfg.detach_reset),
                    tau_is_pow2(cfg.tau, acc), acc == torch.float64)


def _check(t, like, name):
    if t is None:
        return
    if t.device != like.device or not t.is_contiguous():
        raise RuntimeError(f"tssd_fast triton backend: {name} must be a contiguous tensor on "
                           f"{like.device}")


# Set to 1 (before tssd_fast is imported) to have every direct launch ask Triton which kernel
# it would run, and raise if it is another (tests and the GPU check run with it).
CHECK_ENV = "TSSD_FAST_TRITON_LAUNCH_CHECK"
_CHECK = os.environ.get(CHECK_ENV, "0") == "1"


def _int_spec(i: int):
    # what Triton's specialisation of an int argument may depend on, or finer
    return i == 1, i % 16 == 0, -2 ** 31 <= i < 2 ** 31


class _Launch:
    """One kernel's launches. The first launch of a specialisation goes through Triton's
    JITFunction (binding, specialisation, compile and cache), which returns the compiled
    kernel; later ones with the same key go straight to that kernel's launcher, with the call
    JITFunction.run itself ends with, without its argument binding and cache-key hashing per
    call (`benchmarks/op_overhead.py --triton-host` measures both).

    The key (each pointer's dtype and 16-byte alignment; each int's value 1, divisibility by 16
    and width; the constexprs, num_warps, the device) is at least as fine as Triton's own
    specialisation, so a cached kernel is the one Triton would pick; with
    TSSD_FAST_TRITON_LAUNCH_CHECK=1 every direct launch asks Triton and raises if it is
    another. Kernels that are not JIT functions (TRITON_INTERPRET=1, a test's spy), Triton
    releases outside DIRECT_TRITON, ROCm and non-CUDA tensors take Triton's own launch."""

    def __init__(self, name: str):
        self.name, self.kernels = name, {}

    def __call__(self, grid: int, ptrs: tuple, ints: tuple, floats: tuple, consts: dict,
                 device: torch.device, num_warps: int):
        fn = globals()[self.name]  # looked up per call: tests swap the kernel for a spy
        if not (_DIRECT and device.type in _DIRECT_DEVICES
                and isinstance(fn, triton.runtime.JITFunction)):
            return fn[(grid,)](*ptrs, *ints, *floats, **consts, num_warps=num_warps,
                               enable_fp_fusion=False)
        key = (device.index, num_warps, *consts.values(),
               *[(p.dtype, p.data_ptr() % 16 == 0) for p in ptrs], *map(_int_spec, ints))
        index = device.index
        if index is None or device.type != "cuda" or index == torch.cuda.current_device():
            return self._direct(fn, key, grid, ptrs + ints + floats, consts, num_warps)
        with torch.cuda.device(index):  # Triton launches on the current device
            return self._direct(fn, key, grid, ptrs + ints + floats, consts, num_warps)

    def _direct(self, fn, key, grid, args, consts, num_warps):
        kernel = self.kernels.get(key)
        if kernel is None or _CHECK:
            if list(consts) != fn.arg_names[len(args):]:  # the direct call passes them in order
                raise RuntimeError(f"tssd_fast triton backend: {self.name} takes "
                                   f"{fn.arg_names}, got {len(args)} + {list(consts)}")
            theirs = fn.warmup(*args, grid=(grid,), **consts, num_warps=num_warps,
                               enable_fp_fusion=False)  # compiles once, launches nothing
            theirs = theirs.result() if hasattr(theirs, "result") else theirs  # async compile
            if kernel is not None and theirs is not kernel:
                raise RuntimeError(f"tssd_fast triton backend: the cached {self.name} is not "
                                   f"the kernel Triton picks for these arguments")
            theirs._init_handles()  # loads the module: sets .function and the launcher
            kernel = self.kernels[key] = theirs
        # JITFunction.run's own launch, for a cached kernel (Triton 3.6-3.9)
        args = args + tuple(consts.values())  # every argument, constexprs too, in order
        driver = triton.runtime.driver.active
        stream = driver.get_current_stream(driver.get_current_device())
        hooks = triton.knobs.runtime
        kernel.run(grid, 1, 1, stream, kernel.function, kernel.packed_metadata,
                   kernel.launch_metadata((grid,), stream, *args), hooks.launch_enter_hook,
                   hooks.launch_exit_hook, *args)


# The direct launch follows JITFunction.run's own launch call as Triton 3.6-3.9 make it (hooks in
# triton.knobs; every argument, constexprs included, passed to the kernel's launcher): other
# releases take Triton's own launch until checked. NVIDIA only: ROCm's Triton also specialises
# pointers on their address range, which the key leaves out.
DIRECT_TRITON = (MIN_TRITON, (3, 9))  # the releases the direct launch is written and tested for
_DIRECT = triton is not None and torch.version.hip is None and \
    DIRECT_TRITON[0] <= _minor_version(triton.__version__) <= DIRECT_TRITON[1] and \
    hasattr(getattr(triton, "knobs", None), "runtime") and \
    all(hasattr(triton.compiler.CompiledKernel, a) for a in ("launch_metadata", "_init_handles"))
_DIRECT_DEVICES = ("cuda",)  # benchmarks/_triton_fake_driver.py adds "cpu"
_fwd_launch = _Launch("_lif_fwd_kernel")
_bwd_launch = _Launch("_lif_bwd_kernel")


class TritonLauncher:
    """The launcher protocol of tssd_fast.ops.registry over the Triton kernels."""

    def forward(self, x, v0, spikes, v_last, v_seq, h_saved, bits, cfg: LIFConfig,
                v_init: float = 0.0):
        T, N = x.shape
        if T == 0 or N == 0:
            return
        for t, name in ((x, "x"), (v0, "v0"), (spikes, "spikes"), (v_last, "v_last"),
                        (v_seq, "v_seq"), (h_saved, "h_saved"), (bits, "bits")):
            _check(t, x, name)
        save = save_mode(h_saved, bits)
        block, warps = _launch_shape(N, x.dtype)
        k = _scalars(cfg, v_last.dtype)
        # Absent tensors: any valid pointer of the right dtype (never touched: constexpr off).
        ptrs = (x, v_last if v0 is None else v0, spikes, v_last,
                v_last if v_seq is None else v_seq, v_last if h_saved is None else h_saved,
                spikes if bits is None else bits)
        consts = dict(HARD=k.HARD, DECAY=k.DECAY, TAU_POW2=k.TAU_POW2, SAVE=save,
                      STORE_V=v_seq is not None, F64=k.F64, HAS_V0=v0 is not None,
                      BLOCK=block, EVEN=N % block == 0, AHEAD=_ahead(True))
        _fwd_launch(-(-N // block), ptrs, (T, N),
                    (k.tau, k.inv_tau, k.v_th, k.v_reset, k.half_width, float(v_init)), consts,
                    x.device, warps)

    def backward(self, grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0,
                 cfg: LIFConfig):
        T, N = grad_s.shape
        if T == 0 or N == 0:
            return
        use_bits = backward_reads_bits(h_saved, bits, "triton")
        for t, name in ((grad_s, "grad_s"), (grad_v_seq, "grad_v_seq"),
                        (grad_v_last, "grad_v_last"), (h_saved, "h_saved"), (bits, "bits"),
                        (grad_x, "grad_x"), (grad_v0, "grad_v0")):
            _check(t, grad_s, name)
        block, warps = _launch_shape(N, grad_s.dtype)
        k = _scalars(cfg, compute_dtype(grad_s.dtype))
        # Absent tensors: any valid pointer (never touched: constexpr off).
        ptrs = (grad_s, grad_x if grad_v_seq is None else grad_v_seq,
                grad_x if grad_v_last is None else grad_v_last,
                grad_x if (use_bits or h_saved is None) else h_saved,
                grad_x if bits is None else bits, grad_x, grad_x if grad_v0 is None else grad_v0)
        consts = dict(HARD=k.HARD, DECAY=k.DECAY, DETACH=k.DETACH,
                      TAU_POW2=k.TAU_POW2, SURR=0 if use_bits else int(cfg.surrogate_id),
                      BITS=use_bits, HAS_GVS=grad_v_seq is not None,
                      HAS_GVL=grad_v_last is not None, HAS_GV0=grad_v0 is not None,
                      F64=k.F64, BLOCK=block,
                      EVEN=N % block == 0, AHEAD=_ahead(False, use_bits, grad_v_seq is not None))
        _bwd_launch(-(-N // block), ptrs, (T, N),
                    (k.tau, k.inv_tau, k.v_th, k.v_reset, k.alpha, k.half_width, k.atan_scale),
                    consts, grad_s.device, warps)


_launcher = None


def launcher():
    """The Triton launcher, or None when triton is not importable or too old (see
    unavailable_reason)."""
    global _launcher
    if triton is None or _TOO_OLD:
        return None
    if _launcher is None:
        _launcher = TritonLauncher()
    return _launcher


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
