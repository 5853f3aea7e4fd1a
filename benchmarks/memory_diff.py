#!/usr/bin/env python
"""Why does memory='min' differ from 'plain'? One training step per mode, under cuDNN settings.

    python benchmarks/memory_diff.py                      # CPU: one setting (cuDNN flags do not apply)
    python benchmarks/memory_diff.py --device cuda        # GPU: five settings, each in a fresh process
    python benchmarks/memory_diff.py --device cuda --precision fp32,bf16 --json diff.json

The step is train_step.py's memory-mode step (its Point: same model, batch, seed, method and
optimizer; VGG-9 TSSD, CIFAR-sized batch, train_step's --quick sizes). Per setting and
precision: plain, a second plain (run-to-run control), then each mode, compared bit for bit
with the first plain by train_step.compare_steps (loss, state_dict after the optimizer step,
gradients), and for 'min' a probe of every ConvBN recompute:

* conv: the conv output recomputed in backward vs the forward's (bitwise), and whether the
  recompute ran on the forward's thread (on CUDA, backward runs on autograd's device thread;
  cuDNN's v8 execution-plan cache is per thread, so with cudnn.benchmark the recompute is
  autotuned anew there and may get another engine than the forward).

The probed step runs the Python formula (spike_layers._ConvBNFn, which makes the ATen calls
the compiled conv_bn_recompute op makes), where the convolutions can be watched. BatchNorm's
statistics are the forward's (kept since 2026-12-07), so only the conv output can differ.

Settings (cudnn.benchmark / cudnn.deterministic / cudnn.allow_tf32): bench = 1/0/1 (what
train_step.py runs), no-benchmark = 0/0/1, deterministic = 1/1/1, no-tf32 = 1/0/0,
strict = 0/1/0. On CUDA each runs in a fresh process: cuDNN's plan cache is keyed without
cudnn.benchmark, so a plan autotuned under one setting would be reused under the next.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _providers as P  # noqa: E402
import _train_step_neurons as N  # noqa: E402
import harness  # noqa: E402
import train_step as ts  # noqa: E402

import torch  # noqa: E402

from tssd_fast.models import ConvBN  # noqa: E402
from tssd_fast.models import spike_layers as SL  # noqa: E402

SETTINGS = {"bench": (True, False, True), "no-benchmark": (False, False, True),
            "deterministic": (True, True, True), "no-tf32": (True, False, False),
            "strict": (False, True, False)}


class Probe:
    """Records, for every ConvBN recompute of memory='min', what is listed in the module doc."""

    def __init__(self, model):
        self.names = {id(m[0].weight): n for n, m in model.named_modules() if isinstance(m, ConvBN)}
        self.calls = []

    @contextlib.contextmanager
    def active(self, device_type: str):
        probe, base, conv2d = self, SL._ConvBNFn, SL._conv2d

        def conv_outputs(fn):  # run fn, collecting the convolutions _ConvBNFn runs
            outs = []
            SL._conv2d = lambda *a: outs.append(conv2d(*a)) or outs[-1]
            try:
                return fn(), outs
            finally:
                SL._conv2d = conv2d

        class Probed(base):
            @staticmethod
            def forward(ctx, x, weight, *rest):
                z, (y,) = conv_outputs(lambda: base.forward(ctx, x, weight, *rest))
                ctx.probe = (y, threading.get_ident(), probe.names.get(id(weight), "?"))
                return z

            @staticmethod
            def backward(ctx, grad):
                y_fwd, fwd_thread, name = ctx.probe
                out, (y_rec,) = conv_outputs(lambda: base.backward(ctx, grad))
                rec = {"name": name, "conv_equal": torch.equal(y_rec, y_fwd),
                       "same_thread": threading.get_ident() == fwd_thread}
                if not rec["conv_equal"]:
                    rec.update({k: v for k, v in ts._tensor_diff("", y_rec, y_fwd).items()
                                if k in ("n_diff", "numel", "max_abs", "max_rel")})
                probe.calls.append(rec)
                return out

        compiled = SL._OPS.get(device_type)
        SL._ConvBNFn, SL._OPS[device_type] = Probed, False  # the Python formula, watchable
        try:
            yield self
        finally:
            SL._ConvBNFn = base
            if compiled is None:
                SL._OPS.pop(device_type, None)
            else:
                SL._OPS[device_type] = compiled

    def summary(self) -> str:
        c = self.calls
        if not c:
            return "no ConvBN recompute ran"
        order = {n: i for i, n in enumerate(self.names.values())}  # forward order (backward ran reversed)
        bad = sorted((r for r in c if not r["conv_equal"]), key=lambda r: order.get(r["name"], -1))
        return (f"conv output recomputed bitwise in {len(c) - len(bad)}/{len(c)} ConvBN calls"
                + (" (differ: " + ", ".join(f"{r['name']} {r['n_diff']}/{r['numel']} max rel "
                                           f"{r['max_rel']:.2g}" for r in bad[:4])
                   + (f", +{len(bad) - 4}" if len(bad) > 4 else "") + ")" if bad else "")
                + "; recompute on " + ("the forward's thread" if all(r["same_thread"] for r in c)
                                      else "another thread than the forward"))


def run_setting(args, device, setting: str, precision: str) -> dict:
    """plain, plain again, then each mode: one step each, compared with the first plain."""
    g = ts.Group(args.arch, ts.INPUTS["cifar"], precision, "nchw", args.method, args.batch, args.width)
    p = ts.memory_provider(N.all_providers(P.neuron_config("paper"), device))
    x, y = ts.make_batch(g, device, args.seed)
    out = {"setting": setting, "precision": precision, "flags": dict(zip(
        ("benchmark", "deterministic", "allow_tf32"), SETTINGS[setting])), "provider": p.name}
    with harness.cudnn_settings(*SETTINGS[setting]):
        ref = ts.Point(g, p, x, y, device, args.seed, memory="plain")
        loss_ref = ref.step().item()
        for mode in ["plain", *args.modes]:
            pt = ts.Point(g, p, x, y, device, args.seed, memory=mode)
            probe = Probe(pt.model)
            with probe.active(device.type) if mode == "min" else contextlib.nullcontext():
                loss = pt.step().item()
            diff = ts.compare_steps(pt.model, ref.model, loss, loss_ref)
            key = "plain_rerun" if mode == "plain" else mode
            out[key] = {"same": diff["same"], "status": "same as plain" if diff["same"]
                        else ts.describe_diff(diff), "diff": diff}
            if mode == "min":
                out[key]["probe"], out[key]["probe_summary"] = probe.calls, probe.summary()
            del pt
            harness.free_memory(device)
    return out


def report(r: dict) -> str:
    flags = ", ".join(f"{k} {int(v)}" for k, v in r["flags"].items())
    lines = [f"{r['precision']} {r['setting']} (cudnn {flags}; {r['provider']} neuron):"]
    for key in [k for k in r if isinstance(r[k], dict) and "same" in r[k]]:
        lines.append(f"  {key.replace('_', ' ')}: {r[key]['status']}")
        if "probe_summary" in r[key]:
            lines.append(f"  {key} recompute: {r[key]['probe_summary']}")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--settings", type=harness.list_arg(choices=list(SETTINGS)),
                    help="cuDNN settings (default: all on CUDA, 'bench' on CPU)")
    ap.add_argument("--precision", type=harness.list_arg(choices=list(ts.PRECISIONS)), default=["fp32"])
    ap.add_argument("--modes", type=harness.list_arg(choices=["default", "min"]), default=["default", "min"])
    ap.add_argument("--arch", choices=ts.ARCHS, default="vgg9")
    ap.add_argument("--method", choices=list(ts.METHODS), default="tssd")
    ap.add_argument("--batch", type=int, help="default: 64 on CUDA, 4 on CPU (train_step --quick)")
    ap.add_argument("--width", type=float, help="default: 1 on CUDA, 0.125 on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--process", choices=["fresh", "same"],
                    help="each setting in a fresh process (default on CUDA), or all in this one "
                         "(default on CPU; on CUDA, plans autotuned under one setting are then "
                         "reused by the next)")
    ap.add_argument("--json", help="write every result (with each differing tensor) here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child: "setting,precision,result path"
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = harness.resolve_device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (64 if cuda else 4)
    args.width = args.width or (1.0 if cuda else 0.125)
    if args.one:
        setting, precision, path = args.one.split(",", 2)
        Path(path).write_text(json.dumps(run_setting(args, device, setting, precision)))
        return 0
    settings = args.settings or (list(SETTINGS) if cuda else ["bench"])
    print(f"memory-mode differences, one step: {args.arch} {args.method}, batch {args.batch}, "
          f"width {args.width:g}, torch {torch.__version__}, {device}"
          + ("" if cuda else " (cuDNN flags do not apply on CPU)"), flush=True)
    results = []
    for precision in args.precision:
        for setting in settings:
            if (args.process or ("fresh" if cuda else "same")) == "fresh":
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "r.json"
                    child = argv if argv is not None else sys.argv[1:]
                    proc = subprocess.run([sys.executable, __file__, *child, "--one",
                                           f"{setting},{precision},{path}"],
                                          capture_output=True, text=True, timeout=600)
                    if proc.returncode or not path.exists():
                        print(f"{precision} {setting}: failed (exit {proc.returncode}):\n"
                              + proc.stderr[-2000:], flush=True)
                        continue
                    r = json.loads(path.read_text())
            else:
                r = run_setting(args, device, setting, precision)
            results.append(r)
            print(report(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"results written to {args.json}")
    return 0 if all(r[k]["same"] for r in results for k in r if isinstance(r[k], dict)
                    and "same" in r[k]) else 1


if __name__ == "__main__":
    sys.exit(main())
