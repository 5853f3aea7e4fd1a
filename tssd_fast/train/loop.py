"""The training run: epochs of ``method.step`` + optimizer, evaluation, logging, checkpoints.

:func:`run` is the programmatic entry point (``python -m tssd_fast.train`` parses flags into a
:class:`~tssd_fast.train.config.TrainConfig` and calls it). Files written in ``out_dir`` (rank 0
only): ``config.json``, ``metrics.jsonl`` (one object per epoch), ``checkpoint_last.pt`` and
``checkpoint_best.pt`` (atomic), ``train.log``, ``summary.json`` (``eval.json`` with
``eval_only``) and TensorBoard event files when tensorboard is installed.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import sys
import time
import warnings
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from . import distributed as D
from .builders import ann_input, build_data, build_method, build_network, dataset_meta, load_teacher, method_needs_weak
from .checkpoint import FORMAT, atomic_write_bytes, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, cudnn_benchmark
from .cuda_graph import GraphedStep
from .optim import build_optimizer, build_scheduler

RUN_FILES = ("metrics.jsonl", "checkpoint_last.pt", "checkpoint_best.pt", "summary.json", "eval.json",
             "train.log", "config.json")


class RunSetupError(ValueError):
    """A run that cannot start as configured (reported without a traceback by the CLI)."""


class NonFiniteLossError(RuntimeError):
    """The loss of a training step was NaN or inf; training stopped before the optimizer step
    (with --cuda-graphs, right after it: the step is one graph)."""

    def __init__(self, step: int, epoch: int, batch: int, value: float, last_saved: Optional[int]):
        self.step, self.epoch, self.batch, self.value, self.last_saved = step, epoch, batch, value, last_saved
        saved = ("no checkpoint had been written yet" if last_saved is None else
                 f"checkpoint_last.pt still holds epoch {last_saved} and was not touched")
        super().__init__(f"non-finite loss ({value}) at step {step} (epoch {epoch}, batch {batch}): "
                         f"training stopped and nothing was saved; {saved}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _split_batch(batch):
    """``(x, x_teacher or None, y)`` from a loader batch (``x`` may be a pair with ``teacher_T``)."""
    x, y = batch
    if isinstance(x, (tuple, list)):
        return x[0], x[1], y
    return x, None, y


def _to_sequence(x: torch.Tensor, T: int) -> torch.Tensor:
    from ..models.encoding import to_sequence
    return to_sequence(x, T)


class Trainer:
    """One training (or evaluation) run of a resolved :class:`TrainConfig`.

    Use :func:`run`; the attributes (``model``, ``net``, ``optimizer``, ...) are public for
    tests and scripts.
    """

    def __init__(self, cfg: TrainConfig, info: D.DistInfo):
        self.cfg, self.info, self.device = cfg, info, info.device
        self.out_dir = cfg.out_dir
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.best_acc, self.best_epoch = -1.0, None
        self.last_saved: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        self._tb = None
        self._log_file = None

        self._prepare_out_dir()  # every rank checks (so all fail together); rank 0 deletes
        D.barrier(info)

        _seed_everything(cfg.seed)
        try:
            self.train_loader, self.test_loader = build_data(cfg, info.distributed)
        except (ValueError, TypeError, ImportError) as e:  # bad --data-dir/--data-opt, missing package
            opts = "".join(f" --data-opt {k}={v}" for k, v in cfg.data_opts.items())
            raise RunSetupError(f"--dataset {cfg.dataset}{opts}: {e}") from e
        self.meta = dataset_meta(self.train_loader.dataset)
        if self.meta["kind"] == "dvs" and self.meta["frames"] is not None and max(cfg.T_eval) > self.meta["frames"]:
            raise RunSetupError(f"--T-eval {max(cfg.T_eval)} exceeds the {self.meta['frames']} frames the test "
                             f"data are built with for this method; use T_eval <= {self.meta['frames']}")
        self.teacher = None
        if cfg.method in ("kd", "tser") and not cfg.eval_only:
            try:
                self.teacher = load_teacher(cfg.teacher, self.meta, self.device)
            except (ValueError, RuntimeError, KeyError) as e:
                raise RunSetupError(f"--teacher {cfg.teacher}: {e}") from e
        self.method = None if cfg.eval_only else build_method(cfg, self.teacher)
        self.needs_weak = method_needs_weak(cfg) if self.method is None else bool(self.method.needs_weak)
        _seed_everything(cfg.seed)  # same initial weights on every rank and for every data setting
        try:
            self.net = build_network(cfg, self.meta, self.needs_weak).to(self.device)
            if cfg.channels_last:  # conv weights NHWC: the convs then run and return NHWC
                self.net = self.net.to(memory_format=torch.channels_last)
        except ValueError as e:  # e.g. an input size the architecture cannot take
            raise RunSetupError(f"--arch {cfg.arch} on {cfg.dataset} (input {self.meta['input_size']}): {e}; "
                                f"resize the input with --data-opt size=N (N = 16, 32, ...)") from e
        self.is_ann = cfg.method == "ann"
        self.model = self.net if cfg.eval_only else D.wrap_model(self.net, info)
        self.optimizer = build_optimizer(cfg, self.net.parameters())
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        # different augmentation streams per rank, the same stream for a given (seed, rank)
        _seed_everything(cfg.seed + 1_000_003 * info.rank)
        if cfg.resume:
            self._resume(cfg.resume)
            if not cfg.eval_only and self.epoch >= cfg.epochs:
                raise RunSetupError(f"{cfg.resume} has already trained {self.epoch} of --epochs {cfg.epochs}: "
                                    f"pass --epochs N with N > {self.epoch} to train further")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cudnn_benchmark(cfg)
        self._graph: Optional[GraphedStep] = None
        self._graph_out: Dict[str, Any] = {}

    # ----------------------------------------------------------------------------- helpers
    def _amp_dtype(self) -> Optional[torch.dtype]:
        if not self.cfg.amp:
            return None
        if self.cfg.amp_dtype == "fp16":
            return torch.float16
        if self.cfg.amp_dtype == "bf16" or self.device.type != "cuda":
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _input(self, x: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
        """A batch on the run's device; an image batch [B, C, H, W] in channels_last with
        --channels-last (event frames [B, T, C, H, W] stay as they are: the first conv's NHWC
        weights make its output NHWC)."""
        x = x.to(self.device, non_blocking=non_blocking)
        if self.cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """``torch.autocast`` context of the run (a no-op without ``--amp``)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def log(self, msg: str) -> None:
        """Print on rank 0 and append to ``train.log``."""
        if not self.info.is_main:
            return
        print(msg, flush=True)
        if self._log_file is None:
            os.makedirs(self.out_dir, exist_ok=True)
            self._log_file = open(self._path("train.log"), "a")
        self._log_file.write(msg + "\n")
        self._log_file.flush()

    def _path(self, name: str) -> str:
        return os.path.join(self.out_dir, name)

    def _prepare_out_dir(self) -> None:
        cfg = self.cfg
        if cfg.resume or cfg.eval_only:
            return
        if os.path.exists(self._path("checkpoint_last.pt")) or os.path.exists(self._path("metrics.jsonl")):
            if not cfg.overwrite:
                raise RunSetupError(
                    f"{self.out_dir} already holds a run: pass --resume {self._path('checkpoint_last.pt')} to "
                    f"continue it, --overwrite to replace it, or another --out-dir")
            D.barrier(self.info)
            if self.info.is_main:
                old = [self._path(n) for n in RUN_FILES] + glob.glob(self._path("trace_rank*.jsonl"))
                for path in old:
                    if os.path.exists(path):
                        os.unlink(path)

    def _write_json(self, name: str, obj: Dict[str, Any]) -> None:
        data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        atomic_write_bytes(self._path(name), lambda f: f.write(data))

    def _tensorboard(self):
        if self._tb is None and self.info.is_main and self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tb = False
            else:
                self._tb = SummaryWriter(os.path.join(self.out_dir, "tb"))
        return self._tb or None

    def _trace(self, rec: Dict[str, Any]) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        with open(self._path(f"trace_rank{self.info.rank}.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")

    # ------------------------------------------------------------------------- checkpoints
    def _resume(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        self.net.load_state_dict(ckpt["model"])
        if self.cfg.eval_only:
            self.epoch = int(ckpt.get("epoch", 0))
            return
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.last_saved = self.epoch
        self.global_step = int(ckpt["global_step"])
        self.best_acc = float(ckpt.get("best_acc", -1.0))
        self.best_epoch = ckpt.get("best_epoch")
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
            if rngs[self.info.rank].get("loader") is not None and self.train_loader.generator is not None:
                self.train_loader.generator.set_state(rngs[self.info.rank]["loader"])
        else:
            self.log(f"warning: the checkpoint was written by {len(rngs)} process(es), this run has "
                     f"{self.info.world_size}: RNG states re-seeded, data order differs from an uninterrupted run")
            _seed_everything(self.cfg.seed + 1_000_003 * self.info.rank + 7919 * self.epoch)
        if self.info.is_main and os.path.exists(self._path("metrics.jsonl")):
            kept = []
            with open(self._path("metrics.jsonl")) as f:
                for line in f:
                    if line.strip() and json.loads(line).get("epoch", 0) <= self.epoch:
                        kept.append(line if line.endswith("\n") else line + "\n")
            data = "".join(kept).encode()
            atomic_write_bytes(self._path("metrics.jsonl"), lambda f: f.write(data))
            self.history = [json.loads(line) for line in kept]
        self.log(f"resumed from {path}: {self.epoch} epoch(s) done, step {self.global_step}")

    def checkpoint_state(self) -> Dict[str, Any]:
        """The checkpoint dict (collective in DDP: every rank must call it)."""
        rng = rng_state()
        gen = self.train_loader.generator
        rng["loader"] = None if gen is None else gen.get_state()
        rngs = D.all_gather_objects(rng, self.info)
        return {"format": FORMAT, "epoch": self.epoch, "global_step": self.global_step,
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "best_acc": self.best_acc, "best_epoch": self.best_epoch, "config": self.cfg.to_dict(),
                "rng": rngs, "world_size": self.info.world_size, "meta": {k: (list(v) if isinstance(v, tuple)
                                                                              else v) for k, v in self.meta.items()},
                "torch_version": str(torch.__version__)}

    # ------------------------------------------------------------------------------- train
    def train_epoch(self) -> Dict[str, Any]:
        """One epoch over the train loader; returns the epoch's train metrics (global over ranks)."""
        cfg, info = self.cfg, self.info
        self.model.train()
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(self.epoch)
        n_steps = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            n_steps = min(n_steps, cfg.max_steps_per_epoch)
        bar = None
        if info.is_main and cfg.progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=n_steps, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                           dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                bar = None
        sums: Dict[str, torch.Tensor] = {}
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss*B, B, correct
        start = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i >= n_steps:
                break
            x, xt, y = _split_batch(batch)
            nb = self.device.type == "cuda"
            x, y = self._input(x, nb), y.to(self.device, non_blocking=nb)
            kw = {}
            if xt is not None:
                kw["x_teacher"] = self._input(xt, nb)
            graphed = self._graph_for(x, y, kw.get("x_teacher")) if cfg.cuda_graphs else None
            if graphed is not None:  # forward, backward and SGD replayed as one CUDA graph
                graphed.copy_inputs(x, y, *kw.values())
                loss = graphed()
                parts, logits = self._graph_out["parts"], self._graph_out["logits"]
            else:
                with self.autocast():
                    loss, parts, logits = self.method.step(self.model, x, y, epoch=self.epoch,
                                                           epochs=cfg.epochs, **kw)
            if cfg.debug_nan_at_step == self.global_step + 1 and info.is_main:
                loss = loss * float("nan")
            B = y.shape[0]
            step_stats = torch.stack([loss.detach().double() * B, torch.tensor(float(B), dtype=torch.float64,
                                                                                device=self.device),
                                      (logits.argmax(-1) == y).sum().double()])
            D.all_reduce_sum(step_stats, info)
            if not torch.isfinite(step_stats[0]).item():
                if bar is not None:
                    bar.close()
                raise NonFiniteLossError(self.global_step + 1, self.epoch + 1, i + 1,
                                         float(step_stats[0].item()), self.last_saved)
            if cfg.debug_trace:
                self._trace({"rank": info.rank, "epoch": self.epoch + 1, "step": self.global_step + 1,
                             "labels": y.tolist(), "x_sum": float(x.double().sum()), "loss": float(loss.detach())})
            if graphed is None:
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.global_step += 1
            totals += step_stats
            for k, v in parts.items():
                if k != "loss":
                    sums[k] = sums.get(k, 0.0) + v.detach().double() * B
            if bar is not None:
                elapsed = time.perf_counter() - start
                # postfix first: whichever update tqdm chooses to draw shows this step's numbers
                bar.set_postfix(loss=f"{totals[0].item() / totals[1].item():.4f}",
                                img_s=f"{totals[1].item() / max(elapsed, 1e-9):.0f}", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        names = sorted(sums)
        if names:
            part_t = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in names])
            D.all_reduce_sum(part_t, info)
        n = max(totals[1].item(), 1.0)
        out = {"train_loss": totals[0].item() / n, "train_acc": totals[2].item() / n}
        for j, k in enumerate(names):
            out[f"train_{k}"] = part_t[j].item() / n
        out.update(images=int(totals[1].item()), images_per_s=totals[1].item() / max(seconds, 1e-9),
                   train_seconds=seconds)
        return out

    def _graph_for(self, x, y, xt) -> Optional[GraphedStep]:
        """The CUDA-graph step of this run, made at the first batch; None for a batch of another
        shape (the last, short one), which runs eagerly."""
        batch = [x, y] + ([xt] if xt is not None else [])
        if self._graph is None:
            statics = [t.clone() for t in batch]
            out = self._graph_out

            def step_fn():
                kw = {"x_teacher": statics[2]} if len(statics) == 3 else {}
                with self.autocast():
                    loss, parts, logits = self.method.step(self.model, statics[0], statics[1],
                                                           epoch=self.epoch, epochs=self.cfg.epochs, **kw)
                out.update(parts=parts, logits=logits)
                return loss

            clip = self.cfg.grad_clip
            self._graph = GraphedStep(
                step_fn, self.optimizer, statics, restore=self.net,
                key=lambda: self.epoch,  # a method may weigh its losses by the epoch
                before_step=(lambda: torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip)) if clip else None,
                capture=self.device.type == "cuda")
        if any(s.shape != t.shape for s, t in zip(self._graph.static_inputs, batch)):
            return None
        return self._graph

    # -------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self, Ts: Optional[List[int]] = None) -> Dict[int, float]:
        """Top-1 test accuracy at each T of ``Ts`` (default ``cfg.T_eval``), exact over the whole test
        set also under DDP (the padding of the distributed sampler is masked out)."""
        from ..models.base import reset_states

        Ts = list(Ts or self.cfg.T_eval)
        net, info = self.net, self.info
        if info.distributed:  # BN running statistics of rank 0 everywhere (what the checkpoint holds)
            for b in net.buffers():
                torch.distributed.broadcast(b, 0)
        was_training = net.training
        net.eval()
        n_total = len(self.test_loader.dataset)
        counts = torch.zeros(1 + len(Ts), dtype=torch.float64, device=self.device)
        pos = 0
        for batch in self.test_loader:
            x, _, y = _split_batch(batch)
            x, y = self._input(x), y.to(self.device)
            B = y.shape[0]
            valid = torch.ones(B, dtype=torch.bool, device=self.device)
            if info.distributed:
                idx = torch.arange(pos, pos + B, device=self.device)
                valid = (info.rank + idx * info.world_size) < n_total
            pos += B
            counts[0] += valid.sum()
            with self.autocast():
                for j, T in enumerate(Ts):
                    if self.is_ann:
                        logits = net(ann_input(x, T))
                    else:
                        logits = net(_to_sequence(x, T)).mean(0)
                        reset_states(net)
                    counts[1 + j] += ((logits.argmax(-1) == y) & valid).sum()
        D.all_reduce_sum(counts, info)
        net.train(was_training)
        n = max(counts[0].item(), 1.0)
        return {T: counts[1 + j].item() / n for j, T in enumerate(Ts)}

    # --------------------------------------------------------------------------------- run
    def fit(self) -> Dict[str, Any]:
        """Train from ``self.epoch`` to ``cfg.epochs``; returns the summary dict."""
        cfg, info = self.cfg, self.info
        if info.is_main:
            self._write_json("config.json", {"config": cfg.to_dict(), "world_size": info.world_size,
                                             "device": str(self.device), "torch": str(torch.__version__),
                                             "dataset": {k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in self.meta.items()},
                                             "parameters": sum(p.numel() for p in self.net.parameters()),
                                             "amp_dtype": str(self.amp_dtype).replace("torch.", "")
                                             if self.amp_dtype else None})
        nparams = sum(p.numel() for p in self.net.parameters())
        self.log(f"run {self.out_dir}: {cfg.dataset} {cfg.arch} (width {cfg.width}, {nparams / 1e6:.3f} M params) "
                 f"method {cfg.method} T={cfg.T}" + (f" T'={cfg.T_teacher}" if cfg.T_teacher else "")
                 + f", {cfg.epochs} epochs, {cfg.optimizer} {schedule_text(cfg)}"
                 + f", {info.world_size} process(es) on {self.device}"
                 + (f", amp {str(self.amp_dtype).replace('torch.', '')}" if self.amp_dtype else ""))
        t_run = time.perf_counter()
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            tr = self.train_epoch()
            with warnings.catch_warnings():
                # fp16: GradScaler skips the steps whose gradients overflow; torch then warns
                # that the scheduler stepped "before optimizer.step()"; expected, so silenced
                if self.scaler.is_enabled():
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                self.scheduler.step()
            self.epoch += 1
            t1 = time.perf_counter()
            accs = self.evaluate()
            test_acc = accs[cfg.T_eval[0]]
            improved = test_acc > self.best_acc
            if improved:
                self.best_acc, self.best_epoch = test_acc, self.epoch
            rec = {"epoch": self.epoch, "global_step": self.global_step, **tr, "test_acc": test_acc,
                   "test_T": cfg.T_eval[0], "lr": lr, "best_test_acc": self.best_acc, "best_epoch": self.best_epoch,
                   "eval_seconds": time.perf_counter() - t1}
            for T, a in accs.items():
                rec[f"test_acc_T{T}"] = a
            state = self.checkpoint_state()  # collective
            rec["seconds"] = time.perf_counter() - t0
            rec["time"] = time.time()
            if info.is_main:
                with open(self._path("metrics.jsonl"), "a") as f:
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                save_checkpoint(state, self._path("checkpoint_last.pt"))
                if improved:
                    save_checkpoint(state, self._path("checkpoint_best.pt"))
                tb = self._tensorboard()
                if tb is not None:
                    for k, v in rec.items():
                        if isinstance(v, (int, float)) and k not in ("epoch", "time"):
                            tb.add_scalar(k, v, self.epoch)
                    tb.flush()
            self.last_saved = self.epoch
            self.history.append(rec)
            parts = " ".join(f"{k[6:]} {rec[k]:.4f}" for k in rec if k.startswith("train_") and k not in
                             ("train_loss", "train_acc", "train_seconds"))
            extra = " ".join(f"T={T}: {a:.4f}" for T, a in accs.items() if T != cfg.T_eval[0])
            self.log(f"epoch {self.epoch}/{cfg.epochs}  loss {tr['train_loss']:.4f} ({parts})  train_acc "
                     f"{tr['train_acc']:.4f}  test_acc {test_acc:.4f}" + (f" ({extra})" if extra else "")
                     + f"  lr {lr:.3g}  {tr['images_per_s']:.0f} img/s  {rec['seconds']:.1f} s")
            D.barrier(info)
        summary = self._summary(time.perf_counter() - t_run)
        return summary

    def _summary(self, seconds: float) -> Dict[str, Any]:
        last = self.history[-1] if self.history else {}
        s = {"out_dir": self.out_dir, "dataset": self.cfg.dataset, "arch": self.cfg.arch, "method": self.cfg.method,
             "T": self.cfg.T, "T_teacher": self.cfg.T_teacher, "epochs": self.epoch, "global_step": self.global_step,
             "best_test_acc": self.best_acc if self.best_epoch is not None else None, "best_epoch": self.best_epoch,
             "last_test_acc": last.get("test_acc"), "seconds": seconds, "world_size": self.info.world_size}
        for k, v in last.items():
            if k.startswith("test_acc_T"):
                s["last_" + k] = v
        if self.info.is_main:
            self._write_json("summary.json", s)
        best = "n/a" if s["best_test_acc"] is None else f"{s['best_test_acc']:.4f} (epoch {s['best_epoch']})"
        lastacc = "n/a" if s["last_test_acc"] is None else f"{s['last_test_acc']:.4f}"
        self.log(f"summary: {self.cfg.dataset} {self.cfg.arch} {self.cfg.method} T={self.cfg.T} | {self.epoch} epochs, "
                 f"{self.global_step} steps | best test_acc {best} | last {lastacc} | {seconds:.1f} s | {self.out_dir}")
        return s

    def eval_only(self) -> Dict[str, Any]:
        """Evaluate the (resumed) weights at every ``T_eval``; writes ``eval.json``."""
        t0 = time.perf_counter()
        accs = self.evaluate()
        res = {"checkpoint": self.cfg.resume, "epoch": self.epoch,
               "test_acc": accs[self.cfg.T_eval[0]], "test_T": self.cfg.T_eval[0],
               **{f"test_acc_T{T}": a for T, a in accs.items()}}
        thr = self.cfg.early_exit_threshold
        if thr is not None:
            if getattr(self.net, "weak", None) is None:
                self.log("early exit needs a weak classifier (methods ssd/tssd): skipped")
            elif self.info.distributed:
                self.log("early exit evaluation runs in a single process only: skipped")
            else:
                from ..inference import early_exit_evaluate
                ee = early_exit_evaluate(self.net, self.test_loader, self.cfg.T_eval[0], thr)
                res["early_exit"] = {k: v for k, v in ee.items() if k != "macs"}
                res["early_exit"]["threshold"] = thr
        res["seconds"] = time.perf_counter() - t0
        if self.info.is_main:
            self._write_json("eval.json", res)
        accs_s = " ".join(f"T={T}: {a:.4f}" for T, a in accs.items())
        self.log(f"eval: {self.cfg.dataset} {self.cfg.arch} {self.cfg.method} | test_acc {accs_s}"
                 + (f" | early exit @ {thr}: acc {res['early_exit']['accuracy']:.4f}, exit fraction "
                    f"{res['early_exit']['exit_fraction']:.3f}, saved compute {res['early_exit']['saved_compute']:.3f}"
                    if "early_exit" in res else "")
                 + (f" | {self.cfg.resume}" if self.cfg.resume else " | untrained weights"))
        return res

    def close(self) -> None:
        """Close the log file and the TensorBoard writer."""
        if self._tb:
            self._tb.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def check_backend(cfg: TrainConfig, device: torch.device) -> None:
    """RunSetupError unless the LIF backend of ``cfg`` (or the TSSD_FAST_BACKEND override of
    'auto') runs on ``device``; the ANN twin has no LIF neuron and takes any."""
    if cfg.method == "ann":
        return
    from ..ops.registry import resolve_backend
    try:
        resolve_backend(cfg.backend, device, torch.float32)
    except (RuntimeError, ValueError, TypeError) as e:
        raise RunSetupError(f"--backend {cfg.backend}: {e}") from e


