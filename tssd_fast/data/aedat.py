"""Readers for the two AEDAT event formats of the neuromorphic datasets.

Events come back as a dict of numpy arrays ``t`` (int64, microseconds), ``x``, ``y`` (int64,
pixel column / row) and ``p`` (uint8, polarity 0/1), in file order; the same layout as
SpikingJelly's ``events_np`` .npz files.

AEDAT 2.0 (CIFAR10-DVS, original release): ASCII header lines starting with ``#`` (the first is
``#!AER-DAT2.0``), then big-endian records of uint32 address + uint32 timestamp. The
CIFAR10-DVS address holds (bit 0) polarity, (bits 1-7) sensor x, (bits 8-14) sensor y; like
SpikingJelly we return ``x = 127 - sensor_y``, ``y = 127 - sensor_x``, ``p = 1 - polarity``.

AEDAT 3.1 (DVS128 Gesture): header lines up to ``#!END-HEADER``, then packets. Each packet is
a 28-byte little-endian header (int16 eventType, int16 eventSource, int32 eventSize,
int32 eventTSOffset, int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber,
int32 eventValid) followed by eventCapacity * eventSize bytes. Polarity packets (eventType 1)
hold 8-byte events: uint32 data (bit 1 polarity, bits 2-16 y, bits 17-31 x) and a 32-bit
timestamp, extended by ``eventTSOverflow << 31``. Other packet types are skipped. As in
SpikingJelly, all eventCapacity events are decoded and the valid bit (bit 0) is not filtered.
"""
import struct
from typing import Dict, Tuple

import numpy as np

from ._io import require_file

Events = Dict[str, np.ndarray]

AEDAT31_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
POLARITY_EVENT = 1


def _read_bytes(path, what: str, expected: str) -> bytes:
    with open(require_file(path, what, expected), "rb") as f:
        return f.read()


