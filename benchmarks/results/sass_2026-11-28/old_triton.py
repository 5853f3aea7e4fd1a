"""The Triton kernels of commit 70e268c (before the time loops were regrouped), counted like
`benchmarks/sass_report.py --triton` counts the current ones, with that commit's launch shape at
N = 2^24: BLOCK 1024, 4 warps, for every dtype.

    PYTHONPATH=.:benchmarks python benchmarks/results/sass_2026-11-28/old_triton.py
"""
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
import sass_report  # noqa: E402


def main(commit: str = "70e268c") -> int:
    src = subprocess.run(["git", "show", f"{commit}:tssd_fast/ops/triton_lif.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_triton_lif.py"
        # its relative import of .config: the current package's config serves
        path.write_text(src.replace("from .config import", "from tssd_fast.ops.config import"))
        spec = importlib.util.spec_from_file_location("old_triton_lif", path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)  # triton.jit reads the source file: keep it until done
        ns = type("Args", (), dict(sms=132, clock_ghz=1.98, copy_tbps=4.21))  # the H200 run
        table, budget = sass_report.triton_rows(ns, module=old, num_warps=4, BLOCK=1024)
        return sass_report.print_table(table, budget, ns, f"Triton ({commit})")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
