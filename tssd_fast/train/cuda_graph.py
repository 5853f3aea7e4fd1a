"""A whole training step captured once in a CUDA graph and replayed.

On a GPU a spiking network's step is thousands of small kernels; launching them from Python costs
more than running them at small batch sizes. Capturing forward, loss, backward and the optimizer
step in one CUDA graph and replaying it removes that host cost (PyTorch's whole-network capture
recipe). Requirements, all true of tssd_fast's networks and methods:

- static shapes: the batch is copied into the same input tensors every step (so the last, short
  batch of an epoch must run eagerly);
- no host synchronisation inside the step (no .item(), no data-dependent Python control flow);
- the neuron state is reset inside the step: every tssd_fast network resets its LIFNodes at the
  start of forward, and a reset LIFNode starts from the scalar v_init inside the op, so no
  state tensor outlives a replay;
- Python numbers the step reads (the learning rate, the epoch a method weighs its losses by) are
  baked in at capture: `GraphedStep` captures again when `key()` or the learning rates change.

Capturing needs warm-up steps first (cuDNN choices, the optimizer's state). With `restore=model`
they are undone afterwards, so a graphed run trains exactly the steps an eager run does: the
model's parameters and buffers get their values back, and SGD's momentum buffers theirs (zero
for a buffer the warm-up created: with dampening 0 that is SGD's own first step).
"""
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn


class GraphedStep:
    """step_fn() -> loss runs forward and loss on the static tensors it closes over; this class
    adds zero_grad / backward / optimizer.step and captures all of it in a CUDA graph.

    `copy_inputs(*batch)` loads a batch into the static tensors, `()` runs a step and returns
    the loss tensor (overwritten by the next step; so are whatever tensors step_fn stored for
    the caller). The first call (and the first after a change of `key()` or of a learning rate)
    warms up, captures and replays. capture=False runs the same steps eagerly (CPU tests of the
    warm-up and restore logic, and a fallback).
    """

    def __init__(self, step_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                 static_inputs: Sequence[torch.Tensor] = (), warmup: int = 2,
                 restore: Optional[nn.Module] = None, key: Callable[[], object] = lambda: None,
                 capture: bool = True, before_step: Optional[Callable[[], None]] = None):
        if restore is not None:
            _check_restorable(optimizer)
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.static_inputs = list(static_inputs)
        self.warmup = warmup
        self.restore = restore
        self.key = key
        self.capture = capture
        self.before_step = before_step or (lambda: None)  # e.g. gradient clipping
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.loss: Optional[torch.Tensor] = None
        self._state_key = None
        self.captures = 0

    def _eager(self) -> torch.Tensor:
        loss = self.step_fn()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.before_step()
        self.optimizer.step()
        return loss

    def _warm_up(self) -> None:
        saved = _snapshot(self.restore, self.optimizer) if self.restore is not None else None
        if self.capture:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # cuDNN choices, optimizer state, allocator pools
                for _ in range(self.warmup):
                    self._eager()
            torch.cuda.current_stream().wait_stream(side)
        else:
            for _ in range(self.warmup):
                self._eager()
        if saved is not None:
            _restore(self.restore, self.optimizer, saved)

    def _capture(self) -> None:
        self._warm_up()
        self.captures += 1
        if not self.capture:
            return
        graph = torch.cuda.CUDAGraph()
        # grads must be None at capture, so backward allocates them in the graph's pool and
        # every replay writes (not accumulates) them
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            loss = self.step_fn()
            loss.backward()
            self.before_step()
            self.optimizer.step()
        self.graph, self.loss = graph, loss

    def copy_inputs(self, *batch: torch.Tensor) -> None:
        """Load a batch into the static input tensors (same shapes)."""
        for dst, src in zip(self.static_inputs, batch):
            if dst.shape != src.shape:
                raise ValueError(f"a CUDA-graph step needs static shapes: got {tuple(src.shape)}, "
                                 f"captured {tuple(dst.shape)} (run the short batch eagerly)")
            dst.copy_(src, non_blocking=True)

    def __call__(self) -> torch.Tensor:
        state_key = (self.key(), tuple(g["lr"] for g in self.optimizer.param_groups))
        if self.captures == 0 or state_key != self._state_key:
            self._state_key = state_key
            self._capture()
        if not self.capture:
            self.loss = self._eager()
            return self.loss
        self.graph.replay()
        return self.loss


def _check_restorable(optimizer) -> None:
    if not isinstance(optimizer, torch.optim.SGD) or any(
            g.get("dampening", 0) != 0 or g.get("nesterov", False)
            for g in optimizer.param_groups):
        raise ValueError("undoing the warm-up steps of a CUDA-graph step is implemented for SGD "
                         "(dampening 0, no Nesterov), the paper's optimizer; use --optimizer sgd")


def _snapshot(model: nn.Module, optimizer) -> Dict[str, object]:
    with torch.no_grad():
        return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "opt": {id(p): {k: v.detach().clone() for k, v in s.items()
                                if isinstance(v, torch.Tensor)}
                        for p, s in optimizer.state.items()}}


def _restore(model: nn.Module, optimizer, saved) -> None:
    """Values back in place: the tensors the graph will capture stay the same objects."""
    with torch.no_grad():
        current = model.state_dict()
        for k, v in saved["model"].items():
            current[k].copy_(v)
        for p, state in optimizer.state.items():
            before = saved["opt"].get(id(p), {})
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    v.copy_(before[k]) if k in before else v.zero_()
