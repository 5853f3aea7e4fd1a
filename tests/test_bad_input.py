"""Bad input raises a clear error saying what to do; odd but valid input just works."""
import pytest
import torch

import tssd_fast
from tssd_fast import LIFNode, surrogate


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_or_bool_input(dtype):
    node = LIFNode(step_mode="m")
    with pytest.raises(TypeError, match="floating point"):
        node(torch.ones(2, 3, dtype=dtype))


def test_zero_dim_input_in_multi_step():
    with pytest.raises(ValueError, match=r"\[T, \*\]"):
        LIFNode(step_mode="m")(torch.tensor(1.0))


def test_zero_dim_input_in_single_step_is_fine():
    node = LIFNode(step_mode="s", v_reset=None, decay_input=False)
    out = node(torch.tensor(1.5))
    assert out.shape == () and out.item() == 1.0


@pytest.mark.parametrize("tau", [1.0, 0.5, -2.0, float("nan"), "2", True])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        LIFNode(tau=tau)


@pytest.mark.parametrize("kw", [dict(v_threshold=float("inf")), dict(v_reset="0"),
                                dict(v_threshold=None)])
def test_bad_threshold_or_reset(kw):
    with pytest.raises(ValueError):
        LIFNode(**kw)


def test_unknown_backend_and_step_mode():
    with pytest.raises(ValueError, match="unknown backend"):
        LIFNode(backend="gpu")
    with pytest.raises(ValueError, match="step_mode"):
        LIFNode(step_mode="multi")
    node = LIFNode()
    with pytest.raises(ValueError, match="step_mode"):
        node.step_mode = "x"


@pytest.mark.parametrize("backend", ["cuda", "cupy"])
def test_gpu_backend_on_cpu_tensor(backend):
    node = LIFNode(step_mode="m", backend=backend)
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        node(torch.randn(2, 3))


def test_unsupported_surrogate_falls_back_with_warning_or_errors():
    def my_surrogate(u):
        return (u >= 0).float()
    node = LIFNode(surrogate_function=my_surrogate, step_mode="m")
    with pytest.warns(RuntimeWarning, match="no fused kernel"):
        node(torch.randn(2, 3))
    node = LIFNode(surrogate_function=my_surrogate, step_mode="m", backend="cpp")
    with pytest.raises(ValueError, match="backend='torch'"):
        node(torch.randn(2, 3))
    with pytest.raises(TypeError, match="callable"):
        LIFNode(surrogate_function=3)


def test_spiking_false_surrogate_rejected():
    with pytest.raises(ValueError, match="spiking=False"):
        surrogate.Rect(spiking=False)
    with pytest.raises(ValueError, match="alpha"):
        surrogate.Sigmoid(alpha=0)


def test_state_on_other_shape_or_device_says_reset():
    with pytest.raises(RuntimeError, match="reset"):
        tssd_fast.lif_multistep(torch.randn(2, 3), v_init=torch.zeros(4))


def test_empty_inputs_give_empty_outputs():
    for shape in [(0, 3), (3, 0), (0,)]:
        s, v, vs = tssd_fast.lif_multistep(torch.randn(shape), store_v_seq=True)
        assert s.shape == shape and vs.shape == shape and v.shape == shape[1:]


def test_nan_and_inf_inputs_do_not_crash():
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 1.0]])
    for b in tssd_fast.available_backends("cpu"):
        s, v, _ = tssd_fast.lif_multistep(x, backend=b, v_reset=None, decay_input=False)
        assert s.tolist() == [[0.0, 1.0, 0.0, 1.0]]  # NaN never fires, +inf does


def test_non_tensor_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        tssd_fast.lif_multistep([1.0, 2.0])
