"""Every LIF backend available on this machine against the tests' oracle (_reference64.py):
spikes, voltages and the gradients of input and initial state, for every combination of reset
mode x surrogate x decay_input x detach_reset, several tau / thresholds / alphas, odd shapes,
non-contiguous and empty inputs, and every storage dtype."""
import dataclasses

import pytest
import torch

import tssd_fast
from _helpers import check_against_oracle, fwd_args, initial_v, oracle_input
from tssd_fast.ops.lif_op import op_overloads
from _reference64 import Neuron, all_neurons, backward, forward

CPU_BACKENDS = tssd_fast.available_backends("cpu")


def test_cpp_is_available():
    # the install command must give the compiled CPU kernel (prebuilt or JIT)
    assert "cpp" in CPU_BACKENDS, tssd_fast.ops.registry.why_unavailable("cpp")


def run_and_check(backend, n: Neuron, shape, dtype, v0_kind="default", store_v_seq=True,
                  noncontig=False):
    x = oracle_input(shape, dtype, noncontig)
    if noncontig:
        assert not x.is_contiguous()
    v0 = initial_v(n, shape, dtype, random=v0_kind != "default")
    v_init = None if v0_kind == "default" else v0.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    outputs = tssd_fast.lif_multistep(xr, v_init, store_v_seq=store_v_seq, backend=backend,
                                      **n.kwargs())
    check_against_oracle(n, x, v0, xr, v_init, outputs, dtype, store_v_seq)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n", all_neurons(), ids=str)
def test_every_configuration_fp32(backend, n):
    run_and_check(backend, n, (7, 23), torch.float32, v0_kind="random")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n", all_neurons(tau=1.7, v_threshold=0.6), ids=str)
def test_every_configuration_fp64_other_tau(backend, n):
    run_and_check(backend, n, (9, 11), torch.float64, v0_kind="random")


# tau 2 above takes the kernels' multiply by 1/tau (a power of two); these take the IEEE
# division (1.7, 3) or other powers of two (4, 8), every configuration, bitwise in fp32.
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n", [n for tau in (1.7, 3.0, 4.0, 8.0) for n in all_neurons(tau)[::3]],
                         ids=str)
def test_every_configuration_fp32_other_tau(backend, n):
    run_and_check(backend, n, (7, 13), torch.float32, v0_kind="random")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("tau", [2.0, 4.0, 1.7])
def test_subnormal_range_is_exact(backend, tau):
    # (V - Vr) / tau lands in the subnormal range: the multiply by 1/tau must round there
    # exactly as the division does (both round the same real number once).
    for n in REPRESENTATIVE_SMALL:
        n = dataclasses.replace(n, tau=tau)
        x = torch.tensor([1e-38, -3e-39, 7e-40, 2.5e-45, -1e-45, 0.0, -0.0, 1.2e-38],
                         dtype=torch.float32).repeat(6, 3)
        v0 = initial_v(n, x.shape, torch.float32, random=False)
        xr = x.clone().requires_grad_()
        out = tssd_fast.lif_multistep(xr, None, store_v_seq=True, backend=backend, **n.kwargs())
        check_against_oracle(n, x, v0, xr, None, out, torch.float32, True)


SHAPES = [(1, 1), (1, 7), (5, 1), (8, 3), (9, 13), (17, 5), (3, 2, 5, 3, 2), (0, 5), (4, 0),
          (2, 0, 3)]
REPRESENTATIVE = [Neuron(2.0, False, 1.0, None, "Rect", 1.0, False),     # the paper's neuron
                  Neuron(2.0, True, 1.0, 0.0, "Sigmoid", 4.0, False),    # SpikingJelly default
                  Neuron(3.0, True, 0.5, -0.25, "ATan", 2.0, True)]


