"""Shared test setup: every fresh op output starts as NaN (0xA5 for bytes), so an element a
kernel forgets to write cannot pass; the tests' float64 oracle lives in _reference64.py."""
import pytest
import torch

from tssd_fast.ops import _alloc


@pytest.fixture(autouse=True)
def _poison_fresh_outputs():
    _alloc.poison(True)
    yield
    _alloc.poison(False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny models and tensors: as fast or faster,
    and far faster on a busy machine. Use: pytestmark = pytest.mark.usefixtures("one_thread")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_report_header(config):
    import tssd_fast
    from tssd_fast.ops import _ext
    cpu = _ext.cpu_module()
    origin = "none" if cpu is None else ("prebuilt" if cpu.__name__ == "tssd_fast._C" else "JIT")
    return (f"tssd_fast {tssd_fast.__version__} from {tssd_fast.__file__}; CPU kernel: {origin}; "
            f"backends cpu={tssd_fast.available_backends('cpu')}")
