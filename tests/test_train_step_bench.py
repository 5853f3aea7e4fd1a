"""benchmarks/train_step.py: the CLI on a tiny size (every neuron of the CPU checked against the
reference and timed; JSON and CSV written), the stand-in neuron, interleaved timing."""
import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tssd_fast

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _train_step_neurons as N  # noqa: E402
import harness  # noqa: E402
import train_step as ts  # noqa: E402

TINY = ["--quick", "--device", "cpu", "--threads", "1", "--width", "0.0625", "--batch", "2",
        "--min-reps", "2", "--min-time", "0"]


def _sj_importable() -> bool:
    try:
        importlib.import_module("spikingjelly.activation_based.neuron")
        return True
    except Exception:  # noqa: BLE001
        return False


def _run(tmp_path, *extra):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    proc = subprocess.run([sys.executable, str(BENCH / "train_step.py"), *TINY, "--json",
                           str(out_json), "--csv", str(out_csv), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out_json.read_text()), out_csv


def test_cli_tiny_run(tmp_path):
    out, data, out_csv = _run(tmp_path, "--strict")
    assert "img/s" in out and "neuron %" in out and "wall time" in out and "target" in out
    assert data["environment"]["device"] == "cpu" and data["environment"]["torch_threads"] == 1
    rows = data["rows"]
    expected = {N.REFERENCE, N.STANDIN, *tssd_fast.available_backends("cpu")}
    if _sj_importable():
        expected.add("sj-torch")
    for method in ts.METHODS:
        mine = {r["provider"]: r for r in rows if r["method"] == method}
        assert set(mine) == expected, (method, sorted(mine))
        for r in mine.values():
            assert r["status"] == "ok", r
            assert r["arch"] == "vgg9" and r["batch"] == 2 and r["width"] == 0.0625
            assert r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
            assert r["img_per_s"] == pytest.approx(2e3 / r["median_ms"])
            assert r["saved_bytes"] > 0 and r["peak_bytes"] is None  # no CUDA peak on CPU
            if r["kind"] != "standin":  # same weights and batch: the same first-step loss
                assert r["loss0"] == pytest.approx(r["loss0_ref"], rel=1e-3)
                assert r["neuron_share"] == pytest.approx(1 - r["standin_ms"] / r["median_ms"])
        ref = mine[N.REFERENCE]
        assert ref["speedup"] == pytest.approx(1.0)
        assert mine[N.STANDIN]["speedup"] == pytest.approx(ref["median_ms"]
                                                            / mine[N.STANDIN]["median_ms"])
        assert (ref["T_teacher"] is None) == (method == "baseline")
        # the reference saves more for backward than the network without neuron
        assert ref["saved_bytes"] > mine[N.STANDIN]["saved_bytes"]
    with out_csv.open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and set(ts.CSV_FIELDS) <= set(csv_rows[0])
    assert csv_rows[0]["commit"] and csv_rows[0]["neuron"].startswith("paper")
    # memory modes: one network in plain / default / min, bitwise the same step, less kept
    assert "memory modes" in out and "the batch (or T)" in out
    mem = {r["memory"]: r for r in data["memory_rows"]}
    assert set(mem) == {"plain", "default", "min"} and all(r["status"] == "ok" for r in mem.values())
    assert mem["default"]["same_as_plain"] and mem["min"]["same_as_plain"]
    assert mem["min"]["saved_bytes"] < mem["default"]["saved_bytes"] < 0.6 * mem["plain"]["saved_bytes"]
    assert mem["plain"]["time_vs_plain"] == pytest.approx(1.0) and mem["default"]["time_vs_plain"] > 0
    with out_csv.with_name(out_csv.stem + "_memory.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3


def test_cli_tiny_amp_channels_last(tmp_path):
    # the GPU variants' code paths (autocast bf16, channels_last), on CPU
    out, data, _ = _run(tmp_path, "--precision", "bf16", "--layout", "cl", "--methods",
                        "tssd-shared", "--providers", "tssd", "--no-standin")
    rows = data["rows"]
    assert {r["provider"] for r in rows} == set(tssd_fast.available_backends("cpu"))
    assert all(r["precision"] == "bf16" and r["layout"] == "cl" for r in rows)
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in rows), rows
    assert all(r["neuron_share"] is None for r in rows)
    assert "prec" in out and "layout" in out


def test_standin_is_a_heaviside_with_straight_through_gradient():
    m = N.NeuronStandIn(v_threshold=1.0)
    x = torch.tensor([[0.5, 1.0, 2.0], [-1.0, 0.99, 1.5]], requires_grad=True)
    s = m(x)
    assert torch.equal(s, torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))
    g = torch.arange(6.0).reshape(2, 3)
    s.backward(g)
    assert torch.equal(x.grad, g)
    cl = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    assert m(cl).is_contiguous(memory_format=torch.channels_last)