# the paper's neuron, and SpikingJelly's with a threshold small enough to spike on subnormals
REPRESENTATIVE_SMALL = [REPRESENTATIVE[0], dataclasses.replace(REPRESENTATIVE[1], v_threshold=1e-38)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("n", REPRESENTATIVE, ids=str)
def test_odd_shapes(backend, shape, n):
    run_and_check(backend, n, shape, torch.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("n", all_neurons()[::5], ids=str)
def test_dtypes(backend, dtype, n):
    run_and_check(backend, n, (6, 19), dtype, v0_kind="random")


# More neurons than one CPU block (256) and one parallel task (4096), with a partial block: the
# kernel's 16-bit storage paths (fp16 converts in loops of its own) at every block boundary.
WIDE_N = 2 * 4096 + 300


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n", all_neurons(), ids=str)
def test_16bit_storage_is_fp32_math_rounded_once(backend, dtype, n):
    # fp16 / bf16 storage computes in fp32: every output is the fp32 run's on the upcast input,
    # bit for bit, with spikes and grad_x rounded once to the storage dtype. Two runs: a random
    # v0 with V stored, and the default state without it (the training path that saves only
    # window bits or H).
    x = oracle_input((3, WIDE_N), dtype)
    for random_v0, store in ((True, True), (False, False)):
        v0 = initial_v(n, x.shape, dtype, random=random_v0)
        gs = torch.randn(x.shape, dtype=torch.float64).to(dtype)
        gvl = torch.randn(x.shape[1:])
        gvs = torch.randn(x.shape)
        runs = []
        for storage in (dtype, torch.float32):
            xr = x.to(storage).requires_grad_()
            v = v0.clone().requires_grad_() if random_v0 else None
            s, v_last, v_seq = tssd_fast.lif_multistep(xr, v, store_v_seq=store, backend=backend,
                                                       **n.kwargs())
            outs, grads = [s, v_last], [gs.to(storage), gvl]
            if store:
                outs.append(v_seq)
                grads.append(gvs)
            got = torch.autograd.grad(outs, [xr] + ([v] if random_v0 else []), grads)
            runs.append((s, v_last, v_seq) + got)
        (s16, vl16, vs16, gx16, *gv16), (s32, vl32, vs32, gx32, *gv32) = runs
        assert s16.dtype == gx16.dtype == dtype
        assert torch.equal(s16, s32.to(dtype)), "spikes"
        assert torch.equal(vl16, vl32), "v_last"
        assert (vs16 is None) == (not store) and (not store or torch.equal(vs16, vs32)), "v_seq"
        assert torch.equal(gx16, gx32.to(dtype)), "grad_x: not the fp32 gradient rounded once"
        assert all(torch.equal(a, b) for a, b in zip(gv16, gv32)), "grad_v0"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n", REPRESENTATIVE, ids=str)
def test_non_contiguous(backend, n):
    run_and_check(backend, n, (5, 4, 7), torch.float32, noncontig=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("alpha", [0.5, 2.0])
@pytest.mark.parametrize("surr", ["Rect", "Sigmoid", "ATan"])
def test_other_alphas(backend, alpha, surr):
    for reset in (None, 0.0):
        run_and_check(backend, Neuron(2.0, True, 1.0, reset, surr, alpha, False), (6, 29),
                      torch.float32, v0_kind="random")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_threshold_ties_fire_and_window_edges(backend):
    # Dyadic values land exactly on the threshold (H == v_threshold must fire) and exactly on
    # the Rect window edge |u| == 0.5/alpha (outside the window).
    n = Neuron(2.0, False, 1.0, None, "Rect", 1.0, False)
    x = torch.tensor([[1.0, 0.5, 1.5, 0.25], [0.5, 0.75, 0.0, 1.25]]).requires_grad_()
    s, v, _ = tssd_fast.lif_multistep(x, backend=backend, **n.kwargs())
    assert s.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
    (gx,) = torch.autograd.grad(s, x, torch.ones_like(s))
    S, H, _ = forward(x.detach(), torch.zeros(4), n, torch.float32)
    gref, _ = backward(H, S, n, torch.ones(2, 4))
    torch.testing.assert_close(gx.double(), gref, rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_inference_saves_nothing_and_matches_training(backend):
    n = REPRESENTATIVE[1]
    x = torch.randn(4, 33)
    with torch.no_grad():
        s0, v0, _ = tssd_fast.lif_multistep(x, backend=backend, **n.kwargs())
    s1, v1, _ = tssd_fast.lif_multistep(x.requires_grad_(), backend=backend, **n.kwargs())
    assert torch.equal(s0, s1) and torch.equal(v0, v1)
    assert not s0.requires_grad


def test_window_bits_are_saved_instead_of_h():
    # Rect + soft reset: backward needs 1 bit per neuron-step, not H (4 bytes in fp32).
    x = torch.randn(12, 100)
    fwd = op_overloads("cpp")[0]
    spikes, v_last, v_seq, bits = fwd(*fwd_args(x, torch.zeros(100), False, 0, False, True, "cpp"))
    assert bits.shape == (2, 100) and bits.dtype == torch.uint8
    S, H, _ = forward(x, torch.zeros(100), Neuron(2.0, False, 1.0, None, "Rect", 1.0), torch.float32)
    window = ((H - 1.0).abs() < 0.5).to(torch.uint8)
    for t in range(12):
        assert torch.equal((bits[t // 8] >> (t % 8)) & 1, window[t]), t
    assert torch.equal(bits[1] >> 4, torch.zeros(100, dtype=torch.uint8))  # unused high bits
    outs = fwd(*fwd_args(x, torch.zeros(100), True, 0, False, True, "cpp"))
    assert outs[3].shape == (12, 100) and outs[3].dtype == torch.float32  # hard reset saves H


def _layouts():
    """[T, *] tensors in many memory layouts: dense permutations (time outermost or not), size-1
    dims, slices with gaps, a broadcast (stride 0) dim."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(3, 4, 1, 5, 6, generator=g)
    yield "contiguous", base
    yield "channels_last", torch.randn(12, 5, 4, 3, generator=g).contiguous(
        memory_format=torch.channels_last).view(3, 4, 5, 4, 3)
    for perm in ([0, 3, 1, 4, 2], [0, 4, 3, 2, 1], [0, 2, 1, 3, 4], [1, 0, 2, 3, 4], [4, 0, 1, 2, 3]):
        t = torch.randn([base.shape[p] for p in perm], generator=g)
        yield f"permuted{perm}", t.permute([perm.index(d) for d in range(5)])
    yield "sliced", torch.randn(3, 4, 1, 5, 12, generator=g)[..., ::2]
    yield "size-1 stride", torch.randn(3, 4, 5, 6, generator=g).unsqueeze(2).transpose(2, 4)
    yield "broadcast", torch.randn(3, 1, 5, 6, generator=g).expand(3, 4, 5, 6)


@pytest.mark.parametrize("name", [n for n, _ in _layouts()])
def test_op_memory_order_matches_the_python_mirror(name):
    # the C++ op runs in x's memory order exactly when tssd_fast.ops.config.memory_order (the
    # fake implementation's rule) finds one, and then returns x's strides; else contiguous
    from tssd_fast.ops.config import memory_order
    x = dict(_layouts())[name]
    fwd = op_overloads("cpp")[0]
    spikes, v_last, v_seq, _ = fwd(*fwd_args(x, None, False, 0, True, False, "cpp"))
    ref = fwd(*fwd_args(x.contiguous(), None, False, 0, True, False, "cpp"))
    order = memory_order(x)

    def strides(t):  # a size-1 dim's stride is arbitrary: the layout is the rest
        return [st for st, n in zip(t.stride(), t.shape) if n != 1]
    want = strides(x if order else torch.empty(x.shape))
    assert strides(spikes) == want and strides(v_seq) == want, (name, order)
    assert torch.equal(spikes, ref[0]) and torch.equal(v_last, ref[1]) and torch.equal(v_seq, ref[2])
