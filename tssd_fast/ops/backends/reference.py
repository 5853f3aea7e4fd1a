"""Backend 'torch': the pure-PyTorch reference loop, always available (tssd_fast.ops.reference)."""
from . import ALL_FLOATS, REFERENCE, Backend

BACKEND = Backend(
    name="torch", summary="pure-PyTorch autograd loop over time (the reference)",
    kind=REFERENCE, dtypes=ALL_FLOATS, devices=lambda: ("cpu", "cuda"),
    load=lambda: (True, ""))
