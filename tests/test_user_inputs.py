"""A user's own model (module:factory or file.py:factory, safetensors weights) and data (.npz, IDX folders, the
built-in datasets): real MNIST, a real quickly trained model, and every refusal naming its problem."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from blindspots.cli.common import parse_floats
from blindspots.data import EvalData, load_eval_data, load_mnist, locate
from blindspots.errors import CheckpointError, DataError, InputError, SpecError
from blindspots.models import check_outputs, load_user_model, predict_logits

pytestmark = pytest.mark.usefixtures("one_thread")

NETS = '''
import torch
from torch import nn

SIZE = 3


def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def tiny_softmax():
    return nn.Sequential(tiny(), nn.Softmax(dim=1))


def tiny_log_softmax():
    return nn.Sequential(tiny(), nn.LogSoftmax(dim=1))


def wider():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 12))


def deeper():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10))


def one_output():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1))


def image_output():
    return nn.Sequential(nn.Conv2d(1, 10, 28))  # [N, 10, 1, 1], not flattened


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny()

    def forward(self, x):
        return self.net(x), x


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = tiny()

    def forward(self, x):
        return self.model(x)


class Family:
    @staticmethod
    def small():
        return tiny()


def broken():
    raise RuntimeError("no GPU named hal9000")


def not_a_model():
    return 42
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """bs_usernets.py with model factories, and `tiny` trained on 2,000 real MNIST images saved as safetensors."""
    folder = tmp_path_factory.mktemp("usernets")
    file = folder / "bs_usernets.py"
    file.write_text(NETS)
    torch.manual_seed(0)
    model = load_user_model(f"{file}:tiny").module.train()
    data = load_mnist("train", subset=2000)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        rows = torch.randint(0, len(data), (64,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(data.images[rows]), data.labels[rows]).backward()
        opt.step()
    model.eval()
    weights = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    test = load_mnist("test", subset=500)
    return SimpleNamespace(folder=folder, file=file, weights=weights, model=model, test=test)


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what importing a user's module changes: sys.path and the module cache entry."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    sys.modules.pop("bs_usernets", None)


def test_file_target_with_weights_gives_the_trained_logits(nets: SimpleNamespace) -> None:
    loaded = load_user_model(f"{nets.file}:tiny", str(nets.weights))
    assert loaded.name == "tiny" and loaded.source == f"{nets.file}:tiny" and not loaded.module.training
    assert loaded.weights_sha256 == hashlib.sha256(nets.weights.read_bytes()).hexdigest()
    logits = predict_logits(loaded.module, nets.test.images)
    assert torch.equal(logits, predict_logits(nets.model, nets.test.images))
    assert (logits.argmax(1) == nets.test.labels).float().mean() > 0.8  # a real, trained classifier


def test_module_target_imports_from_the_current_folder(nets: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                                       clean_imports: None) -> None:
    monkeypatch.chdir(nets.folder)
    loaded = load_user_model("bs_usernets:Family.small", str(nets.weights), name="mine")
    assert loaded.name == "mine" and loaded.weights == str(nets.weights)
    assert torch.equal(loaded.module(nets.test.images), nets.model(nets.test.images))
    assert load_user_model("bs_usernets:tiny").weights_sha256 is None  # the factory's own initialisation


def test_zoo_spec_with_weights_loads_them_into_the_zoo_architecture(linear: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "fc10.safetensors"
    save_file({k: v.contiguous() for k, v in linear.state_dict().items()}, str(path))
    loaded = load_user_model("FC10(1e-4)", str(path))
    assert loaded.name == "FC10(1e-4)"
    x = load_mnist("test", subset=100).images
    assert torch.equal(loaded.module(x), linear(x))


@pytest.mark.parametrize("target, error, match", [
    ("bs_no_such_module_xyz:make", InputError, r"cannot import module 'bs_no_such_module_xyz'.*No module named"),
    ("{file}:nope", InputError, r"has no attribute 'nope'; callables it has: .*tiny_softmax"),
    ("{file}:tiny_softmx", InputError, r"no attribute 'tiny_softmx' \(did you mean 'tiny_softmax'\?\)"),
    ("{file}:Family.nope", InputError, r"Family has no attribute 'nope'.*small"),
    ("{file}:SIZE", InputError, r"SIZE is a int, not callable"),
    ("{file}:broken", InputError, r"raised RuntimeError: no GPU named hal9000"),
    ("{file}:not_a_model", InputError, r"returned a int, not a torch.nn.Module"),
    ("{folder}/absent.py:tiny", InputError, r"absent.py is not a file"),
    ("{folder}/syntax.py:f", InputError, r"cannot import .*syntax.py \(SyntaxError"),
    ("FC7-11", SpecError, r"(?s)not an import target .*not a zoo spec.*must have 10 units.*Valid forms"),
    (":tiny", SpecError, r"need module:factory with both parts"),
])
def test_bad_model_targets_name_the_problem(nets: SimpleNamespace, clean_imports: None, target: str,
                                            error: type[Exception], match: str) -> None:
    (nets.folder / "syntax.py").write_text("def f(:\n")
    with pytest.raises(error, match=match):
        load_user_model(target.format(file=nets.file, folder=nets.folder))


def _save(tmp: Path, name: str, module: torch.nn.Module) -> Path:
    path = tmp / name
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def test_bad_weights_name_the_problem(nets: SimpleNamespace, tmp_path: Path) -> None:
    target = f"{nets.file}:tiny"
    good = nets.weights.read_bytes()
    torch.save(nets.model.state_dict(), tmp_path / "w.pt")
    shutil.copy(tmp_path / "w.pt", tmp_path / "renamed.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "half.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(4000))
    cases = {
        "absent.safetensors": (r"no such file", None),
        "w.pt": (r"a PyTorch pickle .*never loads one.*save_file\(model.state_dict\(\), \"w.safetensors\"\)", None),
        "renamed.safetensors": (r"a PyTorch pickle", None),
        "empty.safetensors": (r"the file is empty", None),
        "half.safetensors": (r"not a readable safetensors file, corrupt or truncated", None),
        "noise.safetensors": (r"not a readable safetensors file", None),
        "wider.safetensors": (r"2 with another shape \(file vs model\): 1.bias \(12,\) vs \(10,\), 1.weight", "wider"),
        "deeper.safetensors": (r"2 unexpected: 3.bias, 3.weight", "deeper"),
        "wrapped.safetensors": (r"2 missing: 1.bias, 1.weight; 2 unexpected: model.1.bias.*starts with 'model.'",
                                "Wrapped"),
    }
    for name, (match, factory) in cases.items():
        if factory is not None:
            _save(tmp_path, name, load_user_model(f"{nets.file}:{factory}").module)
        with pytest.raises(CheckpointError, match=match):
            load_user_model(target, str(tmp_path / name))
    with pytest.raises(CheckpointError, match=r"2 missing: 3.bias, 3.weight"):  # a file lacking tensors
        load_user_model(f"{nets.file}:deeper", str(nets.weights))


def test_check_outputs_accepts_logits_and_log_probabilities_and_refuses_probabilities(nets: SimpleNamespace) -> None:
    x, y = nets.test.images, nets.test.labels
    report = check_outputs(nets.model, x, 10, labels=y)
    assert report["kind"] == "logits" and report["n_classes"] == 10 and report["batch"] == 64
    assert report["deterministic"] and report["distinct_predictions"] >= 5
    log_probs = torch.nn.Sequential(nets.model, torch.nn.LogSoftmax(dim=1)).train()
    report = check_outputs(log_probs, x)
    assert report["kind"] == "log-probabilities" and report["logsumexp_max_abs"] < 1e-4
    assert log_probs.training  # the caller's mode is restored
    with pytest.raises(InputError, match="probabilities .*drop the final softmax"):
        check_outputs(torch.nn.Sequential(nets.model, torch.nn.Softmax(dim=1)), x)


@pytest.mark.parametrize("factory, kwargs, match", [
    ("one_output", {}, r"returns 1 output per image; return one logit per class"),
    ("image_output", {}, r"maps \(64, 1, 28, 28\) images to \(64, 10, 1, 1\).*flatten"),
    ("Pair", {}, r"returns a tuple, not a tensor"),
    ("tiny", {"n_classes": 12}, r"labels out of range: labels are ≥ 10 \(up to 11\).*labels must be 0\.\.9"),
    ("tiny", {"labels": torch.tensor([3, 10])}, r"labels out of range: 1 of 2 labels are ≥ 10 \(up to 10\)"),
    ("tiny", {"n_classes": 20, "labels": torch.arange(10, 20)}, r"labels out of range: 10 of 10 labels are ≥ 10"),
])
def test_check_outputs_refuses_outputs_attacks_would_misread(nets: SimpleNamespace, factory: str, kwargs: dict,
                                                             match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_outputs(load_user_model(f"{nets.file}:{factory}").module, nets.test.images, **kwargs)


def test_audit_of_labels_10_to_19_says_labels_out_of_range(nets: SimpleNamespace, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: real MNIST test images with their labels shifted to 10..19, audited through the command line."""
    from blindspots.cli import main

    x, y = _mnist_test_arrays()
    np.savez(tmp_path / "shifted.npz", x=x[:200, None], y=y[:200] + 10)
    out = tmp_path / "audit"
    rc = main(["audit", "--model", f"{nets.file}:tiny", "--weights", str(nets.weights),
               "--data", str(tmp_path / "shifted.npz"), "--images", "50", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "labels out of range" in err and "classes but the data has" not in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_check_outputs_refuses_non_finite_outputs(nets: SimpleNamespace) -> None:
    broken = load_user_model(f"{nets.file}:tiny").module
    with torch.no_grad():
        broken[1].weight[0, 0] = float("nan")  # class 0's logit is NaN for every image
    with pytest.raises(InputError, match=r"64 of 640 outputs are NaN or infinite on the first 64 images"):
        check_outputs(broken, nets.test.images)


def _mnist_test_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = load_mnist("test")
    return (data.images[:, 0] * 255).round().to(torch.uint8).numpy(), data.labels.numpy()


def test_npz_round_trip_matches_mnist_in_uint8_and_float(tmp_path: Path) -> None:
    x, y = _mnist_test_arrays()
    mnist = load_eval_data("mnist", n=300)
    assert mnist.n_classes == 10 and mnist.name == "mnist/test[300]" and mnist.source["split"] == "test"
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "f32.npz", x=(x[:, None] / np.float32(255)).astype(np.float32), y=y.astype(np.int32))
    for name in ("u8.npz", "f32.npz"):
        data = load_eval_data(str(tmp_path / name), n=300)
        assert isinstance(data, EvalData) and data.images.dtype == torch.float32 and data.labels.dtype == torch.int64
        assert torch.equal(data.images, mnist.images) and torch.equal(data.labels, mnist.labels)  # same fixed order
        assert data.name == f"{name[:-4]}[300]" and data.n_classes == 10
        assert data.source["md5"] == hashlib.md5((tmp_path / name).read_bytes()).hexdigest()
    assert len(load_eval_data(str(tmp_path / "u8.npz"))) == 10_000
    np.savez(tmp_path / "three.npz", x=x[y < 3], y=y[y < 3])
    assert load_eval_data(str(tmp_path / "three.npz")).n_classes == 3


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_idx_folders_of_any_image_size(tmp_path: Path) -> None:
    genuine = tmp_path / "genuine"
    genuine.mkdir()
    for stem, path in locate("mnist").items():
        if stem.startswith("t10k"):
            shutil.copy(path, genuine / path.name)
    data = load_eval_data(str(genuine), n=200)
    mnist = load_eval_data("mnist", n=200)
    assert torch.equal(data.images, mnist.images) and torch.equal(data.labels, mnist.labels)
    assert data.source["images.md5"] == mnist.source["t10k-images-idx3-ubyte.md5"] and data.n_classes == 10
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_eval_data(str(genuine), split="train")
    with pytest.raises(SpecError, match="an IDX folder has the splits train, test"):
        load_eval_data(str(genuine), split="P1")
    small = tmp_path / "small"
    small.mkdir()
    x, y = _mnist_test_arrays()
    (small / "t10k-images.idx3-ubyte").write_bytes(_idx(np.ascontiguousarray(x[:50, ::2, ::2])))
    (small / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(y[:50].astype(np.uint8))))
    data = load_eval_data(str(small))
    assert data.images.shape == (50, 1, 14, 14) and data.n_classes == 10
    assert torch.equal(data.images, torch.from_numpy(x[:50, None, ::2, ::2].astype(np.float32) / 255))


