"""Writers of tiny dataset files in the real on-disk formats, for tests/test_data.py.

Each writer encodes the format by hand (from its documentation), independently of the readers
in tssd_fast.data, so a reader bug cannot cancel out.
"""
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck")


# --- CIFAR python pickles -------------------------------------------------------------------

def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, n_per_batch: int = 2, n_test: int = 3, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py`` with bytes-keyed dicts like the real (Python 2) pickles.
    Returns {'train': (images [N,3,32,32], labels), 'test': (...)}."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    out = {"train": ([], [])}
    for b in range(1, 6):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        _dump(folder / f"data_batch_{b}", {b"batch_label": f"training batch {b} of 5".encode(),
                                           b"labels": labels, b"data": data,
                                           b"filenames": [b"x.png"] * n_per_batch})
        out["train"][0].append(data)
        out["train"][1].extend(labels)
    data = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n_test)]
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": labels,
                                  b"data": data, b"filenames": [b"x.png"] * n_test})
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in
                                                     ("airplane", "automobile", "bird", "cat",
                                                      "deer", "dog", "frog", "horse", "ship",
                                                      "truck")],
                                    b"num_cases_per_batch": n_per_batch, b"num_vis": 3072})
    return {"train": (np.concatenate(out["train"][0]).reshape(-1, 3, 32, 32),
                      np.array(out["train"][1])),
            "test": (data.reshape(-1, 3, 32, 32), np.array(labels))}


def write_cifar100(root: Path, n_train: int = 4, n_test: int = 2, seed: int = 1) -> dict:
    """``root/cifar-100-python`` (train, test, meta) -> {'train': (images, fine labels), ...}."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        coarse = [v // 5 for v in fine]
        _dump(folder / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": fine, b"coarse_labels": coarse, b"data": data})
        out[split] = (data.reshape(-1, 3, 32, 32), np.array(fine))
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    return out


# --- AEDAT 2.0 (CIFAR10-DVS) ----------------------------------------------------------------

AEDAT2_HEADER = (b"#!AER-DAT2.0\r\n"
                 b"# This is a raw AE data file - do not edit\r\n"
                 b"# Data format is int32 address, int32 timestamp (8 bytes total)\r\n"
                 b"# Timestamps tick is 1 us\r\n")


def cifar10dvs_address(x, y, p) -> np.ndarray:
    """Address word of the events the reader must return as (x, y, p): the sensor stores
    x_s = 127 - y in bits 1-7, y_s = 127 - x in bits 8-14 and polarity 1 - p in bit 0."""
    x, y, p = (np.asarray(a, dtype=np.int64) for a in (x, y, p))
    return (((127 - x) << 8) | ((127 - y) << 1) | (1 - p)).astype(np.uint32)


def write_aedat2(path: Path, addr, ts, header: bytes = AEDAT2_HEADER) -> int:
    """Header + big-endian (address, timestamp) uint32 records; returns the header length."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = bytearray()
    for a, t in zip(addr, ts):
        body += struct.pack(">II", int(a), int(t))
    path.write_bytes(header + bytes(body))
    return len(header)


def random_events(rng, n: int, t0: int = 0, sensor: int = 128) -> dict:
    """n events with increasing timestamps starting at t0."""
    t = t0 + np.cumsum(rng.integers(0, 50, n))
    return {"t": t.astype(np.int64), "x": rng.integers(0, sensor, n).astype(np.int64),
            "y": rng.integers(0, sensor, n).astype(np.int64),
            "p": rng.integers(0, 2, n).astype(np.uint8)}


def write_cifar10dvs(root: Path, per_class: int = 10, n_events: int = 60, seed: int = 0,
                     events_np: bool = False) -> dict:
    """Class folders of ``cifar10_<class>_<i>.aedat`` (or SpikingJelly's events_np .npz).
    Returns {key 'class/stem': events}."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    written = {}
    for cls in CIFAR10DVS_CLASSES:
        for i in range(per_class):
            ev = random_events(rng, n_events + i)
            stem = f"cifar10_{cls}_{i}"
            if events_np:
                write_events_np(root / "events_np" / cls / f"{stem}.npz", ev)
            else:
                write_aedat2(root / cls / f"{stem}.aedat", cifar10dvs_address(ev["x"], ev["y"],
                                                                              ev["p"]), ev["t"])
            written[f"{cls}/{stem}"] = ev
    return written


# --- AEDAT 3.1 (DVS128 Gesture) -------------------------------------------------------------

AEDAT31_HEADER = (b"#!AER-DAT3.1\r\n"
                  b"#Format: RAW\r\n"
                  b"#Source 1: DVS128\r\n"
                  b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n"
                  b"#!END-HEADER\r\n")


def aedat31_packet(event_type: int, events: bytes, n: int, size: int, ts_overflow: int = 0) -> bytes:
    """28-byte packet header (little-endian eventType, eventSource, eventSize, eventTSOffset,
    eventTSOverflow, eventCapacity, eventNumber, eventValid) + the events."""
    return struct.pack("<hhiiiiii", event_type, 1, size, 4, ts_overflow, n, n, n) + events


def polarity_packet(x, y, p, t, ts_overflow: int = 0) -> bytes:
    """Polarity packet: data = x << 17 | y << 2 | p << 1 | valid; timestamp = t mod 2^31."""
    body = bytearray()
    for xi, yi, pi, ti in zip(x, y, p, t):
        data = (int(xi) << 17) | (int(yi) << 2) | (int(pi) << 1) | 1
        body += struct.pack("<Ii", data, int(ti) - (ts_overflow << 31))
    return aedat31_packet(1, bytes(body), len(x), 8, ts_overflow)


def special_packet(n: int = 2) -> bytes:
    """A non-polarity packet (eventType 0, special events) the reader must skip."""
    return aedat31_packet(0, b"\x07\x00\x00\x00\x10\x00\x00\x00" * n, n, 8)


def write_aedat31(path: Path, events: dict, per_packet: int = 5) -> None:
    """Header, a special packet, then the events in polarity packets of ``per_packet``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray(AEDAT31_HEADER) + special_packet()
    n = len(events["t"])
    for s in range(0, n, per_packet):
        sl = slice(s, s + per_packet)
        ovf = int(events["t"][s]) >> 31
        out += polarity_packet(events["x"][sl], events["y"][sl], events["p"][sl],
                               events["t"][sl], ovf)
    path.write_bytes(bytes(out))


def write_gesture(root: Path, recordings: dict, train: list, test: list) -> None:
    """``root`` = the DvsGesture folder: per recording name -> (events, [(class 1-11, start,
    end), ...]) an .aedat and a _labels.csv, plus the two trial lists."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, (events, rows) in recordings.items():
        write_aedat31(root / f"{name}.aedat", events)
        lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in rows]
        (root / f"{name}_labels.csv").write_text("\n".join(lines) + "\n")
    (root / "trials_to_train.txt").write_text("".join(f"{n}.aedat\n" for n in train))
    (root / "trials_to_test.txt").write_text("".join(f"{n}.aedat\n" for n in test))


# --- SpikingJelly events_np -----------------------------------------------------------------

def write_events_np(path: Path, events: dict) -> None:
    """One sample as SpikingJelly saves it: np.savez with keys t, x, y, p."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, t=events["t"], x=events["x"], y=events["y"], p=events["p"])
