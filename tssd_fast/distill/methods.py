"""Training methods behind one interface, for the training CLI.

``method = make_method(name, **hparams)`` then, per batch,
``loss, parts, logits = method.step(model, x, y, epoch=e, epochs=E)``:

- ``x`` is in loader layout: static images ``[B, C, H, W]`` (direct encoding) or DVS frames
  batch-first ``[B, T_max, C, H, W]`` (the first T frames feed a T-step run);
- ``loss`` is the scalar to back-propagate, ``parts`` a dict of detached 0-dim tensors
  (``'loss'`` and every term) for logging, ``logits`` the detached ``[B, K]`` time-averaged student
  output (for training accuracy).

The caller sets ``model.train()`` and runs the optimizer. Neuron states are reset before and after
every run of the network.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..models.base import reset_states
from ..models.encoding import ann_input, to_sequence
from . import losses as L

TEACHER_MODES = ("separate", "shared_prefix")


def _run(model: nn.Module, x: torch.Tensor, T: int, weak: bool):
    """One run of ``model`` on ``T`` timesteps of ``x`` (loader layout); returns (logits, weak or None)."""
    out = model(to_sequence(x, T), return_weak=weak)
    reset_states(model)
    return out if weak else (out, None)


def _detached(parts: dict) -> dict:
    return {k: v.detach() for k, v in parts.items()}


class Method:
    """Base class: ``T`` (student/inference timesteps), ``needs_weak`` (the model must have a weak head)."""

    name = "method"
    needs_weak = False

    def __init__(self, T: int):
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = T

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int = 0, epochs: int = 1):
        """Compute ``(loss, parts, logits_for_accuracy)`` for one batch."""
        raise NotImplementedError


class TSSD(Method):
    """Temporal-spatial self-distillation and its ablations (baseline, TSD, SSD, extension).

    ``loss = CE(mean_t s, y) + alpha * TSD(s, t) + beta * SSD(w, s)`` where ``s`` is the T-step
    output, ``t`` the T'-step output of the same network (``T_teacher``) and ``w`` the weak
    classifier's T-step output. Switches:

    - ``tsd`` / ``ssd``: include each term (both off = baseline, CE only);
    - ``extension``: the paper's further extension, SSD target = the T'-step output ``t``;
    - ``teacher_ce``: also add ``CE(mean_t t, y)`` (default off);
    - ``teacher_mode``: ``'separate'`` (a T run and a T' run) or ``'shared_prefix'`` (one T' run,
      the student is its first T steps; it skips the T-step forward but back-propagates through
      all T' steps, so a training step is not cheaper than ``'separate'``, whose teacher run
      keeps no graph (measured: docs/NETWORKS.md). Same as ``'separate'`` in eval mode; in
      train mode BN statistics come from all T' steps).
    ``x_teacher`` in :meth:`step` optionally gives the teacher's input (e.g. a T'-frame
    integration of the same DVS samples); by default the teacher uses the first T' frames of ``x``
    (static images: the image repeated T' times).
    """

    def __init__(self, T: int, T_teacher: int | None = None, alpha: float = 1.0, beta: float = 1.0,
                 tsd: bool = True, ssd: bool = True, extension: bool = False, teacher_ce: bool = False,
                 teacher_mode: str = "separate", name: str = "tssd"):
        super().__init__(T)
        if teacher_mode not in TEACHER_MODES:
            raise ValueError(f"teacher_mode must be one of {TEACHER_MODES}, got {teacher_mode!r}")
        if extension and not ssd:
            raise ValueError("extension changes the SSD target; it needs ssd=True")
        self.needs_teacher = tsd or extension or teacher_ce
        if self.needs_teacher and (T_teacher is None or T_teacher <= T):
            raise ValueError(f"{name} needs T_teacher > T (got T={T}, T_teacher={T_teacher})")
        self.T_teacher, self.alpha, self.beta = T_teacher, alpha, beta
        self.tsd, self.ssd, self.extension, self.teacher_ce = tsd, ssd, extension, teacher_ce
        self.teacher_mode, self.name, self.needs_weak = teacher_mode, name, ssd

    def step(self, model, x, y, epoch=0, epochs=1, x_teacher=None):
        """One batch of TSSD (see the class docstring); ``epoch``/``epochs`` are unused."""
        t_out = None
        if self.needs_teacher and self.teacher_mode == "shared_prefix":
            if x_teacher is not None:
                raise ValueError("shared_prefix runs the student as a prefix of the teacher: pass x only")
            t_out, t_weak = _run(model, x, self.T_teacher, self.ssd)
            s_out, weak = t_out[: self.T], (t_weak[: self.T] if self.ssd else None)
        else:
            s_out, weak = _run(model, x, self.T, self.ssd)
            if self.needs_teacher:
                x_t = x if x_teacher is None else x_teacher
                # Every loss detaches the teacher side, so without teacher_ce its run needs no
                # graph: no_grad saves its activations (measured ~3x less saved memory on VGG-9).
                with torch.set_grad_enabled(torch.is_grad_enabled() and self.teacher_ce):
                    t_out, _ = _run(model, x_t, self.T_teacher, False)
        parts = {"ce": L.ce_of_mean(s_out, y)}
        loss = parts["ce"]
        if self.tsd:
            parts["tsd"] = L.tsd_loss(s_out, t_out)
            loss = loss + self.alpha * parts["tsd"]
        if self.ssd:
            parts["ssd"] = L.ssd_loss(weak, t_out if self.extension else s_out)
            loss = loss + self.beta * parts["ssd"]
        if self.teacher_ce:
            parts["teacher_ce"] = L.ce_of_mean(t_out, y)
            loss = loss + parts["teacher_ce"]
        parts["loss"] = loss
        return loss, _detached(parts), s_out.mean(0).detach()


class TKS(Method):
    """Temporal knowledge sharing (Dong et al., 2023).

    ``loss = a * CE(mean_t z, y) + (1 - a) * tks_soft_loss(z, y, tau)`` with
    ``a = 1 - (epoch/epochs) * alpha`` (or ``a = alpha`` with ``static_alpha``), teacher = sum of
    the correctly classified timesteps' logits (detached). ``temper_student=False`` (default)
    follows the TKS reference code (student log-softmax at temperature 1); ``True`` divides the
    student logits by ``tau`` as in standard KD.
    """

    name = "tks"

    def __init__(self, T: int, tau: float = 3.0, alpha: float = 0.7, static_alpha: bool = False,
                 temper_student: bool = False):
        super().__init__(T)
        self.tau, self.alpha, self.static_alpha, self.temper_student = tau, alpha, static_alpha, temper_student

    def step(self, model, x, y, epoch=0, epochs=1):
        """One batch of TKS; the CE weight decays with ``epoch / epochs``."""
        z, _ = _run(model, x, self.T, False)
        a = L.tks_weight(epoch, epochs, self.alpha, self.static_alpha)
        parts = {"ce": L.ce_of_mean(z, y), "tks": L.tks_soft_loss(z, y, self.tau, self.temper_student)}
        loss = a * parts["ce"] + (1 - a) * parts["tks"]
        parts["loss"] = loss
        return loss, _detached(parts), z.mean(0).detach()


class _ANNTeacherMethod(Method):
    """Shared part of the methods distilling from a frozen ANN teacher ``[B, C, H, W] -> [B, K]``."""

    def __init__(self, T: int, teacher: nn.Module, tau: float, alpha: float):
        super().__init__(T)
        if teacher is None:
            raise ValueError(f"{self.name} needs teacher=<trained ANN>, e.g. tssd_fast.models.build_ann(arch)")
        self.teacher, self.tau, self.alpha = teacher.requires_grad_(False), tau, alpha

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits in eval mode; DVS input is given to the ANN as its first T frames averaged."""
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher(ann_input(x, self.T))


class KD(_ANNTeacherMethod):
    """Plain KD (Hinton): ``(1 - alpha) * CE(mean_t z, y) + alpha * tau^2 * KL(p_T || q(mean_t z))``."""

    name = "kd"

    def __init__(self, T: int, teacher: nn.Module = None, tau: float = 4.0, alpha: float = 0.5):
        super().__init__(T, teacher, tau, alpha)

    def step(self, model, x, y, epoch=0, epochs=1):
        """One batch of KD on the time-averaged student logits."""
        z, _ = _run(model, x, self.T, False)
        parts = {"ce": L.ce_of_mean(z, y), "kd": L.kl_to_teacher(z.mean(0), self.teacher_logits(x), self.tau)}
        loss = (1 - self.alpha) * parts["ce"] + self.alpha * parts["kd"]
        parts["loss"] = loss
        return loss, _detached(parts), z.mean(0).detach()


class TSER(_ANNTeacherMethod):
    """Temporal separation with entropy regularization (Yu et al., 2025).

    ``loss = (1 - alpha) * CE + alpha * tau^2 * mean_t KL(p_T^tau || q_t^tau) - ent_weight * mean_t H(q_t)``

    - temporal separation: the KL is taken between the teacher and *every* timestep's student
      distribution, then averaged; with ``ce_per_timestep`` (default) the CE is separated the same
      way (``mean_t CE(z_t, y)``), else ``CE(mean_t z, y)``;
    - entropy term (the paper's equation was not available to us): ``H(q_t)`` is the entropy of the
      student's per-timestep class probabilities ``softmax(z_t)`` at temperature 1, *subtracted*
      (a confidence penalty, Pereyra et al. 2017). Chosen because TSER states the term is there to
      keep the student from inheriting the teacher's over-confident wrong predictions and to
      stabilise optimisation, which is what rewarding entropy does; minimising entropy would push
      the other way. ``ent_weight=0`` gives TS-KD without the regulariser.
    """

    name = "tser"

    def __init__(self, T: int, teacher: nn.Module = None, tau: float = 4.0, alpha: float = 0.5,
                 ent_weight: float = 0.1, ce_per_timestep: bool = True):
        super().__init__(T, teacher, tau, alpha)
        self.ent_weight, self.ce_per_timestep = ent_weight, ce_per_timestep

    def step(self, model, x, y, epoch=0, epochs=1):
        """One batch of TSER."""
        z, _ = _run(model, x, self.T, False)
        ce = L.ce_per_timestep(z, y) if self.ce_per_timestep else L.ce_of_mean(z, y)
        parts = {"ce": ce, "kd": L.kl_to_teacher(z, self.teacher_logits(x), self.tau), "entropy": L.mean_entropy(z)}
        loss = (1 - self.alpha) * parts["ce"] + self.alpha * parts["kd"] - self.ent_weight * parts["entropy"]
        parts["loss"] = loss
        return loss, _detached(parts), z.mean(0).detach()


_TSSD_VARIANTS = {"baseline": dict(tsd=False, ssd=False), "tsd": dict(ssd=False),
                  "ssd": dict(tsd=False), "tssd": {}}
METHODS = (*_TSSD_VARIANTS, "tks", "tser", "kd")


def make_method(name: str, **hparams) -> Method:
    """Build a training method by name: baseline, tsd, ssd, tssd, tks, tser or kd.

    ``hparams`` are the keyword arguments of :class:`TSSD` (baseline/tsd/ssd/tssd; the variant
    fixes ``tsd``/``ssd``), :class:`TKS`, :class:`TSER` or :class:`KD`; ``T`` is always required,
    ``T_teacher`` for tsd/tssd, ``teacher`` (an ANN) for tser/kd.
    """
    if name in _TSSD_VARIANTS:
        fixed = _TSSD_VARIANTS[name]
        clash = set(fixed) & set(hparams)
        if clash:
            raise ValueError(f"{name} fixes {sorted(clash)}; use make_method('tssd', ...) to set them freely")
        return TSSD(name=name, **fixed, **hparams)
    classes = {"tks": TKS, "tser": TSER, "kd": KD}
    if name not in classes:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    return classes[name](**hparams)
