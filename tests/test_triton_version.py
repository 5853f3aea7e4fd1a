"""The Triton releases the triton backend accepts: MIN_TRITON and newer; an older one makes the
backend unavailable with a reason that says what to install (3.4 and 3.5 compile fp32 division
to flush-to-zero div.rn.ftz). .ci/triton_compat_check.sh runs the kernels' compile and launch
checks with the oldest accepted release."""
import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")


def test_version_parsing():
    from tssd_fast.ops.triton_lif import _minor_version
    assert _minor_version("3.6.0") == (3, 6)
    assert _minor_version("3.10.1+git1234abc") == (3, 10)
    assert _minor_version("3.6") == (3, 6)
    assert _minor_version("nightly") == (0, 0)


def test_installed_triton_is_accepted_or_refused_by_the_floor():
    import triton

    from tssd_fast.ops import triton_lif
    old = triton_lif._minor_version(triton.__version__) < triton_lif.MIN_TRITON
    assert triton_lif._TOO_OLD == old
    assert (triton_lif.unavailable_reason() != "") == old
    assert (triton_lif.launcher() is None) == old
    # the direct launch never covers a release the backend refuses
    assert triton_lif.DIRECT_TRITON[0] >= triton_lif.MIN_TRITON


def test_too_old_triton_makes_the_backend_unavailable(monkeypatch):
    import torch

    import tssd_fast
    from tssd_fast.ops import registry, triton_lif
    monkeypatch.setattr(triton_lif, "_TOO_OLD", True)
    monkeypatch.setattr(triton_lif, "_launcher", None)
    monkeypatch.delitem(registry._loaded, "triton", raising=False)  # loaded once per process
    reason = triton_lif.unavailable_reason()
    assert "older than 3.6" in reason and "pip install 'triton>=3.6'" in reason
    assert triton_lif.launcher() is None
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so that CPU tensors would be the backend's
    with pytest.raises(RuntimeError, match="older than 3.6"):
        tssd_fast.lif_multistep(torch.zeros(2, 3), backend="triton")
