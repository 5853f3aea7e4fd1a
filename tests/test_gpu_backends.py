"""Every GPU backend ('cuda', 'triton', 'cupy') against the tests' oracle (_reference64.py): every
configuration and storage dtype, odd shapes, misaligned and non-contiguous inputs, empty inputs,
the window bits, 64-bit indexing, denormals, CUDA graph capture, torch.compile(fullgraph=True),
opcheck, side streams and the current device. Skipped, with the reason, without a CUDA device.

On the GPU machine, TSSD_FAST_REQUIRE_GPU_BACKENDS=cuda,triton,cupy turns a backend that is
unavailable there into a failure instead of a skip (benchmarks/gpu_check.sh sets it).
"""
import os

import pytest
import torch

import tssd_fast
from tssd_fast import LIFNode
from tssd_fast.ops import registry
from _helpers import (bwd_args, check_against_oracle, eager_and_compiled, fwd_args, initial_v,
                      oracle_input)
from tssd_fast.ops.config import LIFConfig
from tssd_fast.ops.lif_op import op_overloads
from _reference64 import Neuron, all_neurons, backward, forward

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)",
                allow_module_level=True)
pytestmark = pytest.mark.gpu

GPU_BACKENDS = ("cuda", "triton", "cupy")
DEV = "cuda"


def _required():
    env = os.environ.get("TSSD_FAST_REQUIRE_GPU_BACKENDS", "")
    return [b.strip() for b in env.split(",") if b.strip()]


@pytest.fixture(params=GPU_BACKENDS)
def backend(request):
    b = request.param
    if not registry.runs_on(b, DEV):
        reason = registry.why_unavailable(b) or "not available"
        if b in _required():
            pytest.fail(f"backend {b!r} is required here but unavailable: {reason}")
        pytest.skip(f"backend {b!r} unavailable: {reason}")
    return b


def test_required_backends_are_available():
    missing = {b: registry.why_unavailable(b) for b in _required()
               if not registry.runs_on(b, DEV)}
    assert not missing, missing


def test_auto_prefers_cuda_then_triton_then_cupy():
    avail = tssd_fast.available_backends(DEV)
    expected = [b for b in ("cuda", "triton", "cupy") if b in avail]
    assert avail == expected + ["torch"]
    assert registry.resolve_backend("auto", DEV, torch.float32) == avail[0]


def run_and_check(backend, n: Neuron, shape, dtype, random_v0=True, store_v_seq=True,
                  noncontig=False, misalign=False):
    """Spikes / voltages bitwise equal to the oracle's forward (computed on the CPU in the
    compute dtype); grads of x and v0 within the dtype's rounding of the float64 BPTT."""
    x = oracle_input(shape, dtype, noncontig)
    if misalign:  # contiguous, but one element past an aligned address: the VEC=1 path
        buf = torch.empty(x.numel() + 1, dtype=dtype, device=DEV)
        xd = buf[1:].view(x.shape)
        xd.copy_(x)
        assert xd.is_contiguous() and xd.data_ptr() % 16 != 0
    else:
        xd = x.to(DEV)
    v0 = initial_v(n, shape, dtype, random_v0)
    xr = xd.detach().requires_grad_() if not misalign else xd.requires_grad_()
    v_init = v0.to(DEV).requires_grad_() if random_v0 else None
    outputs = tssd_fast.lif_multistep(xr, v_init, store_v_seq=store_v_seq, backend=backend,
                                      **n.kwargs())
    assert outputs[0].device.type == "cuda"
    check_against_oracle(n, x, v0, xr, v_init, outputs, dtype, store_v_seq)


@pytest.mark.parametrize("n", all_neurons(), ids=str)
def test_every_configuration_fp32(backend, n):
    run_and_check(backend, n, (7, 1029), torch.float32)


