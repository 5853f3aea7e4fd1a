"""Loss formulas (one definition each). Logit sequences are time-first ``[T, B, K]``.

Every distillation target (teacher side) is detached: gradients flow only into the student side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_of_mean(logits_seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Task loss of the paper: ``CE(mean_t z_t, y)`` on the time-averaged logits."""
    return F.cross_entropy(logits_seq.mean(0), y)


def ce_per_timestep(logits_seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_t CE(z_t, y)``: cross-entropy of every timestep (TSER's temporal separation of CE)."""
    T = logits_seq.shape[0]
    return F.cross_entropy(logits_seq.flatten(0, 1), y.repeat(T))


def tsd_loss(student_seq: torch.Tensor, teacher_seq: torch.Tensor) -> torch.Tensor:
    """Temporal self-distillation: ``mean((s.mean(0) - t.mean(0).detach())**2)``.

    ``student_seq`` ``[T, B, K]`` (T-step run), ``teacher_seq`` ``[T', B, K]`` (T'-step run of the
    same network); squared L2 between the time-averaged logits, averaged over batch and classes.
    """
    return ((student_seq.mean(0) - teacher_seq.mean(0).detach()) ** 2).mean()


def ssd_loss(weak_seq: torch.Tensor, final_seq: torch.Tensor) -> torch.Tensor:
    """Spatial self-distillation: ``mean((w - f.mean(0, keepdim=True).detach())**2)``.

    Every timestep of the weak classifier ``weak_seq`` ``[T, B, K]`` is pulled towards the
    time-averaged final output ``final_seq`` ``[T or T', B, K]``.
    """
    return ((weak_seq - final_seq.mean(0, keepdim=True).detach()) ** 2).mean()


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton's distillation term ``tau^2 * KL(softmax(t/tau) || softmax(s/tau))``.

    Summed over classes and averaged over every other dim. ``teacher_logits`` ``[B, K]`` is
    broadcast against ``student_logits`` ``[..., B, K]`` (``[T, B, K]`` gives the per-timestep
    KL averaged over timesteps, as in TSER).
    """
    log_q = F.log_softmax(student_logits / tau, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    return tau ** 2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of ``softmax(logits)`` over the last dim, averaged over the rest."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def tks_teacher(logits_seq: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TKS teacher ``[B, K]``: the sum over timesteps of the logits whose argmax equals ``y`` (detached).

    A sample with no correct timestep gets an all-zero teacher, i.e. a uniform soft target (as in
    the TKS reference code).
    """
    correct = (logits_seq.argmax(-1) == y).unsqueeze(-1)
    return (logits_seq * correct).sum(0).detach()


def tks_soft_loss(logits_seq: torch.Tensor, y: torch.Tensor, tau: float,
                  temper_student: bool = False) -> torch.Tensor:
    """``tau^2 * mean_t mean_b [-sum_k softmax(teacher/tau)_k * log_softmax(z_t / s)_k]``.

    ``s = tau`` with ``temper_student`` (standard KD form), else ``s = 1`` (the TKS reference code
    softens only the teacher).
    """
    p = F.softmax(tks_teacher(logits_seq, y) / tau, dim=-1)
    log_q = F.log_softmax(logits_seq / tau if temper_student else logits_seq, dim=-1)
    return tau ** 2 * -(p * log_q).sum(-1).mean()


def tks_weight(epoch: int, epochs: int, alpha: float, static: bool) -> float:
    """TKS weight ``a`` of the CE term: ``alpha`` if static, else ``1 - min(epoch/epochs, 1) * alpha``."""
    if static:
        return alpha
    return 1.0 - min(epoch / max(epochs, 1), 1.0) * alpha
