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
"""
import contextlib
import os
from typing import Optional

import torch

from .config import LIFConfig, tau_is_pow2

try:  # optional dependency
    import triton
    import triton.language as tl
    _IMPORT_ERROR: Optional[BaseException] = None
except Exception as e:  # noqa: BLE001 - any import failure only disables this backend
    triton = None
    tl = None
    _IMPORT_ERROR = e

SAVE_NONE, SAVE_H, SAVE_BITS = 0, 1, 2
MAX_BLOCK = 1024


def unavailable_reason() -> str:
    """Why launcher() returns None ('' when it does not)."""
    if triton is None:
        return (f"triton is not importable ({type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}); "
                f"pip install triton")
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

    @triton.jit(do_not_specialize=["T"])
    def _lif_fwd_kernel(x_ptr, v0_ptr, s_ptr, v_last_ptr, v_seq_ptr, h_ptr, bits_ptr, T, N,
                        tau_d: tl.float64, inv_tau_d: tl.float64, v_th_d: tl.float64,
                        v_reset_d: tl.float64, half_width_d: tl.float64,
                        HARD: tl.constexpr, DECAY: tl.constexpr, TAU_POW2: tl.constexpr,
                        SAVE: tl.constexpr, STORE_V: tl.constexpr, F64: tl.constexpr,
                        BLOCK: tl.constexpr):
        ACC = v0_ptr.dtype.element_ty
        tau = tl.full([], tau_d, ACC)
        inv_tau = tl.full([], inv_tau_d, ACC)  # exact when TAU_POW2, unused otherwise
        v_th = tl.full([], v_th_d, ACC)
        v_reset = tl.full([], v_reset_d, ACC)
        half_width = tl.full([], half_width_d, ACC)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        off = offs.to(tl.int64)  # element offset of row t: t*N + n (64-bit)
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
        m = tl.zeros([BLOCK], dtype=tl.int32)
        x_next = tl.load(x_ptr + off, mask=mask, other=0.0)
        for t in range(0, T):
            x = x_next.to(ACC)
            # step t+1, in flight during step t (masks from scalar conditions are built as
            # `offs < limit`: the interpreter mishandles block & scalar boolean masks)
            x_next = tl.load(x_ptr + off + N, mask=offs < tl.where(t + 1 < T, N, 0), other=0.0)
            h = _charge(v, x, tau, inv_tau, v_reset, HARD, DECAY, TAU_POW2, F64)
            s = _fire(h, v_th)
            tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=mask)
            if SAVE == 1:
                tl.store(h_ptr + off, h, mask=mask)
            if SAVE == 2:
                bit = t % 8
                m = m | (_rect_window(h, v_th, half_width).to(tl.int32) << bit)
                row = tl.cast(t // 8, tl.int64) * N
                tl.store(bits_ptr + row + offs, m.to(tl.uint8),
                         mask=offs < tl.where((t % 8 == 7) | (t == T - 1), N, 0))
                m = tl.where(bit == 7, 0, m)
            v = _reset(h, s, v_th, v_reset, HARD)
            if STORE_V:
                tl.store(v_seq_ptr + off, v, mask=mask)
            off += N
        tl.store(v_last_ptr + offs, v, mask=mask)

    @triton.jit(do_not_specialize=["T"])
    def _lif_bwd_kernel(gs_ptr, gvs_ptr, gvl_ptr, h_ptr, bits_ptr, gx_ptr, gv0_ptr, T, N,
                        tau_d: tl.float64, inv_tau_d: tl.float64, v_th_d: tl.float64,
                        v_reset_d: tl.float64, alpha_d: tl.float64, half_width_d: tl.float64,
                        atan_scale_d: tl.float64,
                        HARD: tl.constexpr, DECAY: tl.constexpr, DETACH: tl.constexpr,
                        TAU_POW2: tl.constexpr, SURR: tl.constexpr, BITS: tl.constexpr,
                        HAS_GVS: tl.constexpr, HAS_GVL: tl.constexpr, F64: tl.constexpr,
                        BLOCK: tl.constexpr):
        ACC = gv0_ptr.dtype.element_ty
        tau = tl.full([], tau_d, ACC)
        inv_tau = tl.full([], inv_tau_d, ACC)
        v_th = tl.full([], v_th_d, ACC)
        v_reset = tl.full([], v_reset_d, ACC)
        alpha = tl.full([], alpha_d, ACC)
        half_width = tl.full([], half_width_d, ACC)
        atan_scale = tl.full([], atan_scale_d, ACC)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        off = tl.cast(T - 1, tl.int64) * N + offs.to(tl.int64)  # row T-1
        if HAS_GVL:
            gv = tl.load(gvl_ptr + offs, mask=mask, other=0.0)
        else:
            gv = tl.zeros([BLOCK], dtype=ACC)
        gs_next = tl.load(gs_ptr + off, mask=mask, other=0.0)
        if HAS_GVS:
            gvs_next = tl.load(gvs_ptr + off, mask=mask, other=0.0)
        else:
            gvs_next = tl.zeros([BLOCK], dtype=ACC)
        if BITS:
            m = tl.load(bits_ptr + tl.cast((T - 1) // 8, tl.int64) * N + offs, mask=mask,
                        other=0).to(tl.int32)
            h_next = tl.zeros([BLOCK], dtype=ACC)
        else:
            m = tl.zeros([BLOCK], dtype=tl.int32)
            h_next = tl.load(h_ptr + off, mask=mask, other=0.0)
        for i in range(0, T):
            t = T - 1 - i
            gs = gs_next.to(ACC)
            gvs = gvs_next
            h = h_next
            prev = offs < tl.where(t > 0, N, 0)  # step t-1 exists: load it now
            gs_next = tl.load(gs_ptr + off - N, mask=prev, other=0.0)
            if HAS_GVS:
                gvs_next = tl.load(gvs_ptr + off - N, mask=prev, other=0.0)
                gv = gv + gvs
            if BITS:
                # Rect + soft reset (the only case saving bits): dV/dH reads neither H nor S
                sg = tl.where(((m >> (t % 8)) & 1) != 0, alpha, 0.0)
                h = tl.zeros([BLOCK], dtype=ACC)
                s = h
            else:
                h_next = tl.load(h_ptr + off - N, mask=prev, other=0.0)
                sg = _surrogate_grad(h, v_th, alpha, half_width, atan_scale, SURR, F64)
                s = _fire(h, v_th)
            gx, gv = _backward_step(gs, gv, h, s, sg, tau, inv_tau, v_th, v_reset, HARD, DECAY,
                                    DETACH, TAU_POW2, F64)
            tl.store(gx_ptr + off, gx.to(gx_ptr.dtype.element_ty), mask=mask)
            if BITS:
                reload = offs < tl.where((t > 0) & (t % 8 == 0), N, 0)  # previous byte row
                row = tl.cast(t // 8 - 1, tl.int64) * N
                m = tl.where(reload,
                             tl.load(bits_ptr + row + offs, mask=reload, other=0).to(tl.int32), m)
            off -= N
        tl.store(gv0_ptr + offs, gv, mask=mask)


def _block(N: int) -> int:
    return min(MAX_BLOCK, max(64, triton.next_power_of_2(N)))


def _num_warps(block: int) -> int:
    return max(1, min(4, block // 256))


def _device_of(t: torch.Tensor):
    """Triton launches on the current CUDA device (and its current stream): make it t's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check(t, like, name):
    if t is None:
        return
    if t.device != like.device or not t.is_contiguous():
        raise RuntimeError(f"tssd_fast triton backend: {name} must be a contiguous tensor on "
                           f"{like.device}")