@pytest.mark.parametrize("n", all_neurons(tau=1.7, v_threshold=0.6)[::2], ids=str)
def test_other_tau_threshold_fp32(backend, n):
    run_and_check(backend, n, (9, 515), torch.float32, random_v0=False, store_v_seq=False)


# N a multiple of 8 and aligned: the 16-byte kernels, whose flags are fixed at compile time (one
# kernel per combination; tau 2 multiplies by 1/tau, tau 1.7 divides). The odd N elsewhere in
# this file take the VEC=1 kernel. T = 17: two full window-bit bytes and a partial one. N = 2048
# fills every Triton program (its unmasked EVEN kernels); T = 16 has no partial byte.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("n", all_neurons()[::2] + all_neurons(tau=1.7, v_threshold=0.6)[1::4],
                         ids=str)
def test_sixteen_byte_kernels(backend, dtype, n):
    if dtype not in registry.info(backend).dtypes:
        pytest.skip(f"{backend} does not list {dtype}")
    run_and_check(backend, n, (17, 2056), dtype)
    run_and_check(backend, n, (16, 2048), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("n", all_neurons(tau=1.7, v_threshold=0.6)[::3], ids=str)
def test_dtypes(backend, dtype, n):
    if dtype not in registry.info(backend).dtypes:
        pytest.skip(f"{backend} does not list {dtype}")
    run_and_check(backend, n, (6, 1031), dtype)


@pytest.mark.parametrize("surr", ["Rect", "Sigmoid", "ATan"])
@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_other_alphas(backend, surr, alpha):
    for reset in (None, 0.0):
        run_and_check(backend, Neuron(2.0, True, 1.0, reset, surr, alpha, False), (6, 300),
                      torch.float32)


SHAPES = [(1, 1), (1, 7), (5, 1), (8, 3), (9, 13), (17, 5), (3, 2, 5, 3, 2), (0, 5), (4, 0),
          (2, 0, 3), (3, 4098), (4, 1026), (2, 100003), (25, 64, 33)]
REPRESENTATIVE = [Neuron(2.0, False, 1.0, None, "Rect", 1.0, False),     # the paper's neuron
                  Neuron(2.0, True, 1.0, 0.0, "Sigmoid", 4.0, False),    # SpikingJelly default
                  Neuron(3.0, True, 0.5, -0.25, "ATan", 2.0, True)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("n", REPRESENTATIVE, ids=str)
def test_odd_shapes(backend, shape, n):
    run_and_check(backend, n, shape, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("n", REPRESENTATIVE, ids=str)
def test_misaligned_and_non_contiguous(backend, n, dtype):
    run_and_check(backend, n, (5, 4, 257), dtype, misalign=True)
    run_and_check(backend, n, (5, 4, 257), dtype, noncontig=True)


def test_window_bits_and_h_saved(backend):
    T, N = 19, 1030  # three byte rows, N % 4 == 2
    x = torch.randn(T, N, device=DEV)
    v0 = torch.randn(N, device=DEV) * 0.3
    fwd = op_overloads(backend)[0]
    outs = fwd(*fwd_args(x, v0, False, 0, True, True, backend))
    spikes, v_last, v_seq, bits = (o.cpu() for o in outs)
    assert bits.shape == (3, N) and bits.dtype == torch.uint8
    S, H, V = forward(x.cpu(), v0.cpu(), Neuron(2.0, False, 1.0, None, "Rect", 1.0),
                      torch.float32)
    window = ((H - 1.0).abs() < 0.5).to(torch.uint8)
    for t in range(T):
        assert torch.equal((bits[t // 8] >> (t % 8)) & 1, window[t]), t
    assert torch.equal(bits[2] >> 3, torch.zeros(N, dtype=torch.uint8))  # unused high bits
    assert torch.equal(spikes, S) and torch.equal(v_seq, V)
    ref = op_overloads("cpp")[0](*fwd_args(x.cpu(), v0.cpu(), False, 0, True, True, "cpp"))
    assert torch.equal(ref[3], bits)
    cfg = LIFConfig(2.0, 1.0, -0.5, True, 1, 4.0, False)
    outs = fwd(x, v0, 0.0, *cfg.op_args(False, True), *op_overloads(backend)[2])
    _, H2, _ = forward(x.cpu(), v0.cpu(), Neuron(2.0, True, 1.0, -0.5, "Sigmoid", 4.0),
                       torch.float32)
    assert outs[3].dtype == torch.float32 and torch.equal(outs[3].cpu().view(T, N), H2)


def test_denormals_are_kept(backend):
    # H - v_threshold subnormal and negative must not fire: a flush-to-zero build would turn it
    # into -0 >= 0 and fire.
    n = Neuron(2.0, True, 0.0, None, "Rect", 1.0, False)
    tiny = torch.tensor([-1e-39, -3e-40, 2e-39, -1e-45, 1e-39, -2e-38], dtype=torch.float32)
    x = tiny.repeat(3, 64).reshape(3, -1)
    s, v, vs = tssd_fast.lif_multistep(x.to(DEV), backend=backend, store_v_seq=True,
                                       **n.kwargs())
    S, _, V = forward(x, torch.zeros(x.shape[1]), n, torch.float32)
    assert torch.equal(s.cpu(), S) and torch.equal(vs.cpu(), V)


def test_gradient_through_v_last_only(backend):
    n = Neuron(2.0, True, 1.0, None, "Rect", 1.0, False)
    x = torch.randn(9, 130, device=DEV, requires_grad=True)
    _, v_last, _ = tssd_fast.lif_multistep(x, backend=backend, **n.kwargs())
    g = torch.randn(130, device=DEV)
    (gx,) = torch.autograd.grad(v_last, x, g)
    S, H, _ = forward(x.detach().cpu(), torch.zeros(130), n, torch.float32)
    gref, _ = backward(H, S, n, torch.zeros(9, 130), g.cpu())
    torch.testing.assert_close(gx.cpu().double(), gref.float().double(), rtol=2e-5, atol=1e-5)


def test_single_step_node(backend):
    x = torch.randn(4, 3, 70, device=DEV)
    node = LIFNode(step_mode="s", backend=backend, v_reset=None)
    ref = LIFNode(step_mode="m", backend="torch", v_reset=None)
    out_s = torch.stack([node(x[t]) for t in range(4)])
    assert torch.equal(out_s, ref(x)) and torch.equal(node.v, ref.v)


def test_side_stream_and_current_device(backend):
    n = REPRESENTATIVE[1]
    x = torch.randn(8, 4096, device=DEV)
    ref, _, _ = tssd_fast.lif_multistep(x, backend="torch", **n.kwargs())
    dev_before = torch.cuda.current_device()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0  # produced on the side stream: the kernel must run after it, on it
        s, _, _ = tssd_fast.lif_multistep(y, backend=backend, **n.kwargs())
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(s, ref)
    assert torch.cuda.current_device() == dev_before


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device(backend):
    n = REPRESENTATIVE[2]
    x = torch.randn(6, 999, device="cuda:1", requires_grad=True)
    with torch.cuda.device(0):
        s, v, _ = tssd_fast.lif_multistep(x, backend=backend, **n.kwargs())
        assert torch.cuda.current_device() == 0
    r, rv, _ = tssd_fast.lif_multistep(x.detach().cpu(), backend="torch", **n.kwargs())
    assert s.device == x.device and torch.equal(s.cpu(), r) and torch.equal(v.cpu(), rv)


def test_int64_indexing(backend):
    # T * N > 2**31 elements: row offsets must be 64-bit. fp16 storage, inference (no saves).
    free, _ = torch.cuda.mem_get_info()
    T, N = 2, 2 ** 30 + 12
    if free < 24 * 2 ** 30:
        pytest.skip("needs 24 GiB of free GPU memory")
    n = Neuron(2.0, False, 1.0, None, "Rect", 1.0, False)
    x = torch.empty(T, N, dtype=torch.float16, device=DEV)
    x.normal_(0.4, 1.2)
    with torch.no_grad():
        s, v, _ = tssd_fast.lif_multistep(x, backend=backend, **n.kwargs())
    tail = slice(N - 4099, N)
    S, _, V = forward(x[:, tail].cpu().float(), torch.zeros(4099), n, torch.float32)
    assert torch.equal(s[:, tail].cpu().float(), S) and torch.equal(v[tail].cpu(), V[-1])
    del x, s, v
    torch.cuda.empty_cache()


@pytest.mark.parametrize("hard,surr,store", [(False, 0, False), (True, 1, True), (False, 2, True)])
def test_opcheck(backend, hard, surr, store):
    x = torch.randn(5, 36, device=DEV, requires_grad=True)
    v0 = torch.randn(36, device=DEV, requires_grad=True)
    fwd, bwd, _ = op_overloads(backend)
    torch.library.opcheck(fwd, fwd_args(x, v0, hard, surr, store, True, backend))
    torch.library.opcheck(fwd, fwd_args(x, None, hard, surr, store, True, backend))
    saved = fwd(*fwd_args(x.detach(), v0.detach(), hard, surr, False, True, backend))[3]
    for grad_v0 in (False, True):
        args = bwd_args(torch.randn(5, 36, device=DEV), torch.randn(5, 36, device=DEV),
                        torch.randn(36, device=DEV), saved, hard, surr, backend, grad_v0=grad_v0)
        torch.library.opcheck(bwd, args)


def test_cuda_graph_capture(backend):
    n = REPRESENTATIVE[0]
    T, N = 6, 2050
    static_x = torch.randn(T, N, device=DEV, requires_grad=True)
    static_g = torch.randn(T, N, device=DEV)

    def step():
        s, v, _ = tssd_fast.lif_multistep(static_x, backend=backend, **n.kwargs())
        (gx,) = torch.autograd.grad(s, static_x, static_g)
        return s, v, gx

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compile / load every kernel before capture
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        s_out, v_out, g_out = step()
    for _ in range(3):
        x_new = torch.randn(T, N, device=DEV)
        g_new = torch.randn(T, N, device=DEV)
        with torch.no_grad():
            static_x.copy_(x_new)
        static_g.copy_(g_new)
        graph.replay()
        torch.cuda.synchronize()
        xe = x_new.clone().requires_grad_()
        s_e, v_e, _ = tssd_fast.lif_multistep(xe, backend=backend, **n.kwargs())
        (g_e,) = torch.autograd.grad(s_e, xe, g_new)
        assert torch.equal(s_out, s_e) and torch.equal(v_out, v_e) and torch.equal(g_out, g_e)


def test_torch_compile_fullgraph(backend):
    model, eager, v_eager, g_eager, out, g_comp = eager_and_compiled(backend, DEV)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert model.lif1.v.shape == (3, 16) and model.lif2.v.shape == v_eager.shape


def test_backends_agree_with_each_other(backend):
    # all GPU backends and the CPU kernel give bitwise the same forward and, in fp32 with the
    # same operation order and no FMA, the same gradients up to expf differences (Sigmoid)
    n = Neuron(2.0, False, 1.0, None, "Rect", 1.0, False)
    x = torch.randn(16, 8192, device=DEV)
    xr = x.clone().requires_grad_()
    s, v, _ = tssd_fast.lif_multistep(xr, backend=backend, **n.kwargs())
    (g,) = torch.autograd.grad(s, xr, torch.ones_like(s))
    xc = x.cpu().requires_grad_()
    sc, vc, _ = tssd_fast.lif_multistep(xc, backend="cpp", **n.kwargs())
    (gc,) = torch.autograd.grad(sc, xc, torch.ones_like(sc))
    assert torch.equal(s.cpu(), sc) and torch.equal(v.cpu(), vc) and torch.equal(g.cpu(), gc)
