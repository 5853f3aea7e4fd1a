"""A whole training step captured once in a CUDA graph and replayed.

On a GPU a spiking network's step is thousands of small kernels; launching them from Python costs
more than running them at small batch sizes. Capturing forward, loss, backward and the optimizer
step in one CUDA graph and replaying it removes that host cost (PyTorch's whole-network capture
recipe). Requirements, all true of tssd_fast's networks and methods:

- static shapes: the batch is copied into the same input tensors every step (so the last, short
  batch of an epoch must be dropped or run eagerly);
- no host synchronisation inside the step (no .item(), no data-dependent Python control flow);
- the neuron state is reset inside the step: every tssd_fast network resets its LIFNodes at the
  start of forward, and a reset LIFNode starts from the scalar v_init inside the op, so no
  state tensor outlives a replay;
- Python numbers the step reads (the learning rate, loss weights) are baked in at capture:
  `GraphedStep` captures again when the optimizer's learning rates change.
"""
from typing import Callable, Optional, Sequence

import torch


class GraphedStep:
    """step_fn() -> loss runs forward and loss on the static tensors it closes over; this class
    adds zero_grad / backward / optimizer.step and captures all of it in a CUDA graph.

    Call `copy_inputs(*batch)` to load a batch into the static tensors and `()` to run a step;
    the returned loss tensor is overwritten by the next step. The first call (and the first after
    a learning-rate change) warms up on a side stream and captures; later calls replay.
    """

    def __init__(self, step_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                 static_inputs: Sequence[torch.Tensor] = (), warmup: int = 2):
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.static_inputs = list(static_inputs)
        self.warmup = warmup
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.loss: Optional[torch.Tensor] = None
        self._lrs = None
        self.captures = 0

    def _eager(self) -> torch.Tensor:
        loss = self.step_fn()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuDNN choices, optimizer state, allocator pools
            for _ in range(self.warmup):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # grads must be None at capture, so backward allocates them in the graph's pool and
        # every replay writes (not accumulates) them
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            loss = self.step_fn()
            loss.backward()
            self.optimizer.step()
        self.graph, self.loss = graph, loss
        self.captures += 1

    def copy_inputs(self, *batch: torch.Tensor) -> None:
        """Load a batch into the static input tensors (same shapes)."""
        for dst, src in zip(self.static_inputs, batch):
            if dst.shape != src.shape:
                raise ValueError(f"a CUDA-graph step needs static shapes: got {tuple(src.shape)}, "
                                 f"captured {tuple(dst.shape)} (drop the last short batch)")
            dst.copy_(src, non_blocking=True)

    def __call__(self) -> torch.Tensor:
        lrs = tuple(g["lr"] for g in self.optimizer.param_groups)
        if self.graph is None or lrs != self._lrs:
            self._lrs = lrs
            self._capture()  # the warm-up steps already trained: count them as this call's work
        self.graph.replay()
        return self.loss