def _skip_hash_lines(buf: bytes, path, stop_at: bytes = None) -> int:
    """Offset of the first byte after the ``#`` header lines (after ``stop_at`` if given)."""
    pos = 0
    while pos < len(buf) and buf[pos:pos + 1] == b"#":
        nl = buf.find(b"\n", pos)
        if nl < 0:
            raise ValueError(f"Truncated AEDAT file {path}: header line at byte offset {pos} "
                             f"has no end of line")
        line = buf[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if stop_at is not None and line == stop_at:
            break
    return pos


def _check_version(buf: bytes, path, version: bytes) -> None:
    first = buf[:64].split(b"\n", 1)[0]
    if first.startswith(b"#!AER-DAT") and not first.startswith(b"#!AER-DAT" + version):
        raise ValueError(f"{path} is not an AEDAT {version.decode()} file: its first line is "
                         f"{first.rstrip()!r}, expected '#!AER-DAT{version.decode()}...'")


def read_aedat2_raw(path) -> Tuple[np.ndarray, np.ndarray]:
    """AEDAT 2.0 records of ``path`` -> (address uint32 [N], timestamp uint32 [N]).

    Raises FileNotFoundError for a missing file and ValueError (with the file name and the byte
    offset of the incomplete record) for a truncated one.
    """
    buf = _read_bytes(path, "AEDAT 2.0 file", "an event file starting with '#!AER-DAT2.0'")
    _check_version(buf, path, b"2")
    start = _skip_hash_lines(buf, path)
    size = len(buf) - start
    if size % 8:
        bad = start + (size // 8) * 8
        raise ValueError(f"Truncated AEDAT 2.0 file {path}: the event record at byte offset "
                         f"{bad} has {size % 8} of 8 bytes (expected big-endian uint32 address "
                         f"+ uint32 timestamp records)")
    rec = np.frombuffer(buf, dtype=">u4", offset=start).reshape(-1, 2)
    return rec[:, 0].astype(np.uint32), rec[:, 1].astype(np.uint32)


def decode_cifar10dvs_address(addr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR10-DVS AEDAT 2.0 address -> (x, y, p) with SpikingJelly's orientation.

    Sensor x = bits 1-7, sensor y = bits 8-14, polarity = bit 0; returned
    ``x = 127 - sensor_y``, ``y = 127 - sensor_x``, ``p = 1 - polarity``.
    """
    addr = addr.astype(np.int64)
    sx = (addr & 0xFE) >> 1
    sy = (addr & 0x7F00) >> 8
    pol = addr & 1
    return 127 - sy, 127 - sx, (1 - pol).astype(np.uint8)


def read_cifar10dvs_aedat(path) -> Events:
    """Read one CIFAR10-DVS ``.aedat`` file (AEDAT 2.0) -> events dict ``t, x, y, p``."""
    addr, ts = read_aedat2_raw(path)
    x, y, p = decode_cifar10dvs_address(addr)
    return {"t": ts.astype(np.int64), "x": x, "y": y, "p": p}


def read_aedat31_polarity(path) -> Events:
    """Read the polarity events of an AEDAT 3.1 file (DVS128 Gesture) -> ``t, x, y, p``.

    Raises FileNotFoundError for a missing file and ValueError naming the file and the byte
    offset where a packet header or packet body is cut short or malformed.
    """
    buf = _read_bytes(path, "AEDAT 3.1 file", "an event file starting with '#!AER-DAT3.1'")
    if not buf.startswith(b"#!AER-DAT3"):
        raise ValueError(f"{path} is not an AEDAT 3.1 file: it starts with {buf[:12]!r}, "
                         f"expected '#!AER-DAT3.1'")
    pos = _skip_hash_lines(buf, path, stop_at=b"#!END-HEADER")
    n = len(buf)
    ts_parts, data_parts = [], []
    while pos < n:
        if n - pos < AEDAT31_HEADER.size:
            raise ValueError(f"Truncated AEDAT 3.1 file {path}: the packet header at byte "
                             f"offset {pos} has {n - pos} of {AEDAT31_HEADER.size} bytes")
        etype, _src, esize, _tsoff, tsovf, ecap, _num, _valid = AEDAT31_HEADER.unpack_from(buf, pos)
        if esize <= 0 or ecap < 0 or tsovf < 0:
            raise ValueError(f"Corrupt AEDAT 3.1 file {path}: the packet header at byte offset "
                             f"{pos} has eventSize={esize}, eventCapacity={ecap}, "
                             f"eventTSOverflow={tsovf}")
        body = pos + AEDAT31_HEADER.size
        length = ecap * esize
        if n - body < length:
            raise ValueError(f"Truncated AEDAT 3.1 file {path}: the packet at byte offset {pos} "
                             f"declares {ecap} events x {esize} bytes = {length} bytes after "
                             f"its header, but only {n - body} bytes remain")
        if etype == POLARITY_EVENT and ecap:
            if esize < 8:
                raise ValueError(f"Corrupt AEDAT 3.1 file {path}: polarity packet at byte offset "
                                 f"{pos} has eventSize={esize}, expected >= 8")
            data = np.ndarray((ecap,), dtype="<u4", buffer=buf, offset=body, strides=(esize,))
            ts = np.ndarray((ecap,), dtype="<u4", buffer=buf, offset=body + 4, strides=(esize,))
            data_parts.append(data.astype(np.int64))
            ts_parts.append(ts.astype(np.int64) | (int(tsovf) << 31))
        pos = body + length
    if data_parts:
        data, t = np.concatenate(data_parts), np.concatenate(ts_parts)
    else:
        data = t = np.zeros(0, dtype=np.int64)
    return {"t": t, "x": (data >> 17) & 0x7FFF, "y": (data >> 2) & 0x7FFF,
            "p": ((data >> 1) & 1).astype(np.uint8)}


def load_events_npz(path) -> Events:
    """Read a SpikingJelly ``events_np`` sample (.npz with keys t, x, y, p) -> events dict."""
    path = require_file(path, "events .npz file", "a SpikingJelly events_np file with keys "
                        "t, x, y, p")
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # not a zip, truncated, pickled object...
        raise ValueError(f"events .npz file {path} is corrupt ({type(e).__name__}: {e}); "
                         f"expected an .npz with keys t, x, y, p") from e
    missing = [k for k in "txyp" if k not in arrays]
    if missing:
        raise ValueError(f"events .npz file {path} lacks keys {missing} (has "
                         f"{sorted(arrays)}); expected t, x, y, p")
    return {"t": arrays["t"].astype(np.int64), "x": arrays["x"].astype(np.int64),
            "y": arrays["y"].astype(np.int64), "p": (arrays["p"] != 0).astype(np.uint8)}


def cut_events(events: Events, t_start: int, t_end: int) -> Events:
    """Events with ``t_start <= t < t_end`` (how DVS128 Gesture samples are cut by label)."""
    m = (events["t"] >= t_start) & (events["t"] < t_end)
    return {k: v[m] for k, v in events.items()}
