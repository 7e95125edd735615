"""The stage layer below experiments and the audit: resumable stages, each cached under a key of its inputs and of the code that computes them.

A stage computes into a private temp folder; its result JSON is written last and the folder is then
renamed into place in one atomic step. So a run killed at any moment (even SIGKILL) leaves either a
finished stage or a temp folder that a later run deletes: never a half-written stage that looks done. A
finished stage records the sha256 of every file it wrote and of its result; a stage folder whose result.json
is missing or damaged, or whose files or result no longer match those hashes, is moved aside and recomputed.
One run at a time holds an output folder (a lock file), so a second run into the same folder stops with a
clear error.
"""

from __future__ import annotations

import ast
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from . import io as io_module
from .errors import OutputError
from .io import as_stored_json, file_digest, output_folder, safe_name, source_hash, stable_hash, write_json_atomic
from .parallel import World, broadcast_object

RESULT = "result.json"
PACKAGE = __name__.split(".")[0]
LOCK = ".blindspots.lock"
BROKEN = ".broken"  # stage folders with a missing, damaged or altered result.json or file are moved here
# A stage is keyed by the parts its kind runs (StageSource), or by the whole package for a stage of no declared kind;
# never by code no stage runs: the command line and the report (rendered again from the stage results on every run,
# with the findings and the figures drawn after the stages), so a reworded report never retrains a model. A figure a
# stage draws into its folder (L-BFGS examples, §3's unit grids, FGSM examples) is that stage's work and keyed with
# it: tests/test_stage_sources.py fails if a traced stage runs a file listed here, save one exception: the published
# numbers (report/reference.py, published.json), which the L-BFGS stage's histogram marks with a line — a corrected
# paper value must not re-run the attacks, so that line can lag until the stage runs again.
STAGE_SOURCE_EXCLUDE = ("cli", "report/document.py", "report/format.py", "report/publish.py", "report/reference.py",
                        "report/published.json", "audit/report.py",
                        "audit/figures.py", "experiments/szegedy2014/report.py", "experiments/szegedy2014/findings.py",
                        "experiments/goodfellow2015/report.py", "experiments/goodfellow2015/findings.py")


def stage_source_hash(source: StageSource | None = None) -> str:
    """Hash of the package source a stage's result depends on (part of its key): `source`'s parts, or the whole
    package for a stage of no declared kind; never the parts in STAGE_SOURCE_EXCLUDE."""
    if source is None:
        return source_hash(exclude=STAGE_SOURCE_EXCLUDE)
    return source_hash(*source.parts(), exclude=STAGE_SOURCE_EXCLUDE)


