"""Event streams -> T frames [T, 2, H, W] (channel = polarity), and spatial downsampling.

Split modes (``split_by``), for a stream of N events with timestamps t (file order):

* ``'number'``: SpikingJelly's ``integrate_events_by_fixed_frames_number(split_by='number')``.
  With ``d = N // T``, frame j gets events ``[j*d, (j+1)*d)`` and the last frame also gets the
  remainder, ``[(T-1)*d, N)``. If N < T, every event goes to the last frame.
* ``'time'``: SpikingJelly's ``split_by='time'``. With ``dt = (t_max - t_min) // T`` (integer
  microseconds), frame j gets ``t_min + j*dt <= t < t_min + (j+1)*dt``, and the last frame also
  everything later. (SpikingJelly fails on an empty window; here the frame stays zero.)
* ``'window'``: fixed-duration frames as in the TSSD paper ("slices in 10 ms increments"):
  frame j gets ``t_min + j*window_us <= t < t_min + (j+1)*window_us``; events after the T-th
  window are dropped and a short stream leaves the tail frames zero. Frames for T are then a
  prefix of the frames for any T' > T.

A pixel counts the events of its polarity (``p != 0`` -> channel 1), so frames at the sensor
size hold integer counts.
"""
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_MODES = ("number", "time", "window")
DOWNSAMPLE_MODES = ("area", "sum", "bilinear")


def frame_index(t: np.ndarray, T: int, split_by: str = "number",
                window_us: Optional[int] = None) -> np.ndarray:
    """Frame index (0..T-1) of every event, or -1 for an event outside all frames.

    See the module docstring for the three ``split_by`` modes.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if split_by == "number":
        d = n // T
        if d == 0:
            return np.full(n, T - 1, dtype=np.int64)
        return np.minimum(np.arange(n, dtype=np.int64) // d, T - 1)
    t = np.asarray(t, dtype=np.int64)
    t0 = int(t.min())
    if split_by == "time":
        dt = (int(t.max()) - t0) // T
        if dt == 0:
            return np.full(n, T - 1, dtype=np.int64)
        return np.minimum((t - t0) // dt, T - 1)
    if split_by == "window":
        if not window_us or window_us <= 0:
            raise ValueError("split_by='window' needs window_us > 0 (frame length in µs)")
        idx = (t - t0) // int(window_us)
        idx[idx >= T] = -1
        return idx
    raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")


def accumulate_frames(x: np.ndarray, y: np.ndarray, p: np.ndarray, index: np.ndarray, T: int,
                      H: int, W: int) -> np.ndarray:
    """Count events into float32 frames [T, 2, H, W]; events with ``index < 0`` are skipped."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    keep = index >= 0
    if not keep.all():
        x, y, p, index = x[keep], y[keep], p[keep], index[keep]
    if len(x) and (x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H):
        raise ValueError(f"event coordinates outside the {H}x{W} frame: x in "
                         f"[{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}]")
    flat = ((index * 2 + (np.asarray(p) != 0)) * H + y) * W + x
    counts = np.bincount(flat, minlength=T * 2 * H * W)
    return counts.reshape(T, 2, H, W).astype(np.float32)


def downsample_frames(frames, size: Tuple[int, int], mode: str = "area") -> np.ndarray:
    """Resize frames [T, 2, H, W] to ``size`` = (h, w) -> float32 numpy [T, 2, h, w].

    ``'area'``: average over the input pixels each output pixel covers
    (``adaptive_avg_pool2d``; exact mean pooling for integer factors). ``'bilinear'``:
    ``F.interpolate(mode='bilinear', align_corners=False)`` (what a tensor ``Resize`` does).
    ``'sum'``: sum pooling, only for integer factors here (``integrate_events`` handles any
    size for 'sum' by binning the event coordinates).
    """
    x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    H, W = x.shape[-2:]
    h, w = size
    if (h, w) == (H, W):
        return x.numpy()
    if mode == "area":
        y = F.adaptive_avg_pool2d(x, (h, w))
    elif mode == "bilinear":
        y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    elif mode == "sum":
        if H % h or W % w:
            raise ValueError(f"'sum' frame downsampling needs integer factors, got {H}x{W} -> "
                             f"{h}x{w}; integrate_events(..., downsample='sum') bins event "
                             f"coordinates instead")
        y = F.avg_pool2d(x, (H // h, W // w)) * float((H // h) * (W // w))
    else:
        raise ValueError(f"downsample must be one of {DOWNSAMPLE_MODES}, got {mode!r}")
    return y.contiguous().numpy()


def integrate_events(events: Dict[str, np.ndarray], T: int, split_by: str = "number",
                     sensor_size: Tuple[int, int] = (128, 128),
                     size: Optional[Tuple[int, int]] = None, downsample: str = "area",
                     window_us: Optional[int] = None) -> np.ndarray:
    """Events dict (t, x, y, p) -> float32 frames [T, 2, h, w].

    Args:
        events: arrays ``t`` (µs), ``x`` (column), ``y`` (row), ``p`` (polarity).
        T: number of frames.
        split_by: 'number', 'time' or 'window' (module docstring).
        sensor_size: (H, W) of the sensor, 128x128 for CIFAR10-DVS and DVS128 Gesture.
        size: output (h, w); None keeps the sensor size.
        downsample: 'area' (default), 'bilinear' (on the sensor-size frames) or 'sum'
            (each event lands in output pixel ``(y*h//H, x*w//W)``, integer counts).
        window_us: frame length for split_by='window'.
    """
    if downsample not in DOWNSAMPLE_MODES:
        raise ValueError(f"downsample must be one of {DOWNSAMPLE_MODES}, got {downsample!r}")
    H, W = sensor_size
    h, w = size if size is not None else sensor_size
    index = frame_index(events["t"], T, split_by, window_us)
    x, y = np.asarray(events["x"], dtype=np.int64), np.asarray(events["y"], dtype=np.int64)
    if downsample == "sum" and (h, w) != (H, W):
        if len(x) and (x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H):
            raise ValueError(f"event coordinates outside the {H}x{W} sensor: x in "
                             f"[{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}]")
        return accumulate_frames(x * w // W, y * h // H, events["p"], index, T, h, w)
    frames = accumulate_frames(x, y, events["p"], index, T, H, W)
    return downsample_frames(frames, (h, w), downsample)
