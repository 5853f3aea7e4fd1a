"""The Triton kernels, run on CPU by Triton's interpreter (TRITON_INTERPRET=1), against the tests'
float64 oracle (_reference64.py): forward and backward for every configuration in fp32, a subset
in fp16 / bf16 / fp64, odd shapes, the window-bit layout, single-step use and the backend override.

TRITON_INTERPRET must be set before triton is imported, and other test files (torch.compile,
inductor) may import triton first in this process. So the one test of the parent run starts a
child pytest on this same file with the variable set; the child (TSSD_FAST_TRITON_CHILD=1)
collects the real tests below. A second test compiles the kernels for sm_90 to PTX (no GPU
needed) and checks what the GPU would run: vector loads, exact division, no FMA in forward.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent / "benchmarks"
CHILD = os.environ.get("TSSD_FAST_TRITON_CHILD") == "1"
HAVE_TRITON = importlib.util.find_spec("triton") is not None

if not CHILD:

    def _pythonpath() -> str:
        """The child imports the tssd_fast this process imported (installed or checkout)."""
        import tssd_fast
        return os.pathsep.join([str(Path(tssd_fast.__file__).resolve().parent.parent), str(HERE),
                                os.environ.get("PYTHONPATH", "")])

    def _skip_unless_triton_backend():
        """Skip with the reason when triton is missing, or a release the backend refuses."""
        if not HAVE_TRITON:
            pytest.skip("triton is not installed")
        from tssd_fast.ops import triton_lif
        if triton_lif.unavailable_reason():
            pytest.skip(triton_lif.unavailable_reason())

    def test_triton_kernels_in_interpreter():
        _skip_unless_triton_backend()
        env = dict(os.environ, TRITON_INTERPRET="1", TSSD_FAST_TRITON_CHILD="1",
                   TSSD_FAST_BACKEND="auto", PYTHONPATH=_pythonpath())
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
             "--rootdir", str(HERE), str(Path(__file__).resolve())], cwd=str(HERE), env=env,
            capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        assert " passed" in out and " skipped" not in out, out[-3000:]

    def test_triton_kernels_compile_for_sm90_without_gpu():
        """AOT-compile forward and backward for sm_90 (Triton's own LLVM and ptxas; no GPU)
        and read the PTX: exact division (a multiply for a power-of-two tau), no FMA and no
        flush-to-zero in forward arithmetic, 16-byte global accesses."""
        _skip_unless_triton_backend()
        code = r'''
import sys, json
import torch
import _triton_aot as A
P = A.NEURONS["paper"]
out = {}
for name, (direction, storage, const) in {
        "fwd_h": ("forward", torch.float32, dict(P[0], SAVE=1, TAU_POW2=False, STORE_V=True)),
        "fwd_bits": ("forward", torch.float32, dict(P[0], TAU_POW2=False, STORE_V=True)),
        "fwd_f64": ("forward", torch.float64, dict(P[0], SAVE=1, TAU_POW2=False)),
        "fwd_pow2": ("forward", torch.float32, P[0]),
        "fwd_pow2_bf16": ("forward", torch.bfloat16, P[0]),
        "fwd_partial": ("forward", torch.float32, dict(P[0], EVEN=False)),
        "bwd_sigmoid": ("backward", torch.float32, A.NEURONS["sj"][1]),
        "bwd_bits": ("backward", torch.float32, dict(P[1], HAS_GVS=True, HAS_GVL=True)),
        "bwd_bits_bf16": ("backward", torch.bfloat16, P[1])}.items():
    kernel, used = A.compile_kernel(direction, storage, const)
    out[name] = kernel.asm["ptx"]
json.dump(out, sys.stdout)
'''
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([_pythonpath(), str(BENCH)]))
        env.pop("TRITON_INTERPRET", None)
        proc = subprocess.run([sys.executable, "-c", code], cwd=str(HERE), env=env,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 and ("ImportError" in proc.stderr or "TypeError" in proc.stderr
                                     and "ASTSource" in proc.stderr):
            pytest.skip(f"this triton has another AOT compile API: {proc.stderr[-400:]}")
        assert proc.returncode == 0, proc.stderr[-4000:]
        import json
        ptx = json.loads(proc.stdout)
        for name in ("fwd_h", "fwd_bits"):
            body = ptx[name]
            assert "div.rn.f32" in body and "div.full" not in body and "div.approx" not in body
            assert "fma." not in body, f"{name}: FMA contraction in forward"
            assert ".ftz" not in body, f"{name}: flush-to-zero arithmetic in forward"
        assert "div.rn.f64" in ptx["fwd_f64"]
        # a power-of-two tau multiplies by 1/tau: no division left in the forward
        assert not re.search(r"\bdiv\.", ptx["fwd_pow2"])
        assert re.search(r"\bmul(\.rn)?\.f32", ptx["fwd_pow2"])
        assert "fma." not in ptx["fwd_pow2"] and ".ftz" not in ptx["fwd_pow2"]
        for name in ("bwd_sigmoid", "bwd_bits", "bwd_bits_bf16"):
            assert "fma.rn.f32" not in ptx[name], name
        for name, body in ptx.items():
            # 16 bytes per thread and row: every row load and store is one 128-bit access
            wide = "v2.b64" if name == "fwd_f64" else "v4.b32"
            assert f"ld.global.{wide}" in body and f"st.global.{wide}" in body, name
        for name in ("fwd_h", "fwd_bits", "fwd_pow2", "fwd_partial", "bwd_bits", "bwd_sigmoid"):
            # fp32: the window-bit bytes share the rows' layout, so no layout conversion
            # through shared memory (and no barrier) anywhere in the kernel
            assert "bar.sync" not in ptx[name] and "st.shared" not in ptx[name], name
        # a full grid (EVEN) needs no predicate on its row accesses; a partial one does
        assert not re.search(r"@%p\d+ ld\.global\.v4", ptx["fwd_pow2"])
        assert re.search(r"@%p\d+ ld\.global\.v4", ptx["fwd_partial"])

else:  # the child: TRITON_INTERPRET=1 was set before this process imported anything
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import tssd_fast
    from tssd_fast.ops import registry
    from tssd_fast.ops import triton_lif
    from _helpers import (bwd_args, check_against_oracle, eager_and_compiled, fwd_args,
                          initial_v, oracle_input)
    from tssd_fast.ops.lif_op import op_overloads
    from _reference64 import DEFAULT_ALPHA, Neuron, all_neurons, backward, forward

    B = "triton"

    def check(n: Neuron, shape, dtype=torch.float32, store_v_seq=True, random_v0=True,
              noncontig=False):
        """Spikes and voltages bitwise equal to the oracle's forward in the compute dtype;
        gradients of x and v0 within the dtype's rounding of the float64 BPTT."""
        x = oracle_input(shape, dtype, noncontig)
        v0 = initial_v(n, shape, dtype, random_v0)
        xr = x.clone().requires_grad_()
        v_init = v0.clone().requires_grad_() if random_v0 else None
        outputs = tssd_fast.lif_multistep(xr, v_init, store_v_seq=store_v_seq, backend=B,
                                          **n.kwargs())
        check_against_oracle(n, x, v0, xr, v_init, outputs, dtype, store_v_seq)

    def test_kernels_really_run_in_the_interpreter(monkeypatch):
        assert type(triton_lif._lif_fwd_kernel).__name__ == "InterpretedFunction"
        assert type(triton_lif._lif_bwd_kernel).__name__ == "InterpretedFunction"
        assert "triton" in tssd_fast.available_backends("cpu")
        assert registry.resolve_backend(B, "cpu", torch.float32) == B
        calls = []
        real = triton_lif.TritonLauncher.forward
        monkeypatch.setattr(triton_lif.TritonLauncher, "forward",
                            lambda self, *a: (calls.append(1), real(self, *a))[1])
        tssd_fast.lif_multistep(torch.randn(3, 5), backend=B)
        assert calls == [1]

    @pytest.mark.parametrize("v0_kind", ["scalar", "tensor", "grad"])
    def test_backward_gets_grad_v0_only_when_v0_needs_it(monkeypatch, v0_kind):
        # from the scalar v_init, or a v0 without grad, the kernel gets no grad_v0 (HAS_GV0
        # off: N values fewer to write); a v0 with grad gets one, and its gradient
        seen = []
        real = triton_lif.TritonLauncher.backward
        monkeypatch.setattr(triton_lif.TritonLauncher, "backward",
                            lambda self, *a: (seen.append(a[6]), real(self, *a))[1])
        x = torch.randn(4, 2, 9, requires_grad=True)
        v = None if v0_kind == "scalar" else torch.randn(2, 9, requires_grad=v0_kind == "grad")
        spikes, v_last, _ = tssd_fast.lif_multistep(x, v, backend=B)
        (spikes.sum() + v_last.sum()).backward()
        assert len(seen) == 1 and (seen[0] is not None) == (v0_kind == "grad")
        assert torch.isfinite(x.grad).all()
        if v0_kind == "grad":
            assert v.grad.shape == (2, 9) and torch.isfinite(v.grad).all()

    def test_environment_override_selects_triton(monkeypatch):
        monkeypatch.setenv(registry.ENV_BACKEND, "triton")
        assert registry.resolve_backend("auto", "cpu", torch.float32) == "triton"
        assert registry.resolve_backend("auto", "cpu", torch.float16) == "triton"

    # All 36 configurations (reset none / 0 / -0.25 x surrogate x decay_input x detach_reset).
    @pytest.mark.parametrize("n", all_neurons(), ids=str)
    def test_every_configuration_fp32(n):
        check(n, (5, 37), torch.float32)

    @pytest.mark.parametrize("n", all_neurons(tau=1.7, v_threshold=0.6)[::2], ids=str)
    def test_other_tau_threshold_fp32_without_v_seq(n):
        check(n, (4, 29), torch.float32, store_v_seq=False, random_v0=False)

    @pytest.mark.parametrize("n", all_neurons()[::3], ids=str)
    def test_fp16(n):
        check(n, (5, 37), torch.float16)

    @pytest.mark.parametrize("n", all_neurons()[1::9], ids=str)
    def test_bf16(n):
        check(n, (4, 21), torch.bfloat16)

    @pytest.mark.parametrize("n", all_neurons(tau=1.7, v_threshold=0.6)[2::5], ids=str)
    def test_fp64(n):
        # non-dyadic scalars: the fp64 kernel must get them unrounded
        check(n, (4, 21), torch.float64)

    @pytest.mark.parametrize("surr", ["Rect", "Sigmoid", "ATan"])
    @pytest.mark.parametrize("alpha", [0.5, 3.0])
    def test_other_alphas(surr, alpha):
        for reset in (None, 0.0):
            check(Neuron(2.0, True, 1.0, reset, surr, alpha, False), (4, 17))

    SHAPES = [(1, 1), (1, 7), (5, 1), (3, 2, 5), (0, 5), (4, 0), (11, 9)]
    REPRESENTATIVE = [Neuron(2.0, False, 1.0, None, "Rect", 1.0, False),
                      Neuron(2.0, True, 1.0, 0.0, "Sigmoid", 4.0, False),
                      Neuron(3.0, True, 0.5, -0.25, "ATan", 2.0, True)]

    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("n", REPRESENTATIVE, ids=str)
    def test_odd_shapes(shape, n):
        check(n, shape, torch.float32)

    # The time loops: T // 8 groups of 8 steps, then T % 8 steps (the backward takes them in
    # the other order), and 1 or 2 rows in flight. N = 64 fills every program (EVEN: no masks),
    # N = 37 leaves the last one partial.
    def bounds_checked(monkeypatch):
        """Every load and store of a kernel launch (masked-off lanes aside) must fall inside
        one of the launch's tensor arguments: a prefetch that runs past the first or last row
        is never consumed, so only this sees it. Returns the list of launches checked."""
        from triton.runtime import interpreter as I
        ranges, launches = [], []

        def inside(ptrs, mask):
            addr = ptrs.data[mask.data].astype("uint64")
            size = ptrs.get_element_ty().primitive_bitwidth // 8
            ok = addr < 0  # all False
            for lo, hi in ranges:
                ok |= (addr >= lo) & (addr + size <= hi)
            assert ok.all(), f"{int((~ok).sum())} accesses outside the launch's tensors"

        load, store = I.InterpreterBuilder.create_masked_load, I.InterpreterBuilder.create_masked_store
        monkeypatch.setattr(I.InterpreterBuilder, "create_masked_load",
                            lambda self, p, m, *a: (inside(p, m), load(self, p, m, *a))[1])
        monkeypatch.setattr(I.InterpreterBuilder, "create_masked_store",
                            lambda self, p, v, m, *a: (inside(p, m), store(self, p, v, m, *a))[1])
        for name in ("_lif_fwd_kernel", "_lif_bwd_kernel"):
            real = getattr(triton_lif, name)

            class Spy:
                def __getitem__(self, grid, real=real):
                    def launch(*args, **kw):
                        ranges[:] = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
                                     for t in args if isinstance(t, torch.Tensor)]
                        launches.append(kw.get("AHEAD"))
                        return real[grid](*args, **kw)
                    return launch

            monkeypatch.setattr(triton_lif, name, Spy())
        return launches

    @pytest.mark.parametrize("ahead", [1, 2])
    @pytest.mark.parametrize("T", [1, 2, 7, 8, 9, 16, 17])
    @pytest.mark.parametrize("N", [64, 37])
    def test_time_loops_groups_tail_and_rows_in_flight(monkeypatch, ahead, T, N):
        monkeypatch.setattr(triton_lif, "AHEAD", ahead)
        launches = bounds_checked(monkeypatch)
        for n in REPRESENTATIVE + [Neuron(2.0, False, 1.0, 0.0, "Sigmoid", 4.0, True)]:
            check(n, (T, N), torch.float32)
        check(REPRESENTATIVE[0], (T, N), torch.bfloat16, store_v_seq=False)
        # the forward, and the backward from window bits without grad_v_seq, take `ahead`
        assert ahead in launches and (ahead == 1 or 1 in launches), launches

    def test_full_programs_take_the_unmasked_kernel(monkeypatch):
        seen, real = [], triton_lif._lif_fwd_kernel

        class Spy:
            def __getitem__(self, grid):
                return lambda *a, **kw: (seen.append(kw["EVEN"]), real[grid](*a, **kw))[1]

        monkeypatch.setattr(triton_lif, "_lif_fwd_kernel", Spy())
        tssd_fast.lif_multistep(torch.randn(3, 64), backend=B)
        tssd_fast.lif_multistep(torch.randn(3, 37), backend=B)
        assert seen == [True, False]

    def test_launch_shape_is_sixteen_bytes_per_thread():
        for dtype, per_thread in ((torch.float32, 4), (torch.bfloat16, 8), (torch.float16, 8),
                                  (torch.float64, 2)):
            block, warps = triton_lif._launch_shape(1 << 24, dtype)
            assert (block, warps) == (128 * per_thread, 4)
            block, warps = triton_lif._launch_shape(5, dtype)
            assert block == 32 and block % (32 * warps) == 0

    @pytest.mark.parametrize("n", REPRESENTATIVE, ids=str)
    def test_non_contiguous(n):
        check(n, (4, 3, 5), torch.float32, noncontig=True)

    def test_window_bits_layout_matches_the_cpu_kernel():
        # Rect + soft reset saves bit t%8 of row t//8 of a [ceil(T/8), N] uint8 tensor.
        T, N = 12, 37
        x = torch.randn(T, N)
        v0 = torch.randn(N) * 0.3
        fwd = op_overloads(B)[0]
        spikes, v_last, v_seq, bits = fwd(*fwd_args(x, v0, False, 0, True, True, B))
        assert bits.shape == (2, N) and bits.dtype == torch.uint8
        n = Neuron(2.0, False, 1.0, None, "Rect", 1.0)
        S, H, V = forward(x, v0, n, torch.float32)
        window = ((H - 1.0).abs() < 0.5).to(torch.uint8)
        for t in range(T):
            assert torch.equal((bits[t // 8] >> (t % 8)) & 1, window[t]), t
        assert torch.equal(bits[1] >> 4, torch.zeros(N, dtype=torch.uint8))
        assert torch.equal(spikes, S) and torch.equal(v_seq, V) and torch.equal(v_last, V[-1])
        if "cpp" in tssd_fast.available_backends("cpu"):
            ref = op_overloads("cpp")[0](*fwd_args(x, v0, False, 0, True, True, "cpp"))
            assert torch.equal(ref[3], bits)
        # hard reset saves H itself, bitwise the oracle's
        outs = fwd(*fwd_args(x, v0, True, 0, False, True, B))
        _, H2, _ = forward(x, v0, Neuron(2.0, False, 1.0, 0.0, "Rect", 1.0), torch.float32)
        assert outs[3].dtype == torch.float32 and torch.equal(outs[3], H2)

    def test_gradient_through_v_last_only():
        n = Neuron(2.0, True, 1.0, None, "Rect", DEFAULT_ALPHA["Rect"], False)
        x = torch.randn(9, 13, requires_grad=True)
        _, v_last, _ = tssd_fast.lif_multistep(x, backend=B, **n.kwargs())
        g = torch.randn(13)
        (gx,) = torch.autograd.grad(v_last, x, g)
        S, H, _ = forward(x.detach(), torch.zeros(13), n, torch.float32)
        gref, _ = backward(H, S, n, torch.zeros(9, 13), g)
        torch.testing.assert_close(gx.double(), gref.float().double(), rtol=2e-5, atol=1e-5)

    def test_single_step_node_matches_multi_step():
        x = torch.randn(4, 3, 7)
        node = tssd_fast.LIFNode(step_mode="s", backend=B, v_reset=None)
        node_m = tssd_fast.LIFNode(step_mode="m", backend="torch", v_reset=None)
        out_s = torch.stack([node(x[t]) for t in range(4)])
        out_m = node_m(x)
        assert torch.equal(out_s, out_m) and torch.equal(node.v, node_m.v)

    def test_opcheck_of_the_python_launcher_op():
        # the op torch.compile traces for triton / cupy (eager calls take _PyLauncherLIF)
        fwd, bwd, _ = op_overloads(B)
        x = torch.randn(5, 7, requires_grad=True)
        v0 = torch.randn(7, requires_grad=True)
        torch.library.opcheck(fwd, fwd_args(x, v0, False, 0, True, True, B))
        torch.library.opcheck(fwd, fwd_args(x, None, True, 1, False, True, B))
        saved = fwd(*fwd_args(x.detach(), v0.detach(), True, 1, False, True, B))[3]
        for grad_v0 in (False, True):
            torch.library.opcheck(bwd, bwd_args(torch.randn(5, 7), None, torch.randn(7), saved,
                                                True, 1, B, grad_v0=grad_v0))

    def test_torch_compile_fullgraph_through_the_python_launcher_op():
        model, eager, v_eager, g_eager, out, g_comp = eager_and_compiled(B)
        assert torch.equal(out, eager)
        for a, b in zip(g_comp, g_eager):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert torch.equal(model.lif2.v, v_eager)