def test_interleaved_timing_keeps_going_when_one_fails():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1
        if calls["b"] > 2:
            raise RuntimeError("boom")

    opts = harness.TimerOptions(min_reps=4, max_reps=4, min_time_s=0.0, warmup_reps=1,
                                warmup_s=0.0)
    res = harness.measure_interleaved({"a": a, "b": b}, "cpu", opts)
    assert isinstance(res["a"], harness.Timing) and res["a"].reps == 4
    assert res["a"].warmup == 1 and calls["a"] == 5
    assert isinstance(res["b"], RuntimeError)


def test_vs_fp32_and_list(capsys, tmp_path):
    base = dict(arch="vgg9", input="cifar", method="tssd", kind="tssd", status="ok")
    rows = [dict(base, provider="torch", precision="fp32", layout="nchw", median_ms=10.0),
            dict(base, provider="cuda", precision="bf16", layout="cl", median_ms=4.0),
            dict(base, provider="cuda", precision="bf16", layout="nchw", median_ms=None)]
    ts.add_vs_fp32(rows)
    assert rows[0]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert rows[1]["speedup_vs_fp32"] == pytest.approx(2.5)
    assert rows[2].get("speedup_vs_fp32") is None
    assert ts.main(["--list", "--device", "cpu"]) == 0
    listing = capsys.readouterr().out
    assert "torch" in listing and "stand-in" in listing and "cpp" in listing
    rows = [dict(base, provider="torch", precision="fp32", layout="nchw", median_ms=10.0,
                 img_per_s=100.0)]
    msg = ts.write_plot(tmp_path / "p.png", rows)  # a PNG, or a message without matplotlib
    assert (msg is None and (tmp_path / "p.png").stat().st_size > 0) or "matplotlib" in msg


def _tiny_memory_group(monkeypatch, perturb):
    """run_memory_group on a tiny VGG-9 on CPU, with ``perturb(model)`` applied to the 'min'
    model right after it is built (a stand-in for a mode that does not match plain)."""
    build = ts.build_model

    def build_and_perturb(*args, memory="default", **kw):
        model = build(*args, memory=memory, **kw)
        if memory == "min":
            with torch.no_grad():
                perturb(model)
        return model

    monkeypatch.setattr(ts, "build_model", build_and_perturb)
    g = ts.Group("vgg9", ts.INPUTS["cifar"], "fp32", "nchw", "tssd", 2, 0.0625)
    cfg = N.P.neuron_config("paper")
    mem_p = ts.memory_provider(N.all_providers(cfg, torch.device("cpu")))
    timer = harness.TimerOptions(min_reps=1, max_reps=1, min_time_s=0.0, warmup_reps=0, warmup_s=0.0)
    rows = {r["memory"]: r for r in ts.run_memory_group(g, mem_p, ["plain", "default", "min"],
                                                        torch.device("cpu"), timer, seed=0)}
    return rows, ts.render_memory(list(rows.values()), cuda=False)


def test_memory_mode_difference_is_reported_in_detail(monkeypatch):
    """A mode that does not match plain says what differs: loss, how many state_dict tensors
    and gradients, the largest difference and where, and whether plain reproduces itself."""
    bn_var = "stages.2.0.1.running_var"  # stage 3's first ConvBN: its BN's running variance

    def nudge_running_var(model):  # train mode: the loss and gradients do not read it
        model.state_dict()[bn_var][0] *= 1.5

    rows, table = _tiny_memory_group(monkeypatch, nudge_running_var)
    assert rows["default"]["status"] == "ok" and rows["default"]["same_as_plain"]
    assert "plain_diff" not in rows["default"]
    r = rows["min"]
    assert r["same_as_plain"] is False and r["median_ms"] is not None  # still timed and measured
    d = r["plain_diff"]
    assert d["loss_equal"] and not d["grads"]["differ"]
    n_state = len(ts.build_model("vgg9", width=0.0625, input_size=32).state_dict())
    assert d["state"]["n"] == n_state and [t["name"] for t in d["state"]["differ"]] == [bn_var]
    (t,) = d["state"]["differ"]
    # running_var 1 -> 1.5 before the step; the student and the teacher run each update it
    # (momentum 0.1), so the 0.5 is 0.9 * 0.9 * 0.5 after the step
    assert t["n_diff"] == 1 and t["max_abs"] == pytest.approx(0.405, rel=1e-6) and 0.2 < t["max_rel"] < 0.34
    assert d["plain_rerun"]["same"]
    assert r["status"].startswith(f"differs from plain: loss equal; tensors 1/{n_state} differ "
                                  f"({bn_var}), max |d| 0.4")
    assert f"max rel 0.33 at {bn_var}; grads 0/" in r["status"]
    assert r["status"].endswith("differ; plain rerun: identical")
    # the table cuts the status; the full one follows the table
    cut = next(line for line in table.splitlines() if line.startswith("vgg9") and " min " in line)
    assert cut.endswith("...") and len(cut.split("  ")[-1]) == ts.STATUS_WIDTH
    assert f"memory=min: {r['status']}" in table