@dataclass(frozen=True)
class StageSource:
    """What one kind of stage runs: `modules` (dotted names: the modules whose functions its compute calls) with all
    they reach through imports (import_closure), and `files` (package-relative, e.g. the experiment module holding
    the stage's compute, hashed by their bytes alone, its imports not followed). The stage machinery itself is
    always part of it. A stage that reads another stage's output under a key without that stage's source (e.g. its
    inputs rather than its result's hash) must include that stage's parts (`with_`). tests/test_stage_sources.py
    traces the files a real tiny run of each kind executes and checks they lie in these parts."""

    modules: tuple[str, ...]
    files: tuple[str, ...] = ()

    def parts(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.files) | import_closure((*self.modules, __name__))))

    def with_(self, *others: StageSource, modules: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> StageSource:
        """This kind's parts together with `others`' and the given extra modules and files."""
        every = (self, *others, StageSource(modules, files))
        return StageSource(tuple(dict.fromkeys(m for o in every for m in o.modules)),
                           tuple(dict.fromkeys(f for o in every for f in o.files)))


def import_closure(modules: tuple[str, ...]) -> frozenset[str]:
    """Package-relative files of what running `modules` can reach through imports (see _import_closure)."""
    return _import_closure(PACKAGE, tuple(sorted(modules)), str(io_module.SOURCE_ROOT))


# Modules that dispatch by name to many others (attacks.registry imports every attack): reached through an import,
# their file is hashed but their imports are not followed, so a stage that calls through one lists the entries it
# reaches in its kind's `modules` and a change to another attack leaves it alone; named in a kind's `modules`
# itself, one is followed in full (the stage may call any entry). tests/test_stage_sources.py keeps this honest.
OPAQUE = ("blindspots.attacks.registry",)


@functools.cache
def _import_closure(package: str, modules: tuple[str, ...], root_text: str) -> frozenset[str]:
    """The files reached from `modules` by following every import statement of the package (at module level or
    inside a function: a lazily imported module runs as much as an eager one), transitively:
    - `import pkg.mod`, `from pkg import mod` (a submodule): mod is followed;
    - `from pkg import name`, where pkg's __init__.py re-exports name (`from .sub import name`): sub is followed
      (through chains of re-exports), not the rest of what the __init__.py imports;
    - `from mod import name` for a plain module, or a name a package's __init__.py defines itself (or `import *`):
      that whole module is followed.
    Every parent package's __init__.py of a followed module is hashed as a file, its own imports not followed
    unless the package is followed for something it defines. An OPAQUE module is hashed, and followed only when it
    is one of `modules`."""
    root = Path(root_text)

    def file_of(name: str) -> Path | None:
        if name.split(".")[0] != package:
            return None
        base = root.joinpath(*name.split(".")[1:])
        return next((f for f in (base / "__init__.py", base.with_suffix(".py")) if f.is_file()), None)

    trees: dict[str, ast.Module] = {}

    def tree(name: str) -> ast.Module:
        """Module `name` parsed, once per closure (a package's __init__.py is read for every name imported from it)."""
        if name not in trees:
            f = file_of(name)
            assert f is not None
            trees[name] = ast.parse(f.read_text(encoding="utf-8"))
        return trees[name]

    def absolute(name: str, node: ast.ImportFrom) -> str:
        """The module a `from ... import` statement of module `name` names, relative levels resolved."""
        if not node.level:
            return node.module or ""
        f = file_of(name)
        assert f is not None
        here = (name if f.name == "__init__.py" else name.rsplit(".", 1)[0]).split(".")
        return ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))

    def imports(name: str) -> list[tuple[str, str | None]]:
        """(module, imported name or None for the module itself) of every import statement in module `name`."""
        out: list[tuple[str, str | None]] = []
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.Import):
                out += [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                out += [(absolute(name, node), a.name) for a in node.names]
        return out

    def reexports(name: str) -> dict[str, tuple[str, str]]:
        """Names a package's __init__.py binds by `from X import a [as b]` at module level: b -> (X, a)."""
        f = file_of(name)
        if f is None or f.name != "__init__.py":
            return {}
        out: dict[str, tuple[str, str]] = {}
        for node in _module_level(tree(name)):
            if isinstance(node, ast.ImportFrom) and node.level:
                out.update({a.asname or a.name: (absolute(name, node), a.name) for a in node.names if a.name != "*"})
        return out

    def targets(module: str, name: str | None, depth: int = 0) -> list[str]:
        """The modules to follow for `from module import name` (name None: `import module`)."""
        if name is None or name == "*" or file_of(module) is None:
            return [module]
        source = reexports(module).get(name)  # a package's own binding comes first, as for Python's import
        if source is not None and depth < 20:
            return [module + ":file", *targets(*source, depth=depth + 1)]
        return [f"{module}.{name}" if file_of(f"{module}.{name}") is not None else module]

    hashed: set[str] = set()
    followed: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name.endswith(":file"):
            hashed.add(name[: -len(":file")])
            continue
        if name in followed or file_of(name) is None:
            continue
        followed.add(name)
        parts = name.split(".")
        hashed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        if name not in OPAQUE or name in modules:
            for module, imported in imports(name):
                todo += targets(module, imported)
    return frozenset(f.relative_to(root).as_posix() for f in map(file_of, hashed) if f is not None)


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements run when a module is imported: its body, into if/try/with/class blocks, not into functions."""
    out: list[ast.stmt] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for block in ("body", "orelse", "finalbody", "handlers"):
            todo += [n for n in getattr(node, block, []) if isinstance(n, (ast.stmt, ast.ExceptHandler))]
    return [n for n in out if isinstance(n, ast.stmt)]


@dataclass
class StageRecord:
    """One stage of a run: `wall_s` is its time in this run (reading it back, if cached), `compute_s` the time
    its computation took when it ran (this run or an earlier one)."""

    name: str
    key: str
    status: str  # "computed" | "cached"
    wall_s: float
    compute_s: float | None = None


@dataclass
class StageRunner:
    """Runs stages under `root/stages/<name>-<key>/`, skipping those already finished; holds root's lock."""

    root: Path
    log: list[StageRecord] = field(default_factory=list)
    announce: Callable[[str], None] = print
    sources: Mapping[str, StageSource] = field(default_factory=dict)  # by the start of a stage's name

    def __post_init__(self) -> None:
        self.root = output_folder(self.root, "output folder")
        lock = _acquire(self.root)
        weakref.finalize(self, _release, lock)
        self.stage_dir = self.root / "stages"
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.stage_dir.glob(".tmp-*"):  # left by a killed run; a live run's are kept
            pid = stale.name.rsplit("-", 1)[-1]
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(stale, ignore_errors=True)

    def folder(self, name: str, inputs: dict[str, Any]) -> Path:
        """The stage's folder: its name and a hash of its inputs and of the code (a code fix recomputes it)."""
        source = self.source_hash(name)
        return self.stage_dir / f"{safe_name(name)}-{stable_hash({'inputs': inputs, 'source': source})}"

    def source_hash(self, name: str) -> str:
        """The stage's source hash: of the parts its kind runs (the longest `sources` prefix of its name), or of the
        whole package for a stage of no declared kind."""
        kinds = [k for k in self.sources if name.startswith(k)]
        return stage_source_hash(self.sources[max(kinds, key=len)] if kinds else None)

    def run(self, name: str, inputs: dict[str, Any], compute: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], Path]:
        """Return (result, folder) of a stage; compute(tmp_folder) -> result only if not done before."""
        final = self.folder(name, inputs)
        key = final.name.rsplit("-", 1)[1]
        if final.exists():
            t0 = time.perf_counter()
            result = self._finished(name, final)
            if result is not None:
                compute_s = result["_stage"].get("wall_s")
                self.log.append(StageRecord(name, key, "cached", time.perf_counter() - t0,
                                            compute_s if isinstance(compute_s, (int, float)) else None))
                self.announce(f"  [cached]   {name}")
                return result, final
        tmp = self.stage_dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.announce(f"  [running]  {name}")
        t0 = time.perf_counter()
        result = compute(tmp)
        wall = time.perf_counter() - t0
        result = {**result, "_stage": {"name": name, "inputs": inputs, "wall_s": round(wall, 3),
                                       "source_sha256": self.source_hash(name), "files": _file_hashes(tmp)}}
        result = as_stored_json(result)
        result["_stage"]["result_sha256"] = result_hash(result)
        write_json_atomic(tmp / RESULT, result)
        if final.exists():  # a concurrent run finished first; keep its result
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
        self.log.append(StageRecord(name, key, "computed", wall, wall))
        self.announce(f"  [done]     {name}  ({wall:.1f} s)")
        return json.loads((final / RESULT).read_text(encoding="utf-8")), final

    def cached(self, name: str, inputs: dict[str, Any]) -> bool:
        """Whether `run(name, inputs, ...)` would return a stored result without computing (nothing is moved)."""
        return _stored(self.folder(name, inputs))[0] is not None

    def _finished(self, name: str, final: Path) -> dict[str, Any] | None:
        """The stage's stored result; None (after moving the folder aside and saying so) if it is missing or
        damaged, so the stage is recomputed instead of crashing every rerun."""
        result, why = _stored(final)
        if result is not None:
            return result
        aside = self.stage_dir / BROKEN / f"{final.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.parent.mkdir(exist_ok=True)
        os.replace(final, aside)
        self.announce(f"  [redo]     {name}: its folder {why}; moved it to {aside.relative_to(self.root)}, recomputing")
        return None


