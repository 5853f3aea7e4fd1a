"""examples/study_digits.py: its statistics, its pairing and determinism, and an end-to-end smoke run."""
import csv
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def study():
    if not (EXAMPLES / "study_digits.py").is_file():
        pytest.skip("examples/ is not next to tests/")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import study_digits
    finally:
        sys.path.pop(0)
    return study_digits


def test_t_distribution_against_known_values(study):
    # textbook two-sided 5 % critical values and the closed forms for df = 1 and 2
    assert study.t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-6)
    assert study.t_two_sided_p(2.570582, 5) == pytest.approx(0.05, abs=1e-6)
    assert study.t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)  # Cauchy: 1 - 2 atan(1)/pi
    t = 1.7
    assert study.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert study.t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert study.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)


def test_paired_t_test_matches_scipy(study):
    a = [97.1, 95.3, 96.8, 98.0, 94.9, 96.2]
    b = [96.0, 95.9, 95.1, 97.2, 94.0, 96.5]
    r = study.paired_t_test(a, b)
    d = [x - y for x, y in zip(a, b)]
    assert r["mean"] == pytest.approx(sum(d) / 6)
    assert r["df"] == 5 and r["ci_lo"] < r["mean"] < r["ci_hi"]
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-7)


def test_wilcoxon_exact(study):
    # all n differences positive: the only pattern as extreme, on both sides -> p = 2 / 2^n
    assert study.wilcoxon_signed_rank([1, 2, 3, 4, 5], [0] * 5)["p"] == pytest.approx(2 / 32)
    assert study.wilcoxon_signed_rank([-1, -2, -3, -4, -5, -6], [0] * 6)["p"] == pytest.approx(2 / 64)
    zero = study.wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0])
    assert zero["n"] == 0 and zero["p"] == 1.0
    a, b = [5.0, 3.1, -2.2, 7.5, 0.4, -1.3, 2.8], [0.0] * 7
    r = study.wilcoxon_signed_rank(a, b)
    assert r["w_plus"] == 1 + 4 + 5 + 6 + 7  # ranks of |d|: 0.4 1.3 2.2 2.8 3.1 5.0 7.5
    scipy_stats = pytest.importorskip("scipy.stats")
    assert r["p"] == pytest.approx(scipy_stats.wilcoxon(a, b, method="exact").pvalue, rel=1e-9)


def test_runs_are_paired_by_seed(study):
    """Same seed: identical initial weights of the shared network and identical data draws."""
    import torch

    _, base = study.build_run("baseline", 3, 0.125, "torch")
    _, tssd = study.build_run("tssd", 3, 0.125, "torch")
    _, other = study.build_run("baseline", 4, 0.125, "torch")
    bs, ts = base.state_dict(), tssd.state_dict()
    assert any(k.startswith("weak.") for k in ts) and not any(k.startswith("weak.") for k in bs)
    for k, v in bs.items():
        assert torch.equal(v, ts[k]), k
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in bs.items())
    x1 = study.digits_split(3, 5)
    x2 = study.digits_split(3, 5)
    assert all(torch.equal(p, q) for p, q in zip(x1, x2))
    assert len(x1[1]) == 50 and len(x1[1]) + len(x1[3]) == 1797
    assert sorted(x1[1].bincount().tolist()) == [5] * 10


def test_one_run_is_deterministic(study):
    job = dict(study.QUICK, method="tssd", seed=1, lr=0.1, threads=1, backend="auto")
    r1, r2 = study.train_one(dict(job)), study.train_one(dict(job))
    for key in ("train_acc", "test_acc_T2", "test_acc_T1"):
        assert r1[key] == r2[key]
    assert [c["train_loss"] for c in r1["curve"]] == [c["train_loss"] for c in r2["curve"]]
    assert len(r1["curve"]) == job["epochs"] and math.isfinite(r1["curve"][-1]["train_loss"])


def test_study_end_to_end(study, tmp_path, capsys):
    pytest.importorskip("sklearn.datasets")
    out = tmp_path / "study"
    assert study.main(["--quick", "--methods", "baseline", "tssd", "--jobs", "1", "--no-progress",
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TSSD (separate, paper)" in printed and "Wilcoxon" in printed
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted((r["method"], r["seed"]) for r in runs) == [("baseline", "0"), ("baseline", "1"),
                                                               ("tssd", "0"), ("tssd", "1")]
    assert all(0 <= float(r["test_acc_T2"]) <= 1 and int(r["n_train"]) == 30 for r in runs)
    with open(out / "summary.csv") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    base = {r["seed"]: float(r["test_acc_T2"]) for r in runs if r["method"] == "baseline"}
    tssd = {r["seed"]: float(r["test_acc_T2"]) for r in runs if r["method"] == "tssd"}
    diff = 100 * sum(tssd[s] - base[s] for s in base) / len(base)
    assert float(summary["tssd"]["diff_T2_mean"]) == pytest.approx(diff, abs=1e-4)
    with open(out / "curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 2  # 4 runs x 2 evaluated epochs
    assert "cpu" in (out / "study.md").read_text()
    if _has_matplotlib():
        assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