def test_compare_steps_names_the_tensors_and_the_loss():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3)
    a(x).sum().backward()
    b(x).sum().backward()
    same = ts.compare_steps(a, b, 1.0, 1.0)
    assert same["same"] and same["state"]["n"] == 2 and same["grads"]["n"] == 2
    with torch.no_grad():
        b.weight[1, 2] += 0.5
    b.bias.grad = None
    d = ts.compare_steps(a, b, 1.0, 1.25)
    assert not d["same"] and not d["loss_equal"]
    assert [t["name"] for t in d["state"]["differ"]] == ["weight"]
    assert d["state"]["differ"][0]["max_abs"] == pytest.approx(0.5)
    assert d["grads"]["differ"] == [{"name": "bias", "note": "missing on one side"}]
    text = ts.describe_diff(d)
    assert text.startswith("differs from plain: loss 1 vs 1.25 (|d| 0.25); tensors 1/2 differ "
                           "(weight), max |d| 0.5, max rel ")
    assert text.endswith("; grads 1/2 differ (bias [missing on one side])")


def test_memory_diff_script_on_cpu(monkeypatch, capsys, tmp_path):
    """benchmarks/memory_diff.py (the GPU diagnosis of a 'min' difference) runs on CPU: min
    matches plain, every recompute gives the forward's conv output; and a recompute that does
    not (here: a restored input off by 2^-20) is caught and located."""
    import memory_diff as md
    from tssd_fast.models import spike_layers as SL

    tiny = ["--device", "cpu", "--batch", "2", "--width", "0.0625", "--modes", "min", "--json",
            str(tmp_path / "d.json")]
    assert md.main(tiny) == 0
    out = capsys.readouterr().out
    assert "plain rerun: same as plain" in out and "min: same as plain" in out
    assert "conv output recomputed bitwise in 9/9 ConvBN calls; recompute on the forward's thread" in out
    assert SL._compiled_ops("cpu") and SL._ConvBNFn.__name__ == "_ConvBNFn"  # restored after the probe
    restore = SL._restore_input
    monkeypatch.setattr(SL, "_restore_input", lambda ctx, kept: restore(ctx, kept) * (1 + 2 ** -20))
    assert md.main(tiny) == 1
    out = capsys.readouterr().out
    assert "min: differs from plain: loss equal; tensors " in out and "plain rerun: same as plain" in out
    assert "conv output recomputed bitwise in 0/9 ConvBN calls (differ: stages.1.0 " in out
    (r,) = json.loads((tmp_path / "d.json").read_text())
    assert r["setting"] == "bench" and not r["min"]["same"] and r["min"]["diff"]["grads"]["differ"]
    assert len(r["min"]["probe"]) == 9 and not any(c["conv_equal"] for c in r["min"]["probe"])


def test_memory_check_step_runs_with_reproducible_cudnn(monkeypatch):
    """The bitwise memory-mode check runs its step with cuDNN deterministic and unbenchmarked
    (plain is not reproducible otherwise on a GPU), then gives the caller's settings back."""
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    with ts.reproducible_cudnn():
        assert (cudnn.benchmark, cudnn.deterministic) == (False, True)
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)
    with pytest.raises(ValueError), ts.reproducible_cudnn():
        raise ValueError("inside")
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)


def test_cudnn_benchmark_flag():
    """--cudnn-benchmark on (the default) / off sets cudnn.benchmark for the timed CUDA steps."""
    assert ts.parse_args(TINY).cudnn_benchmark == "on"
    assert ts.parse_args(TINY + ["--cudnn-benchmark", "off"]).cudnn_benchmark == "off"
    with pytest.raises(SystemExit):
        ts.parse_args(TINY + ["--cudnn-benchmark", "auto"])
