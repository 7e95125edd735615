"""§4.2 training on a pool of adversarial examples: determinism, parity with plain training, what enters the pool
(verified adversarial at the time, true labels, in the box, newest kept), layer-level pools, and refusals."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from blindspots.data import load_mnist
from blindspots.errors import InputError, SpecError
from blindspots.models import build_model, fit
from blindspots.training.pool import AdversarialPool, PoolConfig, _LayerPool, _split_at, train_with_pool

SMALL = PoolConfig(layers=("input", "act2"), refresh_every=24, attack_size=16, capacity=40, mix=0.5,
                   search_steps=1, bracket_steps=3, max_iter=20, targets="any")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_mnist("train", subset=1000)  # 16 steps per epoch


@pytest.fixture(scope="module")
def trained(data) -> nn.Sequential:
    model, _ = fit("FC100-100-10", data, seed=0, epochs=12, progress=False)
    return model


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_identical_weights_and_the_pool_changes_them(data) -> None:
    runs = [train_with_pool("FC100-100-10", data, config=SMALL, seed=0, epochs=12) for _ in range(2)]
    assert _same_weights(runs[0].model, runs[1].model)
    stats = runs[0].stats
    for layer in stats["layers"]:  # counters equal, wall times aside
        for run in runs:
            run.stats["layers"][layer].pop("attack_seconds")
    assert runs[0].stats == runs[1].stats
    assert stats["steps"] == 12 * 16 and stats["refreshes"] == (12 * 16 - 1) // 24
    for layer in ("input", "act2"):
        s = stats["layers"][layer]
        assert s["attacked"] == 16 * stats["refreshes"] and 0 < s["added"] <= s["attacked"]
        assert s["pool_size"] == min(s["added"], 40) and s["mean_rms_distortion"] > 0
    plain, _ = fit("FC100-100-10", data, seed=0, epochs=12, progress=False)
    assert not _same_weights(plain, runs[0].model)
    other = train_with_pool("FC100-100-10", data, config=SMALL, seed=1, epochs=12)
    assert not _same_weights(other.model, runs[0].model)


def test_an_empty_pool_is_plain_training_step_for_step(data) -> None:
    """Same recipe, seed, epochs and clean minibatches: a pool that is never refreshed changes nothing."""
    never = PoolConfig(refresh_every=10_000)
    pooled = train_with_pool("FC100-100-10", data, config=never, seed=1, epochs=2)
    plain, recipe = fit("FC100-100-10", data, seed=1, epochs=2, progress=False)
    assert pooled.recipe == recipe and pooled.stats["refreshes"] == 0
    assert _same_weights(pooled.model, plain)


def test_a_late_start_is_plain_training_until_the_first_refresh(data) -> None:
    """start = 0.5: no refresh during the first half of the steps (192 here), then one every refresh_every."""
    late = PoolConfig(layers=("act2",), refresh_every=24, attack_size=16, start=0.5)
    at_epoch_6: list[dict] = []

    def keep(epoch: int, model: nn.Module) -> None:
        if epoch == 6:
            at_epoch_6.append({k: v.clone() for k, v in model.state_dict().items()})

    run = train_with_pool("FC100-100-10", data, config=late, seed=0, epochs=12, on_epoch=keep)
    assert run.stats["refreshes"] == len(range(96, 192, 24)) and "from 50% of the training steps" in late.describe()
    plain, _ = fit("FC100-100-10", data, seed=0, epochs=12, progress=False, on_epoch=keep)
    assert all(torch.equal(at_epoch_6[0][k], at_epoch_6[1][k]) for k in at_epoch_6[0])  # the same first half
    assert not _same_weights(plain, run.model)


def test_refresh_adds_verified_adversarial_examples_with_true_labels(data, trained) -> None:
    x, y = data.images[:32], data.labels[:32]
    pool = AdversarialPool(PoolConfig(layers=("input", "act1"), attack_size=32, capacity=1000), seed=0)
    pool.loss(trained, x, y, nn.functional.cross_entropy, torch.Generator())  # builds the pools, no refresh at step 0
    assert all(p.y is None for p in pool.pools.values())
    trained.train()
    pool.refresh(trained, x, y)
    assert trained.training and all(p.requires_grad for p in trained.parameters())  # mode and flags restored
    trained.eval()
    image_pool, hidden_pool = pool.pools["input"], pool.pools["act1"]
    assert image_pool.x.shape[1:] == (1, 28, 28) and hidden_pool.x.shape[1:] == (100,)
    for p in (image_pool, hidden_pool):
        assert p.added == p.y.numel() > 20 and 0 <= float(p.x.min()) and float(p.x.max()) <= 1
        with torch.no_grad():
            pred = p.tail(p.x).argmax(dim=1)
        assert (pred != p.y).all()  # adversarial for the weights it was made on ...
        assert set(p.y.tolist()) <= set(y.tolist())  # ... and stored with a true label
    with torch.no_grad():  # the image pool's labels are those of the images that were attacked
        clean = trained(x).argmax(dim=1)
        ok = torch.cdist(image_pool.x.flatten(1), x.flatten(1)).argmin(dim=1)
    assert torch.equal(y[ok], image_pool.y) and (clean[ok] == y[ok]).float().mean() > 0.8


def test_the_pool_keeps_the_newest_examples() -> None:
    p = _LayerPool(*_split_at(build_model("FC100-100-10"), "input"))
    p.push(torch.zeros(3, 1, 28, 28), torch.tensor([0, 1, 2]), 5)
    p.push(torch.ones(4, 1, 28, 28), torch.tensor([3, 4, 5, 6]), 5)
    assert p.y.tolist() == [2, 3, 4, 5, 6] and float(p.x[0].max()) == 0 and float(p.x[1].min()) == 1


def test_a_layer_split_composes_to_the_model_and_shares_its_weights() -> None:
    model = build_model("FC100-100-10").eval()
    x = torch.rand(5, 1, 28, 28)
    for layer in ("input", "act1", "act2"):
        head, tail = _split_at(model, layer)
        assert torch.equal(tail(head(x)), model(x))
        assert {id(p) for p in tail.parameters()} <= {id(p) for p in model.parameters()}
    _, tail = _split_at(model, "act1")  # a hidden pool trains the layers above only
    assert [name for name, _ in model.named_children()][3:] == ["fc2", "act2", "out"] and tail[0] is model.fc2


def test_refusals() -> None:
    with pytest.raises(SpecError, match="no layer 'fc9'"):
        AdversarialPool(PoolConfig(layers=("fc9",))).loss(build_model("FC100-100-10"), torch.rand(4, 1, 28, 28),
                                                          torch.arange(4), nn.functional.cross_entropy, None)
    with pytest.raises(SpecError, match="output layer"):
        AdversarialPool(PoolConfig(layers=("out",))).loss(build_model("FC100-100-10"), torch.rand(4, 1, 28, 28),
                                                          torch.arange(4), nn.functional.cross_entropy, None)
    pool = AdversarialPool(PoolConfig(layers=("relu3",), attack_size=4))
    cnn = build_model("CNN")
    pool.loss(cnn, torch.rand(4, 1, 28, 28), torch.arange(4), nn.functional.cross_entropy, None)
    with torch.no_grad():
        cnn.fc1.bias.fill_(3.0)  # ReLU outputs above 1: outside the box the attack works in
    with pytest.raises(InputError, match="leaves \\[0, 1\\].*sigmoid"):
        pool.refresh(cnn, torch.rand(4, 1, 28, 28), torch.arange(4))
    for bad in ({"layers": ()}, {"refresh_every": 0}, {"mix": 0.0}, {"layers": ("input", "input")}, {"start": 1.0}):
        with pytest.raises(SpecError):
            PoolConfig(**bad)
