"""The PyTorch Checkpointer in-process: full round trip, bitwise resume, async snapshot semantics."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch

from spotrun.torch import Checkpointer

from .conftest import load_example

loop = load_example("torch_loop")


def fresh(seed: int):
    model, optimizer, scheduler, scaler = loop.build(seed)
    random.seed(seed)
    np.random.seed(seed)
    return model, optimizer, scheduler, scaler


def run(objects, steps: range) -> None:
    for _ in steps:
        loop.train_step(*objects)


def scramble_rngs() -> None:
    torch.manual_seed(12345)
    random.seed(12345)
    np.random.seed(12345)


def assert_same_tree(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tree(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_restores_every_piece_of_state(ckpt_env, async_save):
    objects = fresh(0)
    ckpt = Checkpointer(async_save=async_save, save_on_notice=False)
    assert ckpt.restore(*objects) is None  # fresh start
    run(objects, range(7))
    path = ckpt.save(6, extra={"epoch": 2, "sampler_position": 96})
    ckpt.close()
    assert path.exists()
    expected = [obj.state_dict() for obj in objects]
    expected_draws = (torch.rand(3), np.random.rand(3), random.random())

    restored = fresh(99)  # different initial weights: everything must come from the file
    scramble_rngs()
    resume = Checkpointer(save_on_notice=False).restore(*restored)
    assert resume.step == 6 and resume.path == path and resume.attempt == 1
    assert resume.extra == {"epoch": 2, "sampler_position": 96}
    for want, obj in zip(expected, restored):
        assert_same_tree(want, obj.state_dict())
    draws = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], expected_draws[0])
    assert np.array_equal(draws[1], expected_draws[1])
    assert draws[2] == expected_draws[2]


def test_interrupted_run_resumes_bitwise_identical(ckpt_env):
    reference = fresh(0)
    run(reference, range(40))

    first = fresh(0)
    with Checkpointer(save_on_notice=False) as ckpt:
        ckpt.restore(*first)
        for step in range(23):
            loop.train_step(*first)
            ckpt.maybe_save(step, every=5)
    # steps 20..22 were done but never saved: the resumed run must redo them identically

    second = fresh(7)
    scramble_rngs()
    with Checkpointer(save_on_notice=False) as ckpt:
        resume = ckpt.restore(*second)
        assert resume.step == 20
        run(second, range(resume.step + 1, 40))
    assert loop.weights_hash(second[0]) == loop.weights_hash(reference[0])
    assert_same_tree(reference[1].state_dict(), second[1].state_dict())


class Gate:
    """Blocks the checkpoint writer while pickling, so the test controls when the bytes hit disk."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        assert self.open.wait(60), "test never opened the gate"
        return (str, ("released",))


def test_async_save_holds_the_state_at_save_time(ckpt_env):
    model, *rest = fresh(0)
    gate = Gate()
    ckpt = Checkpointer(save_on_notice=False)
    ckpt.restore(model, *rest)
    at_save = {k: v.clone() for k, v in model.state_dict().items()}
    path = ckpt.save(0, extra={"gate": gate})
    assert not path.exists()  # save() returned before the write: the loop is free to go on
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training keeps mutating the live weights in place
    gate.open.set()
    ckpt.wait()
    saved = torch.load(path, weights_only=False)
    assert saved["extra"] == {"gate": "released"}
    assert_same_tree(at_save, saved["objects"]["model"])
    assert saved["objects"]["model"]._metadata == model.state_dict()._metadata  # module versions kept
    assert not torch.equal(saved["objects"]["model"]["0.weight"], model.state_dict()["0.weight"])
    ckpt.close()


def test_keeps_newest_n_and_staging_buffers_are_reused(ckpt_env):
    model, *rest = fresh(0)
    ckpt = Checkpointer(keep=2, save_on_notice=False)
    ckpt.restore(model, *rest)
    ckpt.save(1)
    buffers = dict(ckpt._stager._buffers)
    for step in (2, 3, 4):
        loop.train_step(model, *rest)
        ckpt.save(step)
    ckpt.close()
    assert sorted(p.name for p in ckpt.dir.iterdir() if p.is_file()) == ["ckpt-000000000003.pt", "ckpt-000000000004.pt"]
    assert all(ckpt._stager._buffers[k] is buf for k, buf in buffers.items())
    newest = torch.load(ckpt.dir / "ckpt-000000000004.pt", weights_only=False)
    assert torch.equal(newest["objects"]["model"]["0.weight"], model[0].weight)


def test_write_error_surfaces_and_leaves_no_file(ckpt_env):
    model, *rest = fresh(0)
    ckpt = Checkpointer(save_on_notice=False)
    ckpt.restore(model, *rest)
    ckpt.save(1)
    ckpt.save(2, extra={"callback": lambda: None})  # cannot be pickled: fails in the writer thread
    with pytest.raises(Exception, match="pickle|lambda"):
        ckpt.wait()
    ckpt.close()
    assert sorted(p.name for p in ckpt.dir.iterdir() if p.is_file()) == ["ckpt-000000000001.pt"]


def test_restore_names_what_the_checkpoint_lacks(ckpt_env):
    model, optimizer, scheduler, scaler = fresh(0)
    with Checkpointer(save_on_notice=False) as ckpt:
        ckpt.restore(model)
        ckpt.save(3)
    with pytest.raises(ValueError, match="no state for optimizer"):
        Checkpointer(save_on_notice=False).restore(model, optimizer)


def test_save_before_tracking_is_a_clear_error(ckpt_env):
    with pytest.raises(RuntimeError, match="call restore"):
        Checkpointer(save_on_notice=False).save(0)


def test_foreign_file_with_our_name_is_a_clear_error(ckpt_env):
    model, *rest = fresh(0)
    ckpt = Checkpointer(save_on_notice=False)
    torch.save(model.state_dict(), ckpt.dir / "ckpt-000000000005.pt")  # someone else's torch.save
    with pytest.raises(ValueError, match="not a spotrun Checkpointer file"):
        ckpt.restore(model, *rest)