def _check_cuda_graphs(cfg: TrainConfig, info: D.DistInfo) -> None:
    """RunSetupError for --cuda-graphs off one CUDA process (the tests replace this function to
    run the same step logic eagerly on CPU)."""
    if not cfg.cuda_graphs or cfg.eval_only:
        return
    if info.device.type != "cuda" or info.distributed:
        raise RunSetupError("--cuda-graphs needs one CUDA process (got "
                            f"{'a process group' if info.distributed else info.device}): drop the flag")
    fp16 = cfg.amp and (cfg.amp_dtype == "fp16" or (cfg.amp_dtype == "auto"
                                                    and not torch.cuda.is_bf16_supported()))
    if fp16:
        raise RunSetupError("--cuda-graphs cannot capture fp16's GradScaler (it checks for inf on the "
                            "host): use --amp-dtype bf16, or fp32")


def schedule_text(cfg: TrainConfig) -> str:
    """The learning-rate schedule in words, for the run's first log line."""
    if cfg.scheduler == "step":
        every = "every epoch" if cfg.lr_step == 1 else f"every {cfg.lr_step} epochs"
        return f"lr {cfg.lr:g} x{cfg.lr_gamma:g} {every}"
    if cfg.scheduler == "cosine":
        return f"lr {cfg.lr:g} cosine over {cfg.schedule_epochs or cfg.epochs} epochs"
    return f"lr {cfg.lr:g} constant"


def run(cfg: TrainConfig) -> Dict[str, Any]:
    """Train (or with ``cfg.eval_only`` evaluate) as configured; returns the summary dict.

    Under torchrun it joins the process group first and leaves it at the end. Raises
    :class:`NonFiniteLossError` when a loss is NaN/inf (nothing is saved past the last epoch).
    """
    try:
        info = D.setup(cfg.device, cfg.dist_backend)
    except RuntimeError as e:  # no CUDA, a device string torch does not know, no process group
        raise RunSetupError(f"--device {cfg.device}: {e}") from e
    trainer = None
    try:
        check_backend(cfg, info.device)  # before any file is written or data is read
        _check_cuda_graphs(cfg, info)
        trainer = Trainer(cfg, info)
        return trainer.eval_only() if cfg.eval_only else trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
        D.cleanup(info)