def result_hash(result: Mapping[str, Any]) -> str:
    """sha256 of a stage result as stored (key order ignored), less the hash itself."""
    stage = {k: v for k, v in result["_stage"].items() if k != "result_sha256"}
    body = json.dumps({**result, "_stage": stage}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file a stage wrote into its folder, by path relative to it (result.json aside)."""
    return {f.relative_to(folder).as_posix(): file_digest(f, "sha256")
            for f in sorted(folder.rglob("*")) if f.is_file() and f.relative_to(folder).as_posix() != RESULT}


def _stored(final: Path) -> tuple[dict[str, Any] | None, str]:
    """A stage folder's stored result, or None and why it cannot be used: result.json missing, unreadable or not a
    stage record, or the result or any file the stage wrote no longer matching the sha256 recorded when it finished."""
    try:
        result = json.loads((final / RESULT).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "has no result.json"
    except (OSError, UnicodeDecodeError, ValueError):
        return None, "has a truncated or unreadable result.json"
    stage = result.get("_stage") if isinstance(result, dict) else None
    if not isinstance(stage, dict):
        return None, "has a result.json that is not a stage record"
    files = stage.get("files")
    if not isinstance(stage.get("result_sha256"), str) or not isinstance(files, dict):
        return None, "has a result.json without the sha256 record of a finished stage"
    try:
        altered = result_hash(result) != stage["result_sha256"]
    except (TypeError, ValueError):
        altered = True
    if altered:
        return None, "has a result.json altered since the stage finished (its sha256 differs)"
    for rel, digest in sorted(files.items()):
        path = final / rel
        try:
            if file_digest(path, "sha256") != digest:
                return None, f"has a file {rel} altered since the stage finished (its sha256 differs)"
        except FileNotFoundError:
            return None, f"lacks the file {rel} the stage wrote"
        except OSError:
            return None, f"has an unreadable file {rel}"
    return result, ""


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Output-folder locks held by this process: resolved folder -> [lock file descriptor, number of runners].
# Runners of one process share the lock; it is released when the last of them is garbage-collected (or the
# process exits, however it ends: the kernel drops a flock with its last descriptor).
_HELD: dict[str, list[int]] = {}


def _acquire(root: Path) -> str:
    key = str(root.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputError(f"{root} is in use by another blindspots run (pid {other}); wait for it to finish "
                          "or give this run another --out folder.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = [fd, 1]
    return key


def _release(key: str) -> None:
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _HELD[key]
        os.close(entry[0])


@contextmanager
def holding_output(path: str | os.PathLike[str], what: str = "--out") -> Iterator[Path]:
    """`path` as an output folder held for the block with the lock a reproduction holds: a second command into it
    stops with an error naming the other's pid."""
    folder = output_folder(path, what)
    key = _acquire(folder)
    try:
        yield folder
    finally:
        _release(key)


def superseded_stages(root: str | os.PathLike[str]) -> list[Path]:
    """Stage folders under root/stages/ that the latest finished run (the `stages` list of root/results.json) did not
    use and that are older than that results.json (a later, unfinished run's stages are kept); .broken/ and
    in-progress temp folders are never listed."""
    results = Path(root) / "results.json"
    try:
        listed = json.loads(results.read_text(encoding="utf-8"))["stages"]
        used = {f"{safe_name(s['name'])}-{s['key']}" for s in listed}
        written = results.stat().st_mtime
    except FileNotFoundError:
        raise OutputError(f"{results} does not exist: no finished run says which stages are current; "
                          "run the command to its end first.") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputError(f"{results} is unreadable or lists no stages; rerun the command that wrote it.") from None
    stage_dir = Path(root) / "stages"
    if not stage_dir.is_dir():
        return []
    return sorted(f for f in stage_dir.iterdir() if f.is_dir() and not f.name.startswith(".") and f.name not in used
                  and f.stat().st_mtime <= written)


def collect_garbage(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the superseded stage folders of root (see superseded_stages), holding root's lock; returns them."""
    with holding_output(root, "folder") as folder:
        gone = superseded_stages(folder)
        for f in gone:
            shutil.rmtree(f)
    return gone


def run_stage(runner: Any, world: World | None, name: str, inputs: dict[str, Any],
              compute: Callable[[Path], dict[str, Any]], *, collective: bool = True) -> tuple[dict[str, Any], Path]:
    """A resumable stage under torchrun: rank 0's StageRunner (`runner`; ignored on the other ranks, which hold no
    lock) decides whether the stage is cached; if not, every rank runs compute(folder) (a collective compute, e.g.
    one built on sharded_map; the other ranks get a throw-away folder) or, with collective=False, rank 0 alone does,
    and rank 0 stores it. Every rank returns rank 0's (result, stage folder). One process: runner.run."""
    if world is None or not world.distributed:
        return runner.run(name, inputs, compute)
    cached = bool(broadcast_object(runner.cached(name, inputs) if world.is_main else None, world))
    if world.is_main:
        def guarded(folder: Path) -> dict[str, Any]:
            if cached and collective:  # the cache vanished since the check: the other ranks are not computing
                raise RuntimeError(f"stage {name!r} was cached a moment ago and no longer is; rerun")
            return compute(folder)

        result, folder = runner.run(name, inputs, guarded)
        payload: object = {"result": result, "folder": str(folder)}
    else:
        if not cached and collective:
            with tempfile.TemporaryDirectory(prefix="blindspots-rank") as tmp:
                compute(Path(tmp))
        payload = None
    shared = broadcast_object(payload, world)
    assert isinstance(shared, dict)
    return shared["result"], Path(shared["folder"])
