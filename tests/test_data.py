"""tssd_fast.data: readers on tiny files in the real formats, frame integration, cache, splits,
transforms, synthetic / digits datasets and the loaders."""
import importlib
import os
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import _fake_datasets as fake  # noqa: E402

from tssd_fast import data  # noqa: E402
from tssd_fast.data import transforms as tr  # noqa: E402



def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


HAS_SKLEARN = _importable("sklearn.datasets")
HAS_PIL = _importable("PIL.Image")


def assert_events_equal(got: dict, want: dict):
    assert set(got) == {"t", "x", "y", "p"}
    for k in "txyp":
        np.testing.assert_array_equal(got[k], np.asarray(want[k]), err_msg=k)


# --- CIFAR ----------------------------------------------------------------------------------

def test_cifar10_reads_pickles_exactly(tmp_path):
    want = fake.write_cifar10(tmp_path)
    for split in ("train", "test"):
        ds = data.build_dataset("cifar10", tmp_path, split, augment=False)
        images, labels = want[split]
        assert len(ds) == len(labels) == (10 if split == "train" else 3)
        assert (ds.num_classes, ds.in_channels, ds.input_size, ds.kind) == (10, 3, (32, 32),
                                                                            "static")
        mean = torch.tensor(tr.CIFAR10_MEAN).view(3, 1, 1)
        std = torch.tensor(tr.CIFAR10_STD).view(3, 1, 1)
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
            expected = (torch.from_numpy(images[i]).float() * (1 / 255) - mean) / std
            assert torch.equal(x, expected)
            assert y == labels[i] and isinstance(y, int)
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10
    # data_dir may also be the pickle folder itself
    assert len(data.CIFAR10(tmp_path / "cifar-10-batches-py", "test")) == 3


def test_cifar100_fine_labels(tmp_path):
    want = fake.write_cifar100(tmp_path)
    ds = data.build_dataset("cifar100", tmp_path, "train", augment=False)
    assert len(ds) == 4 and ds.num_classes == 100
    assert [ds[i][1] for i in range(4)] == list(want["train"][1])
    assert torch.equal(ds.images, torch.from_numpy(want["train"][0]))
    assert ds.classes[:2] == ["c0", "c1"]


