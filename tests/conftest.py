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
