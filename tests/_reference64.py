"""The tests' oracle, written from docs/NEURON.md alone (no tssd_fast code).

Forward runs in the given compute dtype with docs/NEURON.md's operation order, so fp32 spikes must be
bitwise equal to any correct fp32 backend, and fp64 spikes to any fp64 backend. Backward is the
explicit BPTT of docs/NEURON.md, in float64, from the forward's H: an independent check of both the
fused kernels and the autograd of the pure-PyTorch backend.
"""
import itertools
import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class Neuron:
    tau: float = 2.0
    decay_input: bool = True
    v_threshold: float = 1.0
    v_reset: Optional[float] = 0.0  # None: soft reset
    surrogate: str = "Sigmoid"      # Rect | Sigmoid | ATan
    alpha: float = 4.0
    detach_reset: bool = False

    def surrogate_obj(self):
        import tssd_fast.surrogate as S
        return getattr(S, self.surrogate)(alpha=self.alpha)

    def kwargs(self):
        """Keyword arguments of tssd_fast.lif_multistep for this neuron."""
        return dict(tau=self.tau, decay_input=self.decay_input, v_threshold=self.v_threshold,
                    v_reset=self.v_reset, surrogate_function=self.surrogate_obj(),
                    detach_reset=self.detach_reset)

    def __str__(self):
        reset = "soft" if self.v_reset is None else f"hard{self.v_reset}"
        return (f"{self.surrogate}{self.alpha}-{reset}-tau{self.tau}-th{self.v_threshold}"
                f"-{'decay' if self.decay_input else 'nodecay'}"
                f"{'-detach' if self.detach_reset else ''}")


DEFAULT_ALPHA = {"Rect": 1.0, "Sigmoid": 4.0, "ATan": 2.0}


def all_neurons(tau=2.0, v_threshold=1.0):
    """Every combination of reset mode x surrogate x decay_input x detach_reset (36)."""
    out = []
    for reset, surr, decay, detach in itertools.product(
            (None, 0.0, -0.25), ("Rect", "Sigmoid", "ATan"), (True, False), (False, True)):
        out.append(Neuron(tau, decay, v_threshold, reset, surr, DEFAULT_ALPHA[surr], detach))
    return out


def surrogate_grad64(u: torch.Tensor, n: Neuron) -> torch.Tensor:
    """dS/dH in float64 at u = H - v_threshold (docs/NEURON.md)."""
    u = u.double()
    a = n.alpha
    if n.surrogate == "Rect":
        return a * (u.abs() < 0.5 / a).double()
    if n.surrogate == "Sigmoid":
        sg = 1.0 / (1.0 + torch.exp(-a * u))
        return a * sg * (1.0 - sg)
    return (a / 2) / (1.0 + (math.pi / 2 * a * u) ** 2)


def forward(x: torch.Tensor, v0: torch.Tensor, n: Neuron, cdt: torch.dtype):
    """x [T, N] -> (S, H, V) each [T, N] in cdt, docs/NEURON.md order."""
    x = x.to(cdt)
    v = v0.to(cdt).clone()
    vr = 0.0 if n.v_reset is None else n.v_reset
    S, H, V = [], [], []
    for t in range(x.shape[0]):
        if n.decay_input:
            h = v + (x[t] - (v - vr)) / n.tau
        else:
            h = v - (v - vr) / n.tau + x[t]
        s = (h >= n.v_threshold).to(cdt)
        if n.v_reset is None:
            v = h - n.v_threshold * s
        else:
            v = h * (1 - s) + n.v_reset * s
        S.append(s)
        H.append(h)
        V.append(v)
    empty = x.new_empty(x.shape)
    return (torch.stack(S) if S else empty, torch.stack(H) if H else empty,
            torch.stack(V) if V else empty)


def backward(H: torch.Tensor, S: torch.Tensor, n: Neuron, grad_s: torch.Tensor,
             grad_v_last: Optional[torch.Tensor] = None,
             grad_v_seq: Optional[torch.Tensor] = None):
    """Explicit BPTT of docs/NEURON.md in float64: returns (grad_x [T, N], grad_v0 [N])."""
    H, S, gs = H.double(), S.double(), grad_s.double()
    T, N = gs.shape
    gv = torch.zeros(N, dtype=torch.float64) if grad_v_last is None else grad_v_last.double().clone()
    gx = torch.empty(T, N, dtype=torch.float64)
    for t in range(T - 1, -1, -1):
        if grad_v_seq is not None:
            gv = gv + grad_v_seq[t].double()
        sg = surrogate_grad64(H[t] - n.v_threshold, n)
        if n.v_reset is None:
            dvdh = torch.ones_like(sg) if n.detach_reset else 1 - n.v_threshold * sg
        else:
            dvdh = (1 - S[t]) if n.detach_reset else (1 - S[t]) + (n.v_reset - H[t]) * sg
        gh = gs[t] * sg + gv * dvdh
        gx[t] = gh / n.tau if n.decay_input else gh
        gv = gh * (1 - 1 / n.tau)
    return gx, gv
