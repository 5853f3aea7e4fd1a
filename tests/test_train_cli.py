"""The training CLI (python -m tssd_fast.train) and the plot command, on tiny CPU runs.

A tiny CIFAR-10 written in the real pickle format trains through the CLI in a subprocess; the
rest runs the same ``main`` in-process on the synthetic data (tiny VGG-9, T=2, few steps).
"""
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _fake_datasets as fake  # noqa: E402

import tssd_fast  # noqa: E402
from tssd_fast.train import PRESETS  # noqa: E402
from tssd_fast.train.cli import config_from_args, main  # noqa: E402
from tssd_fast.train.checkpoint import load_checkpoint  # noqa: E402

PKG_ROOT = str(Path(tssd_fast.__file__).resolve().parent.parent)
# tiny synthetic task: 48 train / 48 test images 3x16x16, batch 16 -> 3 steps per epoch
SYN = ["--dataset", "synthetic", "--data-opt", "num_samples=48", "--data-opt", "size=16", "--preset", "cpu-tiny",
       "--batch-size", "16", "--device", "cpu", "--no-progress", "--backend", "torch"]


pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny


def cli(args, cwd, timeout=240, module="tssd_fast.train", env=None):
    """``python -m <module> args`` in a subprocess importing the same tssd_fast as the tests."""
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def metrics(run):
    with open(Path(run) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def no_temp_files(run):
    return not glob.glob(str(Path(run) / ".*.tmp"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished 1-epoch TSSD run on the synthetic data (shared, never modified: copy it)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(SYN + ["--epochs", "1", "--out-dir", out, "--T-eval", "2", "1"]) == 0
    return out


def copy_run(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------------ CLI on real pickles


def test_cifar10_pickles_train_resume_and_log_through_the_cli(tmp_path):
    fake.write_cifar10(tmp_path / "data", n_per_batch=4, n_test=6)  # 20 train / 6 test images
    out = tmp_path / "run"
    args = ["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--preset", "cpu-tiny", "--batch-size", 8,
            "--device", "cpu", "--T-eval", 2, 1]
    # tqdm draws a frame only every 0.1 s: a fast 3-step epoch may never show one with numbers
    r = cli(args + ["--epochs", 1, "--out-dir", out], tmp_path, env={"TQDM_MININTERVAL": "0"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "summary:" in r.stdout and "best test_acc" in r.stdout
    assert "img_s=" in r.stderr and "loss=" in r.stderr  # the tqdm bar with loss and throughput

    (rec,) = metrics(out)
    assert rec["epoch"] == 1 and rec["global_step"] == 3 and rec["images"] == 20
    for key in ("train_loss", "train_ce", "train_tsd", "train_ssd", "train_acc", "test_acc", "test_acc_T1",
                "test_acc_T2", "lr", "images_per_s", "seconds"):
        assert isinstance(rec[key], float), key
    assert rec["train_loss"] == pytest.approx(rec["train_ce"] + rec["train_tsd"] + rec["train_ssd"], rel=1e-5)
    assert rec["lr"] == 0.1 and rec["images_per_s"] > 0 and 0 <= rec["test_acc"] <= 1

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["dataset"] == "cifar10" and cfg["config"]["preset"] == "cpu-tiny"
    assert cfg["config"]["weight_decay"] == 1e-4 and cfg["config"]["T_teacher"] == 4
    assert cfg["dataset"]["num_classes"] == 10 and cfg["dataset"]["input_size"] == [32, 32]
    ck = load_checkpoint(out / "checkpoint_last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "global_step", "rng", "config"} <= set(ck)
    assert ck["epoch"] == 1 and ck["global_step"] == 3 and len(ck["rng"]) == 1
    assert (out / "checkpoint_best.pt").exists() and (out / "summary.json").exists() and no_temp_files(out)

    r = cli(["--resume", out / "checkpoint_last.pt", "--epochs", 2, "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout and "1 epoch(s) done" in r.stdout
    recs = metrics(out)
    assert [m["epoch"] for m in recs] == [1, 2] and recs[1]["global_step"] == 6
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == 2


# ------------------------------------------------------------------------ resume, NaN, eval


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    args = SYN + ["--lr-step", "1", "--T-eval", "2", "1"]  # lr changes after epoch 1: the scheduler state matters
    assert main(args + ["--epochs", "2", "--out-dir", tmp_path / "a"]) == 0
    assert main(args + ["--epochs", "1", "--out-dir", tmp_path / "b"]) == 0
    assert main(["--resume", tmp_path / "b" / "checkpoint_last.pt", "--epochs", "2"]) == 0
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt"), load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for (ka, sa), (kb, sb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    ma, mb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [m["lr"] for m in mb] == pytest.approx([0.1, 0.01])
    for key in ("train_loss", "train_tsd", "train_ssd", "test_acc", "test_acc_T1"):
        assert [m[key] for m in ma] == [m[key] for m in mb], key


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, tiny_run, capsys):
    run = copy_run(tiny_run, tmp_path)
    before = {n: digest(run / n) for n in ("checkpoint_last.pt", "checkpoint_best.pt")}
    # epoch 1 = steps 1-3 (in the checkpoint); step 5 is batch 2 of epoch 2
    rc = main(["--resume", run / "checkpoint_last.pt", "--epochs", "3", "--debug-nan-at-step", "5"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "non-finite loss (nan) at step 5 (epoch 2, batch 2)" in err
    assert "checkpoint_last.pt still holds epoch 1" in err
    assert {n: digest(run / n) for n in before} == before
    assert [m["epoch"] for m in metrics(run)] == [1] and no_temp_files(run)

    fresh = tmp_path / "fresh"  # NaN in the very first step: no checkpoint at all
    assert main(SYN + ["--epochs", "1", "--out-dir", fresh, "--debug-nan-at-step", "1"]) == 3
    assert "at step 1 (epoch 1, batch 1)" in capsys.readouterr().err
    assert not (fresh / "checkpoint_last.pt").exists() and not (fresh / "metrics.jsonl").exists()


def test_eval_only_reports_every_T_and_writes_nothing_else(tmp_path, tiny_run):
    run = copy_run(tiny_run, tmp_path)
    before = digest(run / "checkpoint_last.pt")
    (rec,) = metrics(run)
    assert main(["--resume", run / "checkpoint_last.pt", "--eval-only", "--T-eval", "2", "1", "4",
                 "--early-exit-threshold", "0.5"]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["epoch"] == 1 and ev["test_T"] == 2
    assert ev["test_acc_T2"] == rec["test_acc_T2"] and ev["test_acc_T1"] == rec["test_acc_T1"]
    assert 0 <= ev["test_acc_T4"] <= 1
    assert 0 <= ev["early_exit"]["exit_fraction"] <= 1 and ev["early_exit"]["threshold"] == 0.5
    assert digest(run / "checkpoint_last.pt") == before and len(metrics(run)) == 1


def test_existing_run_is_not_overwritten_without_resume_or_overwrite(tmp_path, tiny_run, capsys):
    run = copy_run(tiny_run, tmp_path)
    before = digest(run / "checkpoint_last.pt")
    assert main(SYN + ["--epochs", "1", "--out-dir", run]) == 2
    assert "--resume" in capsys.readouterr().err and digest(run / "checkpoint_last.pt") == before


# ------------------------------------------------------------------------ presets and precedence


def test_presets_and_override_precedence(tmp_path, tiny_run, capsys):
    c = config_from_args(["--dataset", "cifar10-dvs"])  # automatic preset: the paper's DVS recipe
    assert c.preset == "paper-dvs" and c.weight_decay == 1e-3 and (c.T, c.T_teacher) == (5, 10)
    assert (c.optimizer, c.lr, c.momentum, c.scheduler, c.lr_step, c.lr_gamma, c.epochs, c.batch_size) == \
        ("sgd", 0.1, 0.9, "step", 30, 0.1, 100, 64)
    c = config_from_args(["--dataset", "CIFAR10"])
    assert c.dataset == "cifar10" and c.preset == "paper-static" and c.weight_decay == 1e-4 and c.T_eval == [2]
    c = config_from_args(["--dataset", "imagenet", "--data-dir", "x"])
    assert (c.optimizer, c.lr, c.scheduler, c.schedule_epochs, c.epochs, c.batch_size) == \
        ("lamb", 5e-4, "cosine", 300, 150, 32)
    # an explicit flag beats the preset; the rest of the preset stays
    c = config_from_args(["--dataset", "cifar10", "--preset", "paper-dvs", "--weight-decay", "5e-4", "--T", "3"])
    assert c.preset == "paper-dvs" and c.weight_decay == 5e-4 and (c.T, c.T_teacher) == (3, 10) and c.epochs == 100
    # a config file is the base; flags beat it
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.05, "width": 0.5, "dataset": "digits"}))
    c = config_from_args(["--config", tmp_path / "c.json", "--width", "0.25"])
    assert (c.lr, c.width, c.dataset) == (0.05, 0.25, "digits")
    # resuming: the checkpoint's config is the base, the out dir is the checkpoint's folder
    c = config_from_args(["--resume", tiny_run / "checkpoint_last.pt", "--epochs", "7"])
    assert c.epochs == 7 and c.width == PRESETS["cpu-tiny"]["width"] and c.batch_size == 16
    assert os.path.samefile(c.out_dir, tiny_run)
    c = config_from_args(["--resume", tiny_run / "checkpoint_last.pt", "--T", "3", "--T-teacher", "6",
                          "--data-opt", "noise=0.5"])
    assert c.T_eval == [2, 1] and c.data_opts == {"num_samples": 48, "size": 16, "noise": 0.5}
    (tmp_path / "t.json").write_text(json.dumps({"T": 2, "T_eval": [2]}))  # a derived T_eval follows T
    assert config_from_args(["--config", tmp_path / "t.json", "--T", "3"]).T_eval == [3]
    (tmp_path / "typo.json").write_text(json.dumps({"lrr": 0.05}))
    with pytest.raises(SystemExit):
        main(["--config", tmp_path / "typo.json", "--print-config"])
    capsys.readouterr()
    assert main(["--dataset", "cifar10", "--lr", "0.3", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 0.3 and printed["weight_decay"] == 1e-4
    for bad in (["--method", "tsd", "--T", "4", "--T-teacher", "3"], ["--method", "kd"], ["--preset", "nope"],
                ["--data-opt", "novalue"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2, bad


# ------------------------------------------------------------------------ methods, data kinds, AMP


@pytest.mark.parametrize("extra", [
    ["--method", "baseline", "--arch", "resnet18", "--width", "0.0625"],
    ["--method", "tks"],
    ["--method", "tsd", "--amp"],  # bf16 autocast on CPU
    ["--method", "tssd", "--dataset", "synthetic-dvs", "--T", "2", "--T-teacher", "3"],  # (x_T, x_T') pairs
    ["--method", "tssd", "--dataset", "synthetic-dvs", "--T", "2", "--T-teacher", "3", "--teacher-mode",
     "shared_prefix"],
], ids=["baseline-resnet18", "tks", "tsd-amp", "tssd-dvs-separate", "tssd-dvs-shared_prefix"])
def test_methods_run_one_step(tmp_path, extra):
    out = tmp_path / "run"
    assert main(SYN + ["--epochs", "1", "--max-steps-per-epoch", "1", "--out-dir", out] + extra) == 0
    (rec,) = metrics(out)
    assert rec["global_step"] == 1 and torch.isfinite(torch.tensor(rec["train_loss"]))
    assert json.loads((out / "config.json").read_text())["config"]["method"] == extra[1]


def test_ann_teacher_then_kd_and_tser(tmp_path):
    assert main(SYN + ["--method", "ann", "--epochs", "1", "--out-dir", tmp_path / "ann"]) == 0
    teacher = tmp_path / "ann" / "checkpoint_last.pt"
    for method in ("kd", "tser"):
        out = tmp_path / method
        assert main(SYN + ["--method", method, "--teacher", teacher, "--epochs", "1", "--max-steps-per-epoch", "1",
                           "--out-dir", out]) == 0
        (rec,) = metrics(out)
        assert "train_kd" in rec and torch.isfinite(torch.tensor(rec["train_loss"]))


# ------------------------------------------------------------------------ plot


def test_plot_writes_a_png(tmp_path, tiny_run):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    r = cli([tiny_run, tiny_run, "-o", png, "--labels", "a", "b"], tmp_path, module="tssd_fast.plot")
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tssd_fast.plot import main as plot_main
    assert plot_main([str(tmp_path / "missing")]) == 1


def test_tensorboard_scalars_when_installed(tmp_path, monkeypatch):
    """tensorboard is optional (not installed here): a stand-in SummaryWriter receives the scalars."""
    import types

    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    out = tmp_path / "run"
    assert main(SYN + ["--epochs", "1", "--max-steps-per-epoch", "1", "--method", "baseline", "--out-dir", out]) == 0
    assert calls[0] == ("init", str(out / "tb")) and calls[-1] == ("close",)
    tags = {c[0]: c[1:] for c in calls[1:-1]}
    assert {"train_loss", "train_ce", "test_acc", "lr", "images_per_s"} <= set(tags)
    assert tags["test_acc"] == (metrics(out)[0]["test_acc"], 1)
    # --no-tensorboard: no writer
    calls.clear()
    assert main(SYN + ["--epochs", "1", "--max-steps-per-epoch", "1", "--method", "baseline", "--out-dir",
                       tmp_path / "run2", "--no-tensorboard"]) == 0
    assert calls == []


def test_lamb_step_and_schedules():
    from tssd_fast.train.config import TrainConfig
    from tssd_fast.train.optim import Lamb, build_scheduler

    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = Lamb([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([1.0, -2.0])
    opt.step()
    # step 1: m_hat = g, v_hat = g^2 -> u = g / (|g| + eps) + wd * p; p -= lr * |p| / |u| * u
    u = torch.tensor([1.0, -2.0]) / (torch.tensor([1.0, 2.0]) + 1e-6) + 0.5 * torch.tensor([3.0, 4.0])
    expect = torch.tensor([3.0, 4.0]) - 0.1 * (5.0 / u.norm()) * u
    torch.testing.assert_close(p.detach(), expect)

    def lrs(**kw):
        o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = build_scheduler(TrainConfig(**kw), o)
        out = []
        for _ in range(4):
            out.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
        return out

    assert lrs(scheduler="step", lr_step=2, lr_gamma=0.1) == pytest.approx([1, 1, 0.1, 0.1])
    assert lrs(scheduler="cosine", epochs=2, schedule_epochs=4) == pytest.approx([1, 0.853553, 0.5, 0.146447], rel=1e-5)
    assert lrs(scheduler="constant") == [1, 1, 1, 1]


def test_demo_digits_smoke(tmp_path, capsys):
    pytest.importorskip("sklearn.datasets")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        import demo_digits
    except ImportError:
        pytest.skip("examples/ is not next to tests/")
    finally:
        sys.path.pop(0)
    assert demo_digits.main(["--variants", "baseline", "--seeds", "1", "--epochs", "1", "--jobs", "1",
                             "--out", str(tmp_path), "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "test acc % T=1" in out
    table = json.loads((tmp_path / "d.json").read_text())["table"]
    assert table[0]["variant"] == "baseline" and 0 <= table[0]["T2"][0] <= 1
    rows = (tmp_path / "demo.csv").read_text().splitlines()
    assert rows[0].startswith("variant,seed,test_acc_T2") and rows[1].startswith("baseline,0,") and len(rows) == 2
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------ mistakes: one line each


def _bad(args, capsys):
    """(exit status, stderr) of ``main(args)``; argparse-level errors exit through SystemExit."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and "Traceback" not in err and "error:" in lines[0]


def _bad_inputs(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2000))
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    cpu = SYN + ["--epochs", "1"]
    cases = {
        "unknown dataset": (["--dataset", "mnist"], "choose one of"),
        "unknown backend": (cpu + ["--backend", "fast"], "choose auto or one of"),
        "cuda backend on cpu": ([*cpu[:-4], "--backend", "cuda"], "cpu"),  # SYN ends with --backend torch
        "epochs 0": (SYN + ["--epochs", "0"], "--epochs must be >= 1"),
        "unknown arch": (cpu + ["--arch", "vgg"], "invalid choice"),
        "random bytes as checkpoint": (["--resume", junk], "not a tssd_fast.train checkpoint"),
        "text file as checkpoint": (["--resume", text], "not a tssd_fast.train checkpoint"),
        "random bytes as teacher": (cpu + ["--method", "kd", "--teacher", junk], "not a tssd_fast.train checkpoint"),
        "cifar10 without data dir": (["--dataset", "cifar10", "--preset", "cpu-tiny", "--device", "cpu"], "data_dir"),
        "vgg9 on 8x8 digits": (["--dataset", "digits", "--data-opt", "size=8", "--preset", "cpu-tiny",
                                "--device", "cpu"], "--data-opt size="),
    }
    if not torch.cuda.is_available():
        cases["cuda device without cuda"] = (cpu + ["--device", "cuda"], "--device cpu")
    return cases


@pytest.mark.parametrize("case", ["unknown dataset", "unknown backend", "cuda backend on cpu", "epochs 0",
                                  "unknown arch", "random bytes as checkpoint", "text file as checkpoint",
                                  "random bytes as teacher", "cifar10 without data dir", "vgg9 on 8x8 digits",
                                  "cuda device without cuda"])
def test_each_cli_mistake_is_one_line_that_says_what_to_do(tmp_path, capsys, case):
    cases = _bad_inputs(tmp_path)
    if case not in cases:
        pytest.skip("CUDA is available here")
    if case == "vgg9 on 8x8 digits":
        pytest.importorskip("sklearn")
    args, says = cases[case]
    out = tmp_path / "run"
    code, err = _bad(list(args) + ["--out-dir", out], capsys)
    assert code == 2 and _one_line(err) and says in err, err
    assert not out.exists(), "a failed start must not leave a run folder"


def test_env_backend_override_error_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TSSD_FAST_BACKEND", "cuda")
    out = tmp_path / "run"
    code, err = _bad(SYN[:-2] + ["--epochs", "1", "--out-dir", out], capsys)  # backend 'auto'
    assert code == 2 and _one_line(err) and "TSSD_FAST_BACKEND=cuda" in err, err
    assert not out.exists()


def test_resume_of_a_finished_run_asks_for_more_epochs(tmp_path, tiny_run, capsys):
    run = copy_run(tiny_run, tmp_path)
    before = digest(run / "checkpoint_last.pt")
    code, err = _bad(["--resume", run / "checkpoint_last.pt"], capsys)  # its config says 1 epoch: done
    assert code == 2 and _one_line(err) and "--epochs N with N > 1" in err, err
    assert digest(run / "checkpoint_last.pt") == before


def test_mistakes_in_a_subprocess_print_one_line_and_no_traceback(tmp_path):
    # the real command, as a user types it (stderr without pytest's capture in between)
    for args, says in ((["--dataset", "mnist"], "unknown dataset"),
                       (["--preset", "cpu-tiny", "--device", "cpu", "--backend", "cuda"], "--backend cuda")):
        r = cli(args + ["--out-dir", tmp_path / "run"], tmp_path)
        assert r.returncode == 2 and _one_line(r.stderr) and says in r.stderr, r.stderr
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arch", ["vgg9", "resnet18"])
def test_digits_runs_with_every_architecture_without_options(tmp_path, arch):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    assert main(["--preset", "cpu-tiny", "--dataset", "digits", "--arch", arch, "--epochs", "1",
                 "--max-steps-per-epoch", "1", "--no-progress", "--device", "cpu", "--out-dir", out]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["data_opts"]["size"] == 16 and cfg["dataset"]["input_size"] == [16, 16]


def test_preset_schedule_follows_epochs(tiny_run):
    # cpu-tiny: /10 after 2 of its 3 epochs; 40 epochs keep that shape instead of 1e-20 by the end
    c = config_from_args(["--preset", "cpu-tiny", "--epochs", "40"])
    assert c.lr_step == 27 and 0.1 * 0.1 ** ((c.epochs - 1) // c.lr_step) >= 1e-2
    assert config_from_args(["--preset", "cpu-tiny"]).lr_step == 2  # the preset as written
    assert config_from_args(["--dataset", "cifar10", "--epochs", "10"]).lr_step == 3  # paper: 30 of 100
    assert config_from_args(["--dataset", "imagenet", "--data-dir", "x", "--epochs", "15"]).schedule_epochs == 30
    # an explicit schedule wins; a resumed run keeps the schedule it was trained with
    assert config_from_args(["--preset", "cpu-tiny", "--epochs", "40", "--lr-step", "5"]).lr_step == 5
    assert config_from_args(["--resume", tiny_run / "checkpoint_last.pt", "--epochs", "40"]).lr_step == \
        json.loads((tiny_run / "config.json").read_text())["config"]["lr_step"]


def test_plot_of_a_one_epoch_run_shows_the_epoch_and_both_accuracies(tiny_run):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from tssd_fast.plot import draw_runs
    fig = draw_runs([tiny_run])
    try:
        ax_acc, ax_loss = fig.axes
        for ax in (ax_acc, ax_loss):
            lo, hi = ax.get_xlim()
            assert (lo, hi) == (0.5, 1.5) and [t for t in ax.get_xticks() if lo <= t <= hi] == [1.0]
        test_line, train_line = ax_acc.get_lines()
        assert train_line.get_marker() not in (None, "None", "", " ")  # one point needs a marker
        assert list(train_line.get_xdata()) == [1]
    finally:
        plt.close(fig)


def test_memory_modes_train_bit_for_bit_alike(tmp_path):
    """--memory default / min (less kept for backward) train to the very weights of plain (torch's layers)."""
    states = {}
    for mode in ("plain", "default", "min"):
        out = tmp_path / mode
        assert main(SYN + ["--epochs", "1", "--max-steps-per-epoch", "2", "--out-dir", out, "--memory", mode]) == 0
        assert json.loads((out / "config.json").read_text())["config"]["memory"] == mode
        states[mode] = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    for mode in ("default", "min"):
        assert states[mode].keys() == states["plain"].keys()
        for k, v in states["plain"].items():
            assert torch.equal(states[mode][k], v), (mode, k)


# ------------------------------------------------------------------------ --cuda-graphs
def test_cuda_graphs_trains_the_same_steps_as_eager(tmp_path, monkeypatch):
    # On CPU the graphed step logic runs without capture (GraphedStep(capture=False)): static
    # input buffers, warm-up undone, re-capture per epoch and learning rate, the short last
    # batch eager, gradient clipping before the step. The weights after 2 epochs are bitwise
    # those of the eager run. (The capture itself: tests/test_cuda_graph.py, on a GPU.)
    from tssd_fast.train import loop
    monkeypatch.setattr(loop, "_check_cuda_graphs", lambda cfg, info: None)
    args = SYN + ["--data-opt", "num_samples=40", "--lr-step", "1", "--epochs", "2",
                  "--grad-clip", "1.0", "--backend", "cpp", "--T-eval", "2"]  # 40 = 16 + 16 + 8
    assert main(args + ["--out-dir", tmp_path / "eager"]) == 0
    assert main(args + ["--out-dir", tmp_path / "graph", "--cuda-graphs"]) == 0
    a = load_checkpoint(tmp_path / "eager" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "graph" / "checkpoint_last.pt")
    assert a["global_step"] == b["global_step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_cuda_graphs_refuses_cpu_and_other_optimizers(tmp_path, capsys):
    code, err = _bad(SYN + ["--epochs", "1", "--cuda-graphs", "--out-dir", tmp_path / "a"], capsys)
    assert code == 2 and _one_line(err) and "--cuda-graphs needs one CUDA process" in err, err
    code, err = _bad(SYN + ["--epochs", "1", "--cuda-graphs", "--optimizer", "adamw",
                            "--out-dir", tmp_path / "b"], capsys)
    assert code == 2 and _one_line(err) and "--optimizer sgd" in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("flag, memory, want", [(None, "default", True), (None, "plain", True), (None, "min", False),
                                                ("on", "min", True), ("off", "default", False)])
def test_cudnn_benchmark_off_by_default_for_memory_min(flag, memory, want):
    """cuDNN autotuning (set on CUDA runs) is on unless --memory min, whose backward recompute must
    pick the forward's conv algorithm; --cudnn-benchmark on/off overrides."""
    from tssd_fast.train.config import cudnn_benchmark
    args = SYN + ["--memory", memory] + ([] if flag is None else ["--cudnn-benchmark", flag])
    cfg = config_from_args(args)
    assert cfg.cudnn_benchmark == (flag or "auto")
    assert cudnn_benchmark(cfg) is want
    with pytest.raises(SystemExit):
        config_from_args(SYN + ["--cudnn-benchmark", "sometimes"])


def test_channels_last_trains_like_nchw(tmp_path):
    """--channels-last: NHWC conv weights in the checkpoint, and the first step equal to NCHW's
    within float32 rounding (torch's default tolerance): other conv kernels sum in another
    order. Later steps can drift further (a membrane potential at the threshold flips a spike),
    as runs on different hardware do, so one step is compared."""
    args = SYN + ["--epochs", "1", "--max-steps-per-epoch", "1", "--backend", "cpp"]
    assert main(args + ["--out-dir", tmp_path / "nchw"]) == 0
    assert main(args + ["--out-dir", tmp_path / "nhwc", "--channels-last"]) == 0
    assert json.loads((tmp_path / "nhwc" / "config.json").read_text())["config"]["channels_last"] is True
    a = load_checkpoint(tmp_path / "nchw" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "nhwc" / "checkpoint_last.pt")["model"]
    convs = [k for k, v in b.items() if v.dim() == 4]
    assert convs and all(b[k].is_contiguous(memory_format=torch.channels_last) and not b[k].is_contiguous()
                         for k in convs)
    assert all(a[k].is_contiguous() for k in convs)
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, msg=k)
    assert metrics(tmp_path / "nhwc")[-1]["train_loss"] == pytest.approx(metrics(tmp_path / "nchw")[-1]["train_loss"],
                                                                           rel=1e-6)
