"""Shared test setup: every fresh op output starts as NaN (0xA5 for bytes), so an element a
kernel forgets to write cannot pass; the tests' float64 oracle lives in _reference64.py."""
import pytest
import torch

from tssd_fast.ops import poison_outputs


@pytest.fixture(autouse=True)
def _poison_fresh_outputs():
    poison_outputs(True)
    yield
    poison_outputs(False)


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
    from tssd_fast.ops import kernel_origin
    origin = kernel_origin()
    return (f"tssd_fast {tssd_fast.__version__} from {tssd_fast.__file__}; CPU kernel: {origin}; "
            f"backends cpu={tssd_fast.available_backends('cpu')}")