def test_fashion_mnist_is_a_builtin_eval_set(fashion_mnist: dict[str, Path]) -> None:
    data = load_eval_data("fashion-mnist", n=100)
    assert data.name == "fashion-mnist/test[100]" and data.images.shape == (100, 1, 28, 28)
    assert len(data.labels.unique()) >= 8  # the seeded order covers the classes


def test_bad_npz_files_name_the_problem(tmp_path: Path) -> None:
    x, y = _mnist_test_arrays()
    x, y = x[:20], y[:20]
    xf = x.astype(np.float32) / 255
    cases = {
        "keys": ({"images": x, "y": y}, r"no array named x \(it has: images, y\)"),
        "flat": ({"x": x.reshape(20, -1), "y": y}, r"images have shape \(20, 784\); need \(N, C, H, W\)"),
        "nhwc": ({"x": x[..., None], "y": y}, r"looks channels-last.*transpose"),
        "onehot": ({"x": x, "y": np.eye(10)[y]}, r"labels have shape \(20, 10\).*argmax"),
        "count": ({"x": x, "y": y[:19]}, r"20 images but 19 labels"),
        "empty": ({"x": x[:0], "y": y[:0]}, r"no images \(N = 0\)"),
        "floaty": ({"x": x, "y": y.astype(np.float32)}, r"labels have dtype float32, not integers"),
        "negative": ({"x": x, "y": y.astype(np.int64) - 1}, r"negative labels"),
        "ints": ({"x": x.astype(np.int64), "y": y}, r"dtype int64; give uint8"),
        "nan": ({"x": np.where(x > 250, np.nan, xf), "y": y}, r"image values are NaN or infinite"),
        "scaled": ({"x": xf * 2 - 1, "y": y}, r"outside the bounds \[0, 1\] \(min -1, max 1\).*--bounds lo,hi"),
        "objects": ({"x": x, "y": np.array([{"label": 1}] * 20, dtype=object)}, r"without unpickling"),
    }
    for name, (arrays, match) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DataError, match=match):
            load_eval_data(str(tmp_path / f"{name}.npz"))
    assert load_eval_data(str(tmp_path / "scaled.npz"), bounds=(-1.0, 1.0)).bounds == (-1.0, 1.0)
    (tmp_path / "text.npz").write_text("x,y\n0,1\n")
    np.save(tmp_path / "array.npy", x)
    np.savez(tmp_path / "good.npz", x=x, y=y)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:3000])
    for name, match in (("text.npz", r"not an .npz file"), ("array.npy", r"a single .npy array"),
                        ("cut.npz", r"corrupt or truncated"), ("absent.npz", r"no such file or folder")):
        with pytest.raises(DataError, match=match):
            load_eval_data(str(tmp_path / name))
    with pytest.raises(InputError, match=r"--n 21: .* holds 20 images"):
        load_eval_data(str(tmp_path / "good.npz"), n=21)
    with pytest.raises(SpecError, match=r"an .npz holds a single set"):
        load_eval_data(str(tmp_path / "good.npz"), split="train")
    with pytest.raises(InputError, match=r"lo < hi"):
        load_eval_data(str(tmp_path / "good.npz"), bounds=(1.0, 0.0))


def test_parse_floats() -> None:
    assert parse_floats("0.1,0.3", "--eps-linf") == (0.1, 0.3)
    assert parse_floats(" 0.1307 ", "--mean") == (0.1307,)
    for text, match in (("", "an empty entry"), ("0.1,,0.3", "an empty entry"), ("0.1,x", "'x' is not a number"),
                        ("inf", "not finite")):
        with pytest.raises(InputError, match=rf"--eps-l2 .*{match}"):
            parse_floats(text, "--eps-l2")
