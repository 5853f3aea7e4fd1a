"""Losses against hand computations, the training methods, and the TSSD teacher modes."""
import math

import pytest
import torch
import torch.nn.functional as F

import tssd_fast
from tssd_fast.distill import (METHODS, ce_of_mean, ce_per_timestep, kl_to_teacher, make_method,
                               mean_entropy, ssd_loss, tks_soft_loss, tks_teacher, tks_weight, tsd_loss)
from tssd_fast.models import build_ann, build_model
from _helpers import eval_with_batch_stats

pytestmark = pytest.mark.usefixtures("one_thread")


def leaf(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_()


def tiny(backend="torch", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model("resnet18", width=0.125, backend=backend, **kw)


def batch(B=4, C=3, size=8, seed=1, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, size, size, generator=g), torch.randint(0, classes, (B,), generator=g)


# ---------------------------------------------------------------- loss formulas


def test_tsd_loss_value_and_gradient_side():
    s, t = leaf(2, 3, 5, seed=0), leaf(4, 3, 5, seed=1)
    loss = tsd_loss(s, t)
    sm, tm = s.detach().mean(0), t.detach().mean(0)
    expect = sum((sm[b, k] - tm[b, k]) ** 2 for b in range(3) for k in range(5)) / 15
    torch.testing.assert_close(loss, expect)
    loss.backward()
    assert t.grad is None  # the teacher side carries no gradient
    # d/ds[t,b,k] of mean_bk (mean_t s - mean_t t)^2 = 2 (sm - tm) / (B K) / T
    torch.testing.assert_close(s.grad, (2 * (sm - tm) / 15 / 2).expand(2, 3, 5))


def test_ssd_loss_value_and_gradient_side():
    w, f = leaf(3, 2, 4, seed=2), leaf(5, 2, 4, seed=3)
    loss = ssd_loss(w, f)
    fm = f.detach().mean(0)
    expect = sum((w[t, b, k].detach() - fm[b, k]) ** 2 for t in range(3) for b in range(2) for k in range(4)) / 24
    torch.testing.assert_close(loss, expect)
    loss.backward()
    assert f.grad is None
    torch.testing.assert_close(w.grad, 2 * (w.detach() - fm) / 24)


def test_kl_to_teacher_matches_hinton_and_is_per_timestep():
    s, t, tau = leaf(3, 4, 6, seed=4), leaf(4, 6, seed=5), 3.0
    ref = F.kl_div(F.log_softmax(s[1] / tau, -1), F.softmax(t / tau, -1), reduction="batchmean") * tau ** 2
    torch.testing.assert_close(kl_to_teacher(s[1], t, tau), ref)
    per_t = sum(F.kl_div(F.log_softmax(s[i] / tau, -1), F.softmax(t / tau, -1), reduction="batchmean")
                for i in range(3)) / 3 * tau ** 2
    loss = kl_to_teacher(s, t, tau)
    torch.testing.assert_close(loss, per_t)
    loss.backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    assert kl_to_teacher(t.detach(), t.detach(), tau).abs() < 1e-6  # zero at the teacher


def test_entropy_and_ce_helpers():
    z, y = leaf(3, 4, 5, seed=6), torch.tensor([0, 4, 2, 1])
    p = torch.softmax(z, -1)
    torch.testing.assert_close(mean_entropy(z), -(p * p.log()).sum(-1).mean())
    assert mean_entropy(torch.zeros(2, 5)) == pytest.approx(math.log(5))
    torch.testing.assert_close(ce_per_timestep(z, y), sum(F.cross_entropy(z[i], y) for i in range(3)) / 3)
    torch.testing.assert_close(ce_of_mean(z, y), F.cross_entropy(z.mean(0), y))


def test_tks_teacher_and_loss_by_hand():
    # T=3, B=2, K=3: sample 0 correct (class 2) at t=0 and t=2; sample 1 (class 0) never correct
    z = torch.tensor([[[0., 1., 3.], [0., 2., 1.]],
                      [[2., 1., 0.], [0., 0., 1.]],
                      [[0., 0., 1.], [1., 3., 0.]]], requires_grad=True)
    y = torch.tensor([2, 0])
    teacher = tks_teacher(z, y)
    torch.testing.assert_close(teacher, torch.tensor([[0., 1., 4.], [0., 0., 0.]]))
    assert not teacher.requires_grad
    tau = 2.0
    for temper in (False, True):
        p = torch.softmax(teacher / tau, -1)
        scale = tau if temper else 1.0
        expect = tau ** 2 * sum(-(p[b] * torch.log_softmax(z[t, b] / scale, -1)).sum()
                                for t in range(3) for b in range(2)) / 6
        torch.testing.assert_close(tks_soft_loss(z, y, tau, temper_student=temper), expect)
    assert tks_weight(0, 10, 0.7, False) == 1.0
    assert tks_weight(5, 10, 0.7, False) == pytest.approx(0.65)
    assert tks_weight(20, 10, 0.7, False) == pytest.approx(0.3)
    assert tks_weight(5, 10, 0.7, True) == 0.7


# ---------------------------------------------------------------- methods: loss composition


def test_tssd_step_parts_match_direct_computation():
    model, (x, y) = tiny(), batch()
    method = make_method("tssd", T=2, T_teacher=4, alpha=0.5, beta=2.0)
    assert method.needs_weak
    loss, parts, logits = method.step(model, x, y)
    s, w = model(x, 2, return_weak=True)
    t = model(x, 4)
    ce, tsd, ssd = F.cross_entropy(s.mean(0), y), tsd_loss(s, t), ssd_loss(w, s)
    for key, val in (("ce", ce), ("tsd", tsd), ("ssd", ssd)):
        torch.testing.assert_close(parts[key], val.detach())
    torch.testing.assert_close(loss, ce + 0.5 * tsd + 2.0 * ssd)
    torch.testing.assert_close(logits, s.mean(0).detach())
    assert all(not v.requires_grad for v in parts.values()) and loss.requires_grad


def test_variants_select_terms():
    model, (x, y) = tiny(), batch()
    s, w = model(x, 2, return_weak=True)
    t = model(x, 5)
    ce = F.cross_entropy(s.mean(0), y)
    cases = {
        "baseline": (dict(T=2), ce),
        "tsd": (dict(T=2, T_teacher=5), ce + tsd_loss(s, t)),
        "ssd": (dict(T=2), ce + ssd_loss(w, s)),
    }
    for name, (hp, expect) in cases.items():
        loss, parts, _ = make_method(name, **hp).step(model, x, y)
        torch.testing.assert_close(loss, expect)
    ext = make_method("tssd", T=2, T_teacher=5, extension=True, teacher_ce=True)
    loss, parts, _ = ext.step(model, x, y)
    torch.testing.assert_close(parts["ssd"], ssd_loss(w, t).detach())  # weak head guided by the T' output
    torch.testing.assert_close(loss, ce + tsd_loss(s, t) + ssd_loss(w, t) + F.cross_entropy(t.mean(0), y))
    assert set(make_method("baseline", T=2).step(model, x, y)[1]) == {"ce", "loss"}


def test_teacher_run_gets_no_gradient():
    model, (x, y) = tiny(weak_stage=None), batch()
    params = list(model.parameters())
    loss, _, _ = make_method("tsd", T=2, T_teacher=4).step(model, x, y)
    got = torch.autograd.grad(loss, params)
    s, t = model(x, 2), model(x, 4).detach()  # the T' run as a constant target
    ref = torch.autograd.grad(F.cross_entropy(s.mean(0), y) + ((s.mean(0) - t.mean(0)) ** 2).mean(), params)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_separate_teacher_run_keeps_no_graph_unless_teacher_ce():
    # the T' run feeds only detached targets, so it must not store activations for backward
    model, (x, y) = tiny(weak_stage=None), batch()
    saved = []

    def count(method):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                      lambda t: t):
            method.step(model, x, y)
        return sum(saved)

    student_only = count(make_method("baseline", T=2))
    # a T'=4 run with a graph stores about twice the T=2 student's activations; without one,
    # only the TSD loss's few [B, K] tensors come on top
    assert count(make_method("tsd", T=2, T_teacher=4)) - student_only < 0.01 * student_only
    assert count(make_method("tsd", T=2, T_teacher=4, teacher_ce=True)) > 2 * student_only


def test_kd_and_tser_parts():
    model, (x, y) = tiny(), batch()
    torch.manual_seed(3)
    ann = build_ann("resnet18", width=0.125)
    with torch.no_grad():
        t = ann.eval()(x)
    kd = make_method("kd", T=3, teacher=ann, tau=2.0, alpha=0.3)
    loss, parts, _ = kd.step(model, x, y)
    z = model(x, 3)
    kl = F.kl_div(F.log_softmax(z.mean(0) / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4
    torch.testing.assert_close(loss, 0.7 * F.cross_entropy(z.mean(0), y) + 0.3 * kl)
    tser = make_method("tser", T=3, teacher=ann, tau=2.0, alpha=0.3, ent_weight=0.2)
    loss, parts, _ = tser.step(model, x, y)
    kl_t = sum(F.kl_div(F.log_softmax(z[i] / 2, -1), F.softmax(t / 2, -1), reduction="batchmean")
               for i in range(3)) / 3 * 4
    ce_t = sum(F.cross_entropy(z[i], y) for i in range(3)) / 3
    ent = -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1).mean()
    torch.testing.assert_close(loss, 0.7 * ce_t + 0.3 * kl_t - 0.2 * ent)
    assert not any(p.requires_grad for p in ann.parameters())


def test_tks_step_uses_epoch_schedule():
    model, (x, y) = tiny(), batch()
    z = model(x, 3)
    soft = tks_soft_loss(z, y, 3.0)
    ce = F.cross_entropy(z.mean(0), y)
    tks = make_method("tks", T=3, tau=3.0, alpha=0.7)
    for epoch, a in ((0, 1.0), (5, 0.65)):
        loss, parts, _ = tks.step(model, x, y, epoch=epoch, epochs=10)
        torch.testing.assert_close(loss, a * ce + (1 - a) * soft)


def test_make_method_errors():
    with pytest.raises(ValueError, match="unknown method"):
        make_method("nope", T=2)
    with pytest.raises(ValueError, match="T_teacher"):
        make_method("tssd", T=2)
    with pytest.raises(ValueError, match="T_teacher"):
        make_method("tsd", T=4, T_teacher=4)
    with pytest.raises(ValueError, match="teacher"):
        make_method("kd", T=2)
    with pytest.raises(ValueError, match="fixes"):
        make_method("baseline", T=2, tsd=True)
    with pytest.raises(ValueError, match="teacher_mode"):
        make_method("tssd", T=2, T_teacher=3, teacher_mode="other")
    with pytest.raises(ValueError, match="weak"):  # SSD on a model without a weak head
        make_method("ssd", T=2).step(tiny(weak_stage=None), *batch())


# ---------------------------------------------------------------- state reset and teacher modes


def test_no_membrane_leak_between_teacher_and_student_runs():
    model, (x, y) = tiny(), batch()
    fresh_loss, fresh_parts, _ = make_method("baseline", T=2).step(tiny(), x, y)
    model(x, 6)  # a teacher run leaves state behind...
    loss, parts, _ = make_method("baseline", T=2).step(model, x, y)  # ...which must not leak in
    torch.testing.assert_close(loss, fresh_loss, rtol=0, atol=0)
    # after a step every neuron is back at its reset state
    make_method("tssd", T=2, T_teacher=4).step(model, x, y)
    for n in model.modules():
        if isinstance(n, tssd_fast.LIFNode):
            assert not isinstance(n.v, torch.Tensor) and n.v == n.v_init
    # and the separate mode's student equals a fresh student run in the same step
    _, parts, logits = make_method("tssd", T=2, T_teacher=4).step(model, x, y)
    torch.testing.assert_close(logits, tiny()(x, 2).mean(0).detach(), rtol=0, atol=0)


def _step_with_grads(method, model, x, y):
    model.zero_grad()
    loss, parts, logits = method.step(model, x, y)
    loss.backward()
    return loss.detach(), parts, [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


@pytest.mark.parametrize("name", ["tsd", "tssd"])
def test_shared_prefix_equals_separate_in_eval_mode(name):
    model, (x, y) = tiny(), batch()
    eval_with_batch_stats(model, x, 5)
    hp = dict(T=2, T_teacher=5, extension=(name == "tssd"))
    if name == "tsd":
        hp.pop("extension")
    sep = _step_with_grads(make_method(name, teacher_mode="separate", **hp), model, x, y)
    pre = _step_with_grads(make_method(name, teacher_mode="shared_prefix", **hp), model, x, y)
    torch.testing.assert_close(pre[0], sep[0])
    for k in sep[1]:
        torch.testing.assert_close(pre[1][k], sep[1][k])
    for a, b in zip(pre[2], sep[2]):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b)


def test_shared_prefix_differs_in_train_mode_bn():
    model, (x, y) = tiny(), batch()
    model.train()
    sep, _, s_logits = make_method("tsd", T=2, T_teacher=5).step(model, x, y)
    pre, _, p_logits = make_method("tsd", T=2, T_teacher=5, teacher_mode="shared_prefix").step(model, x, y)
    assert not torch.allclose(s_logits, p_logits)  # BN statistics over T'*B vs T*B


def test_dvs_frames_convention():
    model = tiny(in_channels=2)
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(3, 6, 2, 8, 8, generator=g) < 0.2).float()  # loader layout [B, T_max, C, H, W]
    y = torch.tensor([1, 2, 3])
    loss, parts, logits = make_method("tssd", T=2, T_teacher=5).step(model, frames, y)
    s, w = model(frames[:, :2].transpose(0, 1), return_weak=True)
    t = model(frames[:, :5].transpose(0, 1))
    torch.testing.assert_close(loss, F.cross_entropy(s.mean(0), y) + tsd_loss(s, t) + ssd_loss(w, s))
    other = (torch.rand(3, 5, 2, 8, 8, generator=g) < 0.2).float()  # e.g. a T'-frame integration
    _, parts, _ = make_method("tsd", T=2, T_teacher=5).step(model, frames, y, x_teacher=other)
    torch.testing.assert_close(parts["tsd"], tsd_loss(s, model(other.transpose(0, 1))).detach())
    assert not torch.allclose(parts["tsd"], tsd_loss(s, t))  # the teacher input made a difference
    with pytest.raises(ValueError, match="frames"):
        make_method("tsd", T=2, T_teacher=7).step(model, frames, y)


# ---------------------------------------------------------------- training decreases the loss


def synthetic_task(classes=4, n=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, 3, size, size, generator=g)
    y = torch.arange(n) % classes
    return patterns[y] + 0.3 * torch.randn(n, 3, size, size, generator=g), y


@pytest.mark.parametrize("name", METHODS)
def test_short_training_decreases_loss(name):
    x, y = synthetic_task()
    model = tiny(num_classes=4, seed=1)
    hp = dict(T=2)
    if name in ("tsd", "tssd"):
        hp.update(T_teacher=3)
    if name == "tks":  # a fixed weight on the TKS term (the default schedule gives it 0 at epoch 0)
        hp.update(tau=1.0, alpha=0.5, static_alpha=True)
    if name in ("kd", "tser"):
        torch.manual_seed(2)
        hp.update(teacher=build_ann("resnet18", width=0.125, num_classes=4))
    method = make_method(name, **hp)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    model.train()
    losses = []
    for step in range(12):
        loss, _, _ = method.step(model, x, y, epoch=0, epochs=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses


@pytest.mark.parametrize("backend", tssd_fast.available_backends("cpu"))
def test_tssd_step_on_every_backend(backend):
    x, y = batch()
    ref = _step_with_grads(make_method("tssd", T=2, T_teacher=3), tiny("torch"), x, y)
    got = _step_with_grads(make_method("tssd", T=2, T_teacher=3), tiny(backend), x, y)
    torch.testing.assert_close(got[0], ref[0])
    for a, b in zip(got[2], ref[2]):
        torch.testing.assert_close(a, b)