class TritonLauncher:
    """The launcher protocol of tssd_fast.ops.registry over the Triton kernels."""

    def forward(self, x, v0, spikes, v_last, v_seq, h_saved, bits, cfg: LIFConfig):
        T, N = x.shape
        if T == 0 or N == 0:
            return
        for t, name in ((x, "x"), (v0, "v0"), (spikes, "spikes"), (v_last, "v_last"),
                        (v_seq, "v_seq"), (h_saved, "h_saved"), (bits, "bits")):
            _check(t, x, name)
        save = SAVE_H if h_saved is not None else (SAVE_BITS if bits is not None else SAVE_NONE)
        block = _block(N)
        # Absent outputs: any valid pointer of the right dtype (never touched: constexpr off).
        with _device_of(x):
            _lif_fwd_kernel[(triton.cdiv(N, block),)](
                x, v0, spikes, v_last, v_last if v_seq is None else v_seq,
                v_last if h_saved is None else h_saved, spikes if bits is None else bits, T, N,
                float(cfg.tau), 1.0 / float(cfg.tau), float(cfg.v_threshold), cfg.v_reset_value,
                float(cfg.half_width), HARD=bool(cfg.hard_reset), DECAY=bool(cfg.decay_input),
                TAU_POW2=tau_is_pow2(cfg.tau, v0.dtype), SAVE=save, STORE_V=v_seq is not None,
                F64=v0.dtype == torch.float64,
                BLOCK=block, num_warps=_num_warps(block), enable_fp_fusion=False)

    def backward(self, grad_s, grad_v_seq, grad_v_last, h_saved, bits, grad_x, grad_v0,
                 cfg: LIFConfig):
        T, N = grad_s.shape
        if T == 0 or N == 0:
            return
        use_bits = bits is not None
        if not use_bits and h_saved is None:
            raise RuntimeError("tssd_fast triton backend: backward needs the saved H or window "
                               "bits")
        for t, name in ((grad_s, "grad_s"), (grad_v_seq, "grad_v_seq"),
                        (grad_v_last, "grad_v_last"), (h_saved, "h_saved"), (bits, "bits"),
                        (grad_x, "grad_x"), (grad_v0, "grad_v0")):
            _check(t, grad_s, name)
        block = _block(N)
        with _device_of(grad_s):
            _lif_bwd_kernel[(triton.cdiv(N, block),)](
                grad_s, grad_v0 if grad_v_seq is None else grad_v_seq,
                grad_v0 if grad_v_last is None else grad_v_last,
                grad_v0 if (use_bits or h_saved is None) else h_saved,
                grad_x if bits is None else bits, grad_x, grad_v0, T, N,
                float(cfg.tau), 1.0 / float(cfg.tau), float(cfg.v_threshold), cfg.v_reset_value,
                float(cfg.alpha), float(cfg.half_width), 1.5707963267948966 * float(cfg.alpha),
                HARD=bool(cfg.hard_reset), DECAY=bool(cfg.decay_input),
                DETACH=bool(cfg.detach_reset), TAU_POW2=tau_is_pow2(cfg.tau, grad_v0.dtype),
                SURR=0 if use_bits else int(cfg.surrogate_id),
                BITS=use_bits, HAS_GVS=grad_v_seq is not None,
                HAS_GVL=grad_v_last is not None, F64=grad_v0.dtype == torch.float64,
                BLOCK=block, num_warps=_num_warps(block), enable_fp_fusion=False)


_launcher = None


def launcher():
    """The Triton launcher, or None when triton is not importable (see unavailable_reason)."""
    global _launcher
    if triton is None:
        return None
    if _launcher is None:
        _launcher = TritonLauncher()
    return _launcher


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
