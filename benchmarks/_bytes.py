"""The memory traffic a LIF call must move: the byte model behind "effective bandwidth".

One pure function, `lif_bytes`, shared by every benchmark. It counts the bytes that *any*
implementation of the mode has to read or write at the least (each tensor once), not what a
particular implementation happens to move: the reference loop moves far more, which is why its
effective bandwidth is low. Dividing these bytes by a measured time gives the effective
bandwidth; dividing that by the copy bandwidth of the device gives "% of the machine's limit".

For x [T, N] in a storage dtype of `io_bytes` bytes per element (4 fp32, 2 bf16/fp16), and the
neuron state in the compute dtype (`state_bytes`: 4, or 8 for float64):

    infer (forward, no grad):  read x, [read v0 [N]], write spikes, write v_last [N]
    fwd   (forward, training): infer + write what backward needs ("saved"):
                               window bits (Rect + soft reset): ceil(T/8) * N bytes (uint8 rows)
                               otherwise H in the compute dtype: T * N * state_bytes
    bwd   (backward):          read grad_spikes, read saved, write grad_x
    train (forward+backward):  fwd + bwd

v0 is read only when the call starts from a state tensor (reads_v0=True). The benchmarks start
every call from the default state, a number (LIFNode after reset(); the op's v_init), so no
implementation has to read a v0 there. Likewise the gradients of v0 / v_last are not counted:
the benchmarks use only the spikes, so no implementation has to produce or consume them (the
op's backward writes grad_v0 only when a v0 tensor needs it, FLAG_GRAD_V0).
"""
from typing import Dict

MODES = ("infer", "fwd", "bwd", "train")


def saved_bytes(T: int, N: int, saves_bits: bool, state_bytes: int = 4) -> int:
    """Bytes the forward must keep for backward: packed window bits [ceil(T/8), N] uint8 for
    Rect + soft reset (saves_bits), else H [T, N] in the compute dtype."""
    if saves_bits:
        return ((T + 7) // 8) * N
    return T * N * state_bytes


def lif_bytes(mode: str, T: int, N: int, io_bytes: int, saves_bits: bool,
              state_bytes: int = 4, breakdown: bool = False, reads_v0: bool = False):
    """Minimal bytes moved by one LIF call of `mode` ('infer', 'fwd', 'bwd' or 'train') over
    x [T, N] (see the module docstring for the model).

    Args:
        io_bytes: bytes per element of x, spikes, grad_spikes and grad_x (the storage dtype).
        saves_bits: True when backward needs only the Rect window bit (Rect + soft reset).
        state_bytes: bytes per element of v0 / v_last and of a saved H (the compute dtype).
        breakdown: return a dict {term: bytes} instead of the total.
        reads_v0: the call starts from a state tensor v0 [N] (not from the default state).

    Returns:
        The total number of bytes (int), or the per-term dict when breakdown=True.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for name, val in (("T", T), ("N", N), ("io_bytes", io_bytes), ("state_bytes", state_bytes)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    seq = T * N * io_bytes
    saved = saved_bytes(T, N, saves_bits, state_bytes)
    terms: Dict[str, int] = {}
    if mode in ("infer", "fwd", "train"):
        terms.update({"read x": seq, "write spikes": seq, "write v_last": N * state_bytes})
        if reads_v0:
            terms["read v0"] = N * state_bytes
    if mode in ("fwd", "train"):
        terms["write saved"] = saved
    if mode in ("bwd", "train"):
        terms.update({"read grad_spikes": seq, "read saved": saved, "write grad_x": seq})
    return terms if breakdown else sum(terms.values())


LEGEND = ("bytes = the minimum traffic of the mode, each tensor once, from the default state "
          "(no v0 to read): infer = read x, write spikes + v_last; train = that + write saved + "
          "read grad_spikes + read saved + write grad_x; saved = Rect window bits ceil(T/8)*N "
          "bytes (Rect + soft reset) else H fp32 T*N*4 bytes. GB/s = bytes / median time; "
          "%copy = GB/s over the copy bandwidth (read + write of a large tensor copy) measured "
          "in the same run.")