def test_cifar_missing_batch_names_file(tmp_path):
    fake.write_cifar10(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as e:
        data.CIFAR10(tmp_path, "train")
    assert str(e.value) == (f"CIFAR-10 batch not found: {missing} (expected the python-pickle "
                            f"folder from https://www.cs.toronto.edu/~kriz/cifar.html)")
    data.CIFAR10(tmp_path, "test")  # the test split does not need it


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        data.CIFAR100(tmp_path, "train")


def test_cifar_corrupt_batch_names_file(tmp_path):
    fake.write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match="CIFAR-10 batch is corrupt: .*test_batch"):
        data.CIFAR10(tmp_path, "test")
    with open(bad, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch has data of shape \(2, 10\)"):
        data.CIFAR10(tmp_path, "test")


def test_random_crop_flip_exact_under_generator():
    img = torch.arange(3 * 32 * 32, dtype=torch.float32).view(3, 32, 32)
    for seed in range(5):
        crop = tr.RandomCrop(32, padding=4, generator=torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        i = int(torch.randint(0, 40 - 32 + 1, (1,), generator=g))
        j = int(torch.randint(0, 40 - 32 + 1, (1,), generator=g))
        padded = F.pad(img, (4, 4, 4, 4))
        assert torch.equal(crop(img), padded[:, i:i + 32, j:j + 32])
    flip = tr.RandomHorizontalFlip(p=1.0)
    assert torch.equal(flip(img), img.flip(-1))
    assert torch.equal(tr.RandomHorizontalFlip(p=0.0)(img), img)


def test_cifar_train_transform_is_a_padded_crop_and_repeatable(tmp_path):
    fake.write_cifar10(tmp_path)
    ds = data.CIFAR10(tmp_path, "train")  # augmenting by default
    plain = data.CIFAR10(tmp_path, "train", augment=False)
    torch.manual_seed(123)
    a = [ds[0][0] for _ in range(12)]
    torch.manual_seed(123)
    b = [ds[0][0] for _ in range(12)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert len({u.sum().item() for u in a}) > 1  # the crops vary
    # each output is a 32x32 window of the zero-padded (then normalized) image, maybe flipped
    mean = torch.tensor(tr.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(tr.CIFAR10_STD).view(3, 1, 1)
    padded = (F.pad(plain.images[0].float() * (1 / 255), (4,) * 4) - mean) / std
    windows = [padded[:, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
    for x in a:
        assert x.shape == (3, 32, 32)
        assert any(torch.allclose(x, w, rtol=0, atol=1e-6) or
                   torch.allclose(x, w.flip(-1), rtol=0, atol=1e-6) for w in windows)


def test_direct_encode():
    x = torch.randn(2, 3, 4, 4)
    y = tr.direct_encode(x, 5)
    assert y.shape == (2, 5, 3, 4, 4) and all(torch.equal(y[:, t], x) for t in range(5))
    assert tr.direct_encode(x, 3, dim=0).shape == (3, 2, 3, 4, 4)


# --- AEDAT 2.0 ------------------------------------------------------------------------------

def test_aedat2_cifar10dvs_decoding_exact(tmp_path):
    want = {"t": np.array([5, 17, 17, 1000, 4_000_000_000], np.int64),
            "x": np.array([0, 127, 64, 3, 100]), "y": np.array([0, 127, 1, 126, 50]),
            "p": np.array([0, 1, 1, 0, 1], np.uint8)}
    path = tmp_path / "cifar10_cat_0.aedat"
    fake.write_aedat2(path, fake.cifar10dvs_address(want["x"], want["y"], want["p"]), want["t"])
    assert_events_equal(data.read_cifar10dvs_aedat(path), want)
    addr, ts = data.read_aedat2_raw(path)
    assert addr.tolist() == fake.cifar10dvs_address(want["x"], want["y"], want["p"]).tolist()
    assert ts.tolist() == want["t"].tolist()
    # the address bits by hand: x=3, y=126, p=0 -> sensor y = 124 (bits 8-14), sensor x = 1
    # (bits 1-7), polarity bit 1
    assert int(addr[3]) == (124 << 8) | (1 << 1) | 1


def test_aedat2_truncated_and_missing(tmp_path):
    path = tmp_path / "cifar10_dog_1.aedat"
    header_len = fake.write_aedat2(path, [1, 2, 3], [10, 20, 30])
    path.write_bytes(path.read_bytes() + b"\x00\x01\x02")
    with pytest.raises(ValueError) as e:
        data.read_cifar10dvs_aedat(path)
    assert str(path) in str(e.value) and f"byte offset {header_len + 24}" in str(e.value)
    with pytest.raises(FileNotFoundError, match="AEDAT 2.0 file not found: .*nothing.aedat"):
        data.read_cifar10dvs_aedat(tmp_path / "nothing.aedat")
    wrong = tmp_path / "v3.aedat"
    wrong.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
    with pytest.raises(ValueError, match="not an AEDAT 2 file"):
        data.read_aedat2_raw(wrong)


# --- AEDAT 3.1 ------------------------------------------------------------------------------

def test_aedat31_polarity_decoding_exact(tmp_path):
    rng = np.random.default_rng(3)
    ev = fake.random_events(rng, 23, t0=1000)
    ev["x"][:2], ev["y"][:2] = [0, 127], [127, 0]
    path = tmp_path / "user01_fluorescent.aedat"
    fake.write_aedat31(path, ev, per_packet=5)  # 5 packets + a special packet
    assert_events_equal(data.read_aedat31_polarity(path), ev)
    # timestamps past 2^31 use the packet's eventTSOverflow
    late = {k: v[:4].copy() for k, v in ev.items()}
    late["t"] = np.array([2**31 + 5, 2**31 + 9, 2**31 + 9, 2**31 + 40], np.int64)
    fake.write_aedat31(path, late, per_packet=4)
    assert_events_equal(data.read_aedat31_polarity(path), late)


def test_aedat31_truncated_names_file_and_offset(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "user02_led.aedat"
    fake.write_aedat31(path, fake.random_events(rng, 10), per_packet=5)
    full = path.read_bytes()
    header = len(fake.AEDAT31_HEADER)
    special = 28 + 16
    last_packet = header + special + (28 + 40)  # offset of the second polarity packet
    path.write_bytes(full[:-3])
    with pytest.raises(ValueError) as e:
        data.read_aedat31_polarity(path)
    msg = str(e.value)
    assert str(path) in msg and f"packet at byte offset {last_packet}" in msg
    assert "40 bytes" in msg and "37 bytes remain" in msg
    path.write_bytes(full[:last_packet + 10])
    with pytest.raises(ValueError, match=f"packet header at byte offset {last_packet} has 10 of "
                                         f"28 bytes"):
        data.read_aedat31_polarity(path)
    path.write_bytes(b"#!AER-DAT2.0\r\n")
    with pytest.raises(ValueError, match="not an AEDAT 3.1 file"):
        data.read_aedat31_polarity(path)


# --- events_np ------------------------------------------------------------------------------

def test_events_npz_reader(tmp_path):
    ev = fake.random_events(np.random.default_rng(5), 9)
    fake.write_events_np(tmp_path / "s.npz", ev)
    assert_events_equal(data.load_events_npz(tmp_path / "s.npz"), ev)
    np.savez(tmp_path / "bad.npz", t=ev["t"], x=ev["x"])
    with pytest.raises(ValueError, match=r"bad.npz lacks keys \['y', 'p'\]"):
        data.load_events_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz is corrupt"):
        data.load_events_npz(tmp_path / "junk.npz")


# --- frame integration ----------------------------------------------------------------------

def test_frame_index_number_matches_spikingjelly_rule():
    t = np.arange(10) * 7
    assert data.frame_index(t, 3, "number").tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert data.frame_index(t, 5, "number").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert data.frame_index(t[:2], 3, "number").tolist() == [2, 2]  # N < T: all in the last


def test_frame_index_time_and_window():
    t = np.array([100, 101, 102, 105, 106, 109, 110])
    # dt = (110 - 100) // 3 = 3: [100,103) [103,106) [106, ...)
    assert data.frame_index(t, 3, "time").tolist() == [0, 0, 0, 1, 2, 2, 2]
    # empty middle window stays empty (SpikingJelly would raise here)
    assert data.frame_index(np.array([0, 1, 9]), 3, "time").tolist() == [0, 0, 2]
    assert data.frame_index(np.array([7, 7, 7]), 2, "time").tolist() == [1, 1, 1]
    # fixed 4 us windows from the first event; events after T windows are dropped
    assert data.frame_index(t, 2, "window", window_us=4).tolist() == [0, 0, 0, 1, 1, -1, -1]
    with pytest.raises(ValueError, match="window_us"):
        data.frame_index(t, 2, "window")
    with pytest.raises(ValueError, match="split_by"):
        data.frame_index(t, 2, "bogus")


def test_integrate_events_hand_computed():
    ev = {"t": np.array([0, 1, 2, 3, 4, 5]), "x": np.array([0, 0, 3, 1, 1, 1]),
          "y": np.array([0, 0, 2, 3, 3, 3]), "p": np.array([1, 1, 0, 0, 1, 0], np.uint8)}
    f = data.integrate_events(ev, 2, "number", sensor_size=(4, 4))
    assert f.shape == (2, 2, 4, 4) and f.dtype == np.float32
    want = np.zeros((2, 2, 4, 4), np.float32)
    want[0, 1, 0, 0] = 2  # events 0, 1
    want[0, 0, 2, 3] = 1  # event 2 (y=2, x=3)
    want[1, 0, 3, 1] = 2  # events 3, 5
    want[1, 1, 3, 1] = 1  # event 4
    np.testing.assert_array_equal(f, want)
    f = data.integrate_events(ev, 3, "time", sensor_size=(4, 4))  # dt = 1: bins 0,1,2,2,2,2
    assert f.sum(axis=(1, 2, 3)).tolist() == [1, 1, 4]
    assert data.integrate_events({k: v[:0] for k, v in ev.items()}, 2,
                                 sensor_size=(4, 4)).sum() == 0
    bad = dict(ev, x=np.array([0, 0, 4, 1, 1, 1]))
    with pytest.raises(ValueError, match="outside the 4x4"):
        data.integrate_events(bad, 2, sensor_size=(4, 4))


def test_downsampling_modes():
    frames = np.arange(2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4)
    area = data.downsample_frames(frames, (2, 2), "area")
    assert area[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # means of 2x2 blocks
    np.testing.assert_array_equal(data.downsample_frames(frames, (2, 2), "sum"), area * 4)
    bil = data.downsample_frames(frames, (3, 3), "bilinear")
    np.testing.assert_array_equal(bil, F.interpolate(torch.from_numpy(frames), size=(3, 3),
                                                     mode="bilinear", align_corners=False))
    np.testing.assert_array_equal(data.downsample_frames(frames, (4, 4), "area"), frames)
    # 128 -> 48 'sum' bins event coordinates: pixel (y, x) -> (y*48//128, x*48//128)
    ev = {"t": np.arange(4), "x": np.array([0, 2, 3, 127]), "y": np.array([127, 127, 5, 8]),
          "p": np.array([0, 0, 1, 1], np.uint8)}
    f = data.integrate_events(ev, 1, size=(48, 48), downsample="sum")
    want = np.zeros((1, 2, 48, 48), np.float32)
    want[0, 0, 47, 0] = 2
    want[0, 1, 1, 1] = 1
    want[0, 1, 3, 47] = 1
    np.testing.assert_array_equal(f, want)
    # 'area' keeps the mean: 128x128 -> 32x32 is 4x4 mean pooling
    one = data.integrate_events({k: v[:1] for k, v in ev.items()}, 1, size=(32, 32))
    assert one[0, 0, 31, 0] == 1 / 16 and one.sum() == 1 / 16


# --- CIFAR10-DVS dataset --------------------------------------------------------------------

def test_cifar10dvs_frames_cache_and_split(tmp_path):
    written = fake.write_cifar10dvs(tmp_path, per_class=10)
    cache = tmp_path / "cache"
    train = data.build_dataset("cifar10-dvs", tmp_path, "train", T=3, cache_dir=cache,
                               show_progress=False)
    assert (train.num_classes, train.in_channels, train.input_size, train.kind) == \
        (10, 2, (48, 48), "dvs")
    assert len(train) == 90 and train.n_integrated == 90  # prebuilt
    test = data.build_dataset("cifar10-dvs", tmp_path, "test", T=3, cache_dir=cache,
                              show_progress=False)
    assert len(test) == 10 and test.n_integrated == 10
    assert sorted(train.labels + test.labels) == sorted(list(range(10)) * 10)
    assert [train.labels.count(c) for c in range(10)] == [9] * 10
    keys = {s.key for s in train.samples} | {s.key for s in test.samples}
    assert keys == set(written)
    # each sample's frames are its own events integrated
    for ds in (train, test):
        for i in (0, len(ds) - 1):
            s = ds.samples[i]
            want = data.integrate_events(written[s.key], 3, "number", size=(48, 48))
            x, y = ds[i]
            assert y == s.label and x.shape == (3, 2, 48, 48)
            np.testing.assert_array_equal(x.numpy(), want)
    files = sorted((cache / "cifar10-dvs-aedat" / "T3_number_48x48_area").rglob("*.npz"))
    assert len(files) == 100
    mtimes = [f.stat().st_mtime_ns for f in files]
    # a second dataset reads the cache: nothing is integrated, no file rewritten
    again = data.build_dataset("cifar10-dvs", tmp_path, "train", T=3, cache_dir=cache,
                               show_progress=False)
    x, _ = again[5]
    assert again.n_integrated == 0
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert torch.equal(x, train[5][0])
    assert not list(cache.rglob("*.tmp"))
    # the 9:1 split is deterministic and depends on the seed only
    same = data.build_dataset("cifar10-dvs", tmp_path, "test", T=3, cache_dir=None)
    other = data.build_dataset("cifar10-dvs", tmp_path, "test", T=3, cache_dir=None,
                               split_seed=1)
    assert [s.key for s in same.samples] == [s.key for s in test.samples]
    assert [s.key for s in other.samples] != [s.key for s in test.samples]
    tebn = data.build_dataset("cifar10-dvs", tmp_path, "test", T=3, cache_dir=None,
                              split_method="tebn")
    assert [s.key for s in tebn.samples] == [f"{c}/cifar10_{c}_0" for c in
                                             fake.CIFAR10DVS_CLASSES]


def test_split_per_class_exact():
    labels = [0] * 10 + [1] * 20
    tr_idx = data.split_per_class(labels, "train", 0.9, seed=0)
    te_idx = data.split_per_class(labels, "test", 0.9, seed=0)
    assert len(tr_idx) == 9 + 18 and len(te_idx) == 1 + 2
    assert sorted(tr_idx + te_idx) == list(range(30))
    rng = np.random.default_rng(0)
    perm0, perm1 = rng.permutation(10), 10 + rng.permutation(20)
    assert te_idx == sorted([int(perm0[9])] + [int(v) for v in perm1[18:]])


def test_cifar10dvs_events_np_source_matches_aedat(tmp_path):
    fake.write_cifar10dvs(tmp_path / "a", per_class=10, n_events=30)
    fake.write_cifar10dvs(tmp_path / "b", per_class=10, n_events=30, events_np=True)
    a = data.CIFAR10DVS(tmp_path / "a", "test", T=2, cache_dir=None)
    b = data.CIFAR10DVS(tmp_path / "b", "test", T=2, cache_dir=None)
    assert (a.source, b.source) == ("aedat", "events_np")
    assert [s.key for s in a.samples] == [s.key for s in b.samples]
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]


def test_cifar10dvs_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR10-DVS not found under .*airplane"):
        data.CIFAR10DVS(tmp_path, "train", cache_dir=None)
    fake.write_cifar10dvs(tmp_path, per_class=10, n_events=5)
    for f in (tmp_path / "ship").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="class folder missing or empty: .*ship"):
        data.CIFAR10DVS(tmp_path, "train", cache_dir=None)
    fake.write_cifar10dvs(tmp_path, per_class=10, n_events=5)
    bad = tmp_path / "bird" / "cifar10_bird_4.aedat"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(ValueError, match="Truncated AEDAT 2.0 file .*cifar10_bird_4.aedat"):
        data.CIFAR10DVS(tmp_path, "train", cache_dir=tmp_path / "c", show_progress=False)


def test_teacher_T_pairs_and_window_prefix(tmp_path):
    fake.write_cifar10dvs(tmp_path, per_class=10, n_events=80)
    ds = data.build_dataset("cifar10-dvs", tmp_path, "test", T=2, teacher_T=4,
                            split_by="window", window_us=300, cache_dir=tmp_path / "c",
                            show_progress=False)
    assert ds.n_integrated == 2 * len(ds)  # both settings prebuilt
    (x, xt), y = ds[3]
    assert x.shape == (2, 2, 48, 48) and xt.shape == (4, 2, 48, 48)
    assert torch.equal(x, xt[:2])  # fixed windows: T frames are a prefix of T' frames
    assert torch.equal(ds.frames(3, 4), xt)
    assert (tmp_path / "c" / "cifar10-dvs-aedat" / "T4_window300us_48x48_area").is_dir()
    # 'number' frames for T and T' integrate the same events differently, same total count
    num = data.CIFAR10DVS(tmp_path, "test", T=2, teacher_T=3, cache_dir=None)
    (x, xt), _ = num[0]
    assert x.sum() == xt.sum() and not torch.equal(x[:2], xt[:2])


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    fake.write_cifar10dvs(tmp_path, per_class=10, n_events=20)
    ds = data.CIFAR10DVS(tmp_path, "test", T=2, cache_dir=tmp_path / "c", show_progress=False)
    good = ds[0][0]
    ds.cache(2).path(ds.samples[0].key).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable frame cache file"):
        assert torch.equal(ds[0][0], good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(ds[0][0], good)  # rewritten


# --- DVS128 Gesture -------------------------------------------------------------------------

def _gesture_recordings(rng):
    recs = {}
    for r, name in enumerate(("user01_fluorescent", "user01_led", "user24_natural")):
        ev = fake.random_events(rng, 120, t0=1_000_000 * (r + 1))
        t = ev["t"]
        cut = [int(t[10]), int(t[40]), int(t[41]), int(t[80]), int(t[90]), int(t[119]) + 1]
        rows = [(1, cut[0], cut[1]), (8, cut[2], cut[3]), (8, cut[4], cut[5])]
        if r == 1:
            rows = [(11, cut[0], cut[3])]
        recs[name] = (ev, rows)
    return recs


def test_dvs_gesture_aedat(tmp_path):
    recs = _gesture_recordings(np.random.default_rng(7))
    root = tmp_path / "DvsGesture"
    fake.write_gesture(root, recs, ["user01_fluorescent", "user01_led"], ["user24_natural"])
    train = data.build_dataset("dvs-gesture", tmp_path, "train", T=4, cache_dir=tmp_path / "c",
                               show_progress=False)
    assert (train.num_classes, train.in_channels, train.input_size, train.kind) == \
        (11, 2, (48, 48), "dvs")
    assert [s.key for s in train.samples] == ["0/user01_fluorescent_0", "7/user01_fluorescent_0",
                                              "7/user01_fluorescent_1", "10/user01_led_0"]
    assert train.labels == [0, 7, 7, 10]
    for i, (name, row) in enumerate([("user01_fluorescent", 0), ("user01_fluorescent", 1),
                                     ("user01_fluorescent", 2), ("user01_led", 0)]):
        ev, rows = recs[name]
        _, start, end = rows[row]
        m = (ev["t"] >= start) & (ev["t"] < end)
        assert_events_equal(train.events(i), {k: v[m] for k, v in ev.items()})
        x, y = train[i]
        np.testing.assert_array_equal(
            x.numpy(), data.integrate_events({k: v[m] for k, v in ev.items()}, 4, size=(48, 48)))
    test = data.DVSGesture(tmp_path, "test", T=4, cache_dir=None)
    assert len(test) == 3 and test.labels == [0, 7, 7]
    # the events_np layout gives the same frames
    for s in train.samples:
        i = train.samples.index(s)
        fake.write_events_np(tmp_path / "sj" / "events_np" / "train" / f"{s.key}.npz",
                             train.events(i))
    (tmp_path / "sj" / "events_np" / "test").mkdir()
    sj = data.DVSGesture(tmp_path / "sj", "train", T=4, cache_dir=None)
    assert sj.source == "events_np" and len(sj) == 4
    by_key = {s.key: i for i, s in enumerate(sj.samples)}
    for i, s in enumerate(train.samples):
        assert torch.equal(sj[by_key[s.key]][0], train[i][0])


def test_dvs_gesture_errors_name_files(tmp_path):
    recs = _gesture_recordings(np.random.default_rng(8))
    root = tmp_path / "DvsGesture"
    fake.write_gesture(root, recs, ["user01_fluorescent", "user01_led"], ["user24_natural"])
    (root / "user01_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,100\n")
    with pytest.raises(ValueError, match=r"user01_led_labels.csv, line 2"):
        data.DVSGesture(tmp_path, "train", cache_dir=None)
    (root / "user24_natural.aedat").unlink()
    with pytest.raises(FileNotFoundError, match="DVS Gesture recording not found: .*user24_natural"):
        data.DVSGesture(tmp_path, "test", cache_dir=None)
    fake.write_gesture(root, recs, ["user01_fluorescent"], ["user24_natural"])
    aedat = root / "user01_fluorescent.aedat"
    aedat.write_bytes(aedat.read_bytes()[:-4])
    with pytest.raises(ValueError, match="Truncated AEDAT 3.1 file .*user01_fluorescent.aedat"):
        data.DVSGesture(tmp_path, "train", cache_dir=tmp_path / "c", show_progress=False)
    with pytest.raises(FileNotFoundError, match="DVS128 Gesture not found"):
        data.DVSGesture(tmp_path / "nowhere", "train")


# --- synthetic, digits ----------------------------------------------------------------------

def test_synthetic_images_deterministic_and_learnable():
    ds = data.build_dataset("synthetic", split="train", num_samples=200, noise=1.0, seed=3)
    assert (ds.num_classes, ds.in_channels, ds.input_size, ds.kind) == (10, 3, (32, 32),
                                                                        "static")
    x, y = ds[17]
    assert x.shape == (3, 32, 32) and y == 7
    assert torch.equal(ds[17][0], data.SyntheticImages("train", 200, noise=1.0, seed=3)[17][0])
    assert not torch.equal(ds[17][0], data.SyntheticImages("test", 200, noise=1.0, seed=3)[17][0])
    assert not torch.equal(ds[17][0], data.SyntheticImages("train", 200, noise=1.0, seed=4)[17][0])
    # nearest class pattern classifies every sample: the task is learnable
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).flatten(1)
    pred = (xs @ ds.patterns.flatten(1).T).argmax(1)
    assert pred.tolist() == [i % 10 for i in range(len(ds))]


def test_synthetic_dvs_frames():
    ds = data.build_dataset("synthetic-dvs", split="test", T=3, teacher_T=5, num_samples=20,
                            size=16)
    assert (ds.num_classes, ds.in_channels, ds.input_size, ds.kind) == (10, 2, (16, 16), "dvs")
    (x, xt), y = ds[4]
    assert x.shape == (3, 2, 16, 16) and xt.shape == (5, 2, 16, 16) and y == 4
    assert set(torch.unique(xt).tolist()) <= {0.0, 1.0}
    assert torch.equal(x, xt[:3]) and torch.equal(ds.frames(4, 5), xt)
    assert not torch.equal(ds.frames(4), ds.frames(14))  # same class, different noise


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed (optional extra)")
def test_digits():
    train = data.build_dataset("digits", split="train")
    test = data.build_dataset("digits", split="test")
    assert len(train) + len(test) == 1797 and len(test) == 355
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert (train.num_classes, train.in_channels, train.input_size) == (10, 1, (8, 8))
    from sklearn.datasets import load_digits
    d = load_digits()
    keep = data.split_per_class(d.target, "test", 0.8, seed=0)
    assert torch.equal(test.images[:, 0], torch.from_numpy(d.images[keep] / 16.0).float())
    assert data.build_dataset("digits", split="test").labels.tolist() == d.target[keep].tolist()
    up = data.Digits("train", size=16, channels=3)
    assert up[0][0].shape == (3, 16, 16) and up.input_size == (16, 16)


# --- builders -------------------------------------------------------------------------------

def test_build_dataset_names_and_errors():
    assert data.canonical_name("CIFAR10_DVS") == "cifar10-dvs"
    assert data.canonical_name("DVS128-Gesture") == "dvs-gesture"
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.build_dataset("mnist")
    with pytest.raises(ValueError, match="pass data_dir"):
        data.build_dataset("cifar10")
    ds = data.build_dataset("synthetic", T=4, teacher_T=6, num_samples=5)  # ignored for static
    assert data.dataset_info(ds) == {"num_classes": 10, "in_channels": 3, "input_size": (32, 32),
                                     "kind": "static", "T": None, "teacher_T": None}


def test_build_loaders_shapes_and_distributed(tmp_path):
    train, test = data.build_loaders("synthetic-dvs", T=3, teacher_T=5, batch_size=8, workers=0,
                                     num_samples=30, size=8)
    (x, xt), y = next(iter(train))
    assert x.shape == (8, 3, 2, 8, 8) and xt.shape == (8, 5, 2, 8, 8) and y.dtype == torch.int64
    assert len(test.dataset) == 30 and test.dataset.teacher_T is None
    xb, _ = next(iter(test))
    assert xb.shape == (8, 3, 2, 8, 8)
    order = [y.tolist() for _, y in data.build_loaders("synthetic", batch_size=4, workers=0,
                                                        num_samples=12, seed=5)[0]]
    again = [y.tolist() for _, y in data.build_loaders("synthetic", batch_size=4, workers=0,
                                                        num_samples=12, seed=5)[0]]
    assert order == again
    shards = []
    for rank in (0, 1):
        tr_l, te_l = data.build_loaders("synthetic", batch_size=4, workers=0, distributed=True,
                                        world_size=2, rank=rank, num_samples=12)
        shards.append(list(tr_l.sampler))
        assert len(tr_l.sampler) == 6 and list(te_l.sampler) == list(range(rank, 12, 2))
    assert sorted(shards[0] + shards[1]) == list(range(12))
    with pytest.raises(RuntimeError, match="init_process_group"):
        data.build_loaders("synthetic", workers=0, distributed=True)


def test_build_loaders_cifar10dvs_with_workers(tmp_path):
    fake.write_cifar10dvs(tmp_path, per_class=10, n_events=20)
    train, test = data.build_loaders("cifar10-dvs", tmp_path, T=2, batch_size=16, workers=1,
                                     cache_dir=tmp_path / "c", show_progress=False, flip=True)
    x, y = next(iter(train))
    assert x.shape == (16, 2, 2, 48, 48) and train.dataset.flip and not test.dataset.flip
    assert sum(len(b[1]) for b in test) == 10


# --- ImageNet-style folders -----------------------------------------------------------------

@pytest.mark.skipif(not HAS_PIL, reason="pillow not installed (optional extra)")
def test_image_folder(tmp_path):
    from PIL import Image
    colors = {"n01": (255, 0, 0), "n02": (0, 0, 255)}
    for split in ("train", "val"):
        for c, rgb in colors.items():
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (300, 260), rgb).save(tmp_path / split / c / "a.JPEG", quality=100)
            Image.new("RGB", (200, 320), rgb).save(tmp_path / split / c / "b.png")
    (tmp_path / "train" / "n01" / "notes.txt").write_text("skip me")
    train = data.build_dataset("imagenet", tmp_path, "train")
    test = data.build_dataset("imagenet", tmp_path, "test")
    assert len(train) == 4 and train.classes == ["n01", "n02"] and train.num_classes == 2
    assert (train.in_channels, train.input_size, train.kind) == (3, (224, 224), "static")
    x, y = test[1]  # the PNG: a solid color is exact after resize + center crop
    assert x.shape == (3, 224, 224) and y == 0
    want = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(tr.IMAGENET_MEAN)) / \
        torch.tensor(tr.IMAGENET_STD)
    assert torch.allclose(x, want.view(3, 1, 1).expand(3, 224, 224), rtol=0, atol=1e-6)
    torch.manual_seed(0)
    a = train[3][0]
    torch.manual_seed(0)
    assert torch.equal(a, train[3][0]) and a.shape == (3, 224, 224)
    (tmp_path / "val" / "n02" / "c.jpg").write_bytes(b"not a jpeg")
    broken = data.ImageNet(tmp_path, "test")
    with pytest.raises(ValueError, match="cannot read image .*c.jpg"):
        broken[len(broken) - 1]
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        data.ImageNet(tmp_path / "missing", "train")


def test_random_resized_crop_box_bounds():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        left, top, w, h = data.imagenet.random_resized_crop_box(300, 200, generator=g)
        assert 0 <= left and left + w <= 300 and 0 <= top and top + h <= 200 and w > 0 and h > 0
    # impossible aspect (1000x10): falls back to a central crop clamped to ratio 4/3
    assert data.imagenet.random_resized_crop_box(1000, 10, generator=g) == (493, 0, 13, 10)


def test_importing_data_needs_no_optional_packages():
    code = ("import sys; sys.modules['PIL'] = None; sys.modules['sklearn'] = None; "
            "sys.modules['tqdm'] = None; import tssd_fast.data as d; "
            "ds = d.build_dataset('synthetic', num_samples=2); print(len(ds))")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(Path(__file__).parent.parent), env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
