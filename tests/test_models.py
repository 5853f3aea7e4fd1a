"""Networks: shapes, structure, weak head removal, ANN twin, layers, encodings, early exit."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tssd_fast
from tssd_fast.inference import early_exit_evaluate, early_exit_predict, evaluate, macs_per_sample
from tssd_fast.models import (SeqToANN, ann_input, build_ann, build_model, direct_encode, lif_factory, strip_weak,
                              to_sequence)
from _helpers import eval_with_batch_stats

# Small configurations: (arch, builder kwargs, input H=W)
SMALL = {
    "vgg9": (dict(width=0.125, input_size=16), 16),
    "resnet18": (dict(width=0.125), 8),
    "resnet34": (dict(width=0.0625, num_classes=10), 32),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(arch, backend="torch", seed=0, **kw):
    torch.manual_seed(seed)
    kwargs, size = SMALL[arch]
    return build_model(arch, backend=backend, **{**kwargs, **kw}), size


def lif_modules(model):
    return [m for m in model.modules() if isinstance(m, tssd_fast.LIFNode)]


@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("T", [1, 3])
def test_small_shapes_static_and_dvs(arch, T):
    model, size = small_model(arch)
    x = torch.randn(2, 3, size, size)
    out, weak = model(x, T, return_weak=True)
    assert out.shape == (T, 2, 10) and weak.shape == (T, 2, 10)
    assert model(x, T).shape == (T, 2, 10)
    dvs, _ = small_model(arch, in_channels=2)
    frames = (torch.rand(T, 2, 2, size, size) < 0.3).float()  # time-first network layout
    assert dvs(frames).shape == (T, 2, 10)


@pytest.mark.parametrize("arch, size, classes, inference_params", [
    ("vgg9", 32, 10, None),
    ("resnet18", 32, 10, 11_173_962),   # = CIFAR ResNet-18 (3x3 stem), same conv/BN/FC tensors
    ("resnet34", 224, 1000, 21_797_672),  # = torchvision resnet34
])
def test_real_size_shapes(arch, size, classes, inference_params):
    model = build_model(arch, num_classes=classes, backend="torch")
    with torch.no_grad():
        out, weak = model(torch.randn(1, 3, size, size), 1, return_weak=True)
    assert out.shape == (1, 1, classes) and weak.shape == (1, 1, classes)
    n_inf = sum(p.numel() for p in strip_weak(model).parameters())
    n_weak = sum(p.numel() for p in model.weak.parameters())
    if inference_params is not None:
        assert n_inf == inference_params
    assert n_weak < 0.07 * n_inf  # the weak head is small


def test_vgg9_structure():
    model = build_model("vgg9", backend="torch")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    main_convs = [m for m in model.stages.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in main_convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert len(convs) == 9  # 8 + the weak head's conv
    assert [m.in_features for m in model.head.modules() if isinstance(m, nn.Linear)] == [512 * 2 * 2]
    assert model.weak.conv[0].in_channels == 256 and model.weak_stage == 3
    assert isinstance(model.stages[0], nn.Identity)


def test_resnet_neuron_before_addition():
    model = build_model("resnet18", width=0.25, backend="torch")
    block = model.stages[2][0]  # first block of stage 3: downsampling
    assert isinstance(block.branch[-1], tssd_fast.LIFNode)
    assert isinstance(block.shortcut[-1], tssd_fast.LIFNode)
    # block outputs are sums of two spike maps: values in {0, 1, 2}
    seq = torch.randn(2, 3, 16, 8, 8)
    tssd_fast.reset_net(model)
    out = block(seq)
    assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0} and out.max() == 2.0


def test_paper_neuron_defaults_and_overrides():
    model, _ = small_model("vgg9")
    lifs = lif_modules(model)
    assert len(lifs) == 9  # 8 main + 1 weak
    for n in lifs:
        assert (n.tau, n.decay_input, n.v_threshold, n.v_reset, n.detach_reset) == (2.0, False, 1.0, None, False)
        assert isinstance(n.surrogate_function, tssd_fast.surrogate.Rect)
        assert n.surrogate_function.alpha == 1.0 and n.step_mode == "m" and n.backend == "torch"
    other, _ = small_model("vgg9", neuron_kwargs=dict(tau=4.0, v_reset=0.0))
    assert all(n.tau == 4.0 and n.v_reset == 0.0 for n in lif_modules(other))
    custom, _ = small_model("resnet18", neuron=lif_factory("torch", surrogate_function=tssd_fast.surrogate.ATan()))
    assert all(isinstance(n.surrogate_function, tssd_fast.surrogate.ATan) for n in lif_modules(custom))
    with pytest.raises(ValueError):
        small_model("vgg9", neuron=lif_factory("torch"), neuron_kwargs=dict(tau=3.0))


def test_seq_to_ann_bn_over_merged_time_and_batch():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    x = torch.randn(4, 5, 3, 2, 2) * 3 + 1
    y = SeqToANN(bn)(x)
    flat = x.flatten(0, 1)
    mean, var = flat.mean((0, 2, 3), keepdim=True), flat.var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(y, ((flat - mean) / torch.sqrt(var + bn.eps)).reshape(4, 5, 3, 2, 2))


def test_encodings():
    x = torch.randn(3, 2, 4, 4)
    seq = direct_encode(x, 5)
    assert seq.shape == (5, 3, 2, 4, 4) and all(torch.equal(seq[t], x) for t in range(5))
    assert torch.equal(to_sequence(x, 5), seq)
    frames = torch.randn(3, 7, 2, 4, 4)  # loader layout [B, T_max, C, H, W]
    s = to_sequence(frames, 4)
    assert s.shape == (4, 3, 2, 4, 4) and torch.equal(s[2, 1], frames[1, 2])
    with pytest.raises(ValueError):
        to_sequence(frames, 8)
    assert ann_input(x, 5) is x
    torch.testing.assert_close(ann_input(frames, 4), frames[:, :4].mean(1))


def test_forward_input_checks_and_direct_encoding():
    model, size = small_model("resnet18")
    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(model(x, 3), model(direct_encode(x, 3)), rtol=0, atol=0)
    with pytest.raises(ValueError):
        model(x)  # no T for a static batch
    with pytest.raises(ValueError):
        model(direct_encode(x, 3), T=2)


def test_state_is_reset_at_each_call():
    model, size = small_model("resnet18")
    x = torch.randn(2, 3, size, size)
    first = model(x, 4)
    # running the stages again without a reset continues from the stored membrane potentials
    leaked = model.head(model.run_stages(direct_encode(x, 4), 0, len(model.stages)))
    assert not torch.allclose(first, leaked)
    torch.testing.assert_close(model(x, 4), first, rtol=0, atol=0)


@pytest.mark.parametrize("train", [True, False])
def test_inference_model_has_no_weak_head_and_same_outputs(train):
    model, size = small_model("vgg9")
    x = torch.randn(4, 3, size, size)
    if not train:
        eval_with_batch_stats(model, x, 2)
    model.train(train)
    ref, _ = model(x, 2, return_weak=True)
    inf = model.inference_model()
    assert inf.weak is None and inf.weak_stage is None
    assert not any("weak" in name for name, _ in inf.named_parameters())
    assert set(inf.state_dict()) == {k for k in model.state_dict() if not k.startswith("weak.")}
    assert sum(p.numel() for p in inf.parameters()) < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(inf(x, 2), ref, rtol=0, atol=0)
    torch.testing.assert_close(strip_weak(model)(x, 2), ref, rtol=0, atol=0)
    with pytest.raises(ValueError):
        inf(x, 2, return_weak=True)
    assert model.weak is not None  # the original keeps its head


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_ann_twin(arch):
    kwargs, size = SMALL[arch]
    snn = build_model(arch, backend="torch", **kwargs)
    ann = build_ann(arch, **kwargs)
    assert not lif_modules(ann) and any(isinstance(m, nn.ReLU) for m in ann.modules())
    assert ann.weak is None
    assert set(ann.state_dict()) == set(strip_weak(snn).state_dict())  # same structure
    out = ann(torch.randn(3, 3, size, size))
    assert out.shape == (3, 10)
    with pytest.raises(ValueError):
        ann(torch.randn(3, 3, size, size), 2)


@pytest.mark.parametrize("backend", tssd_fast.available_backends("cpu"))
def test_backends_match_torch_reference(backend):
    ref, size = small_model("resnet18", backend="torch")
    model, _ = small_model("resnet18", backend=backend)
    model.load_state_dict(ref.state_dict())
    assert all(n.backend == backend for n in lif_modules(model))
    x = torch.randn(3, 3, size, size)
    outs = []
    for m in (ref, model):
        out, weak = m(x, 3, return_weak=True)
        (out.square().mean() + weak.square().mean()).backward()
        outs.append((out, weak, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0])
    torch.testing.assert_close(outs[1][1], outs[0][1])
    for g, g_ref in zip(outs[1][2], outs[0][2]):
        torch.testing.assert_close(g, g_ref)


def test_early_exit_extremes_and_compute():
    model, size = small_model("vgg9")
    x, y = torch.randn(6, 3, size, size), torch.randint(0, 10, (6,))
    eval_with_batch_stats(model, x, 2)
    with torch.no_grad():
        full, weak = model(x, 2, return_weak=True)
        pred, exited = early_exit_predict(model, x, 2, threshold=1.01)  # nobody is that confident
        assert not exited.any() and torch.equal(pred, full.mean(0).argmax(-1))
        pred, exited = early_exit_predict(model, x, 2, threshold=0.0)  # everybody exits
        assert exited.all() and torch.equal(pred, weak.mean(0).argmax(-1))
        conf = F.softmax(weak.mean(0), -1).max(-1).values
        mid = conf.median().item()
        pred, exited = early_exit_predict(model, x, 2, threshold=mid)
        assert torch.equal(exited, conf >= mid) and 0 < exited.sum() < 6
        expect = torch.where(exited, weak.mean(0).argmax(-1), full.mean(0).argmax(-1))
        assert torch.equal(pred, expect)

    macs = macs_per_sample(model, x)
    early = sum(macs["stages"][:3]) + macs["weak"]
    none = early_exit_evaluate(model, [(x, y)], 2, threshold=1.01)
    assert none["exit_fraction"] == 0 and none["saved_compute"] == pytest.approx(-macs["weak"] / macs["total"])
    full_acc = (full.mean(0).argmax(-1) == y).sum().item() / 6
    assert none["accuracy"] == evaluate(model, [(x, y)], 2)["accuracy"] == full_acc
    every = early_exit_evaluate(model, [(x, y)], 2, threshold=0.0)
    assert every["exit_fraction"] == 1 and every["saved_compute"] == pytest.approx(1 - early / macs["total"])
    assert every["accuracy"] == (weak.mean(0).argmax(-1) == y).sum().item() / 6
    assert model.training is False
    model.train()
    evaluate(model, [(x, y)], 2)
    assert model.training  # the previous mode is restored


def test_macs_count_by_hand():
    # channels 8, 16 | 32, 32 | 64, 64 | 64, 64
    model = build_model("vgg9", width=0.125, input_size=16, backend="torch")
    macs = macs_per_sample(model, torch.randn(1, 3, 16, 16))
    k = 9
    assert macs["stages"] == [0, 16 * 16 * (3 * 8 + 8 * 16) * k, 8 * 8 * (16 * 32 + 32 * 32) * k,
                              4 * 4 * (32 * 64 + 64 * 64) * k, 2 * 2 * (64 * 64 + 64 * 64) * k]
    # the weak conv has stride 2 on the 4x4 stage-3 output
    assert macs["head"] == 64 * 10 and macs["weak"] == 2 * 2 * 32 * 32 * k + 32 * 10
    assert macs["total"] == sum(macs["stages"]) + macs["head"]
