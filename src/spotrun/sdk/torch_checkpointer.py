"""PyTorch checkpoints that stall training only for a memory copy and resume bit for bit.

A save has two phases, as in PyTorch DCP's `async_save`: *stage* copies every tensor into CPU
buffers (the only part the training loop waits for), *persist* serialises the staged copy to
disk in a background thread while training goes on. The staging buffers are allocated once and
reused (pinned on CUDA, so the device-to-host copy is DMA and does not block the host), which
is why at most one save is in flight: a new save first waits for the previous write to finish
rather than queue unbounded copies in memory.

Resuming bit for bit needs more than weights: optimizer, LR scheduler, AMP grad scaler, every
RNG the loop draws from (Python, NumPy, torch CPU and CUDA) and where the data stream was.
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from spotrun.sdk.atomic import atomic_write
from spotrun.sdk.checkpoint import attempt, checkpoint_dir, checkpoint_path, list_checkpoints, prune
from spotrun.sdk.events import emit
from spotrun.sdk.notice import NoticeListener, should_stop

FORMAT_VERSION = 1
EXT = "pt"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class ResumePoint:
    """Where a restored run stands: `step` was the last completed step, so continue at step + 1."""

    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    attempt: int = 1  # the attempt that wrote this checkpoint


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    # Only when CUDA is already in use: asking would initialise CUDA in a CPU-only script.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Stager:
    """Copies a state tree to CPU into buffers kept between saves (keyed by position in the tree).

    CUDA tensors are copied on a side stream that first waits for the training stream; the
    training stream then waits for the copy before its next kernel. The host never blocks on
    the copy: only the writer thread does, via `Staged.ready()`.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def stage(self, tree: Any) -> Staged:
        used: dict[torch.device, torch.cuda.Stream] = {}
        copies = self._copy(tree, (), used)
        return Staged(copies, used)

    def _copy(self, obj: Any, key: tuple[Any, ...], used: dict) -> Any:
        if isinstance(obj, torch.Tensor):
            return self._copy_tensor(obj, key, used)
        if isinstance(obj, dict):
            staged = {k: self._copy(v, key + (k,), used) for k, v in obj.items()}
            if isinstance(obj, OrderedDict):  # a module's state_dict: keep its version `_metadata`
                staged = OrderedDict(staged)
                if hasattr(obj, "_metadata"):
                    staged._metadata = copy.deepcopy(obj._metadata)
            return staged
        if type(obj) in (list, tuple):  # subclasses (namedtuples, torch.Size) go to deepcopy
            return type(obj)(self._copy(v, key + (i,), used) for i, v in enumerate(obj))
        if isinstance(obj, np.ndarray):
            return obj.copy()
        return copy.deepcopy(obj)

    def _copy_tensor(self, t: torch.Tensor, key: tuple[Any, ...], used: dict) -> torch.Tensor:
        t = t.detach()
        if t.layout != torch.strided:  # sparse and friends: rare in checkpoints, copy plainly
            return t.to("cpu", copy=True)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
            self._buffers[key] = buf
        if not t.is_cuda:
            buf.copy_(t)
            return buf
        stream = self._streams.get(t.device)
        if stream is None:
            stream = self._streams[t.device] = torch.cuda.Stream(t.device)
        if t.device not in used:
            used[t.device] = stream
            stream.wait_stream(torch.cuda.current_stream(t.device))  # copy what training has computed
        with torch.cuda.stream(stream):
            buf.copy_(t, non_blocking=True)
        t.record_stream(stream)  # keep the allocator from reusing t's memory mid-copy
        return buf


class Staged:
    """A staged state tree plus the CUDA copies it still waits for."""

    def __init__(self, tree: Any, streams: dict[torch.device, torch.cuda.Stream]) -> None:
        self.tree = tree
        self._events = []
        for device, stream in streams.items():
            event = stream.record_event()
            torch.cuda.current_stream(device).wait_event(event)  # training waits on the GPU, not the host
            self._events.append(event)

    def ready(self) -> Any:
        for event in self._events:
            event.synchronize()
        return self.tree


class Checkpointer(NoticeListener):
    """Save and restore a PyTorch training loop into the job's checkpoint directory.

    Usage:
        ckpt = Checkpointer()
        resume = ckpt.restore(model, optimizer, scheduler=sched, scaler=scaler)
        for step in range(resume.step + 1 if resume else 0, total):
            ...train one step...
            if ckpt.maybe_save(step, every=100, extra={"epoch": epoch}):
                break  # a reclaim notice came: the state is saved, exit cleanly
        ckpt.close()

    `restore()` is also where the Checkpointer learns which objects to save.
    """

    def __init__(
        self,
        dir: str | Path | None = None,
        keep: int = 3,
        async_save: bool = True,
        save_on_notice: bool = True,
        prefix: str = "ckpt",
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.dir = Path(dir) if dir is not None else checkpoint_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.prefix = prefix
        self.save_on_notice = save_on_notice
        self._objects: dict[str, Stateful] = {}
        self._stager = Stager()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="spotrun-ckpt") if async_save else None
        self._pending: Future[Path] | None = None
        self._stopped_at: int | None = None
        NoticeListener.__init__(self, save_on_notice)

    def track(self, **objects: Stateful | None) -> None:
        """Add objects with state_dict()/load_state_dict() (a sampler, an EMA) to every save."""
        self._objects.update({name: obj for name, obj in objects.items() if obj is not None})

    def restore(
        self,
        model: Stateful,
        optimizer: Stateful | None = None,
        scheduler: Stateful | None = None,
        scaler: Stateful | None = None,
        *,
        map_location: str | torch.device = "cpu",
        **stateful: Stateful,
    ) -> ResumePoint | None:
        """Load the newest checkpoint into these objects; None on a fresh start.

        The objects are remembered: later saves write their state.
        """
        self.track(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, **stateful)
        found = list_checkpoints(self.dir, self.prefix, EXT)
        if not found:
            return None
        step, path = found[-1]
        data = torch.load(path, map_location=map_location, weights_only=False)  # our own file
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a spotrun Checkpointer file (format {FORMAT_VERSION}); move it out of "
                f"{self.dir} or give the Checkpointer another prefix"
            )
        missing = sorted(set(self._objects) - set(data["objects"]))
        if missing:
            raise ValueError(
                f"checkpoint {path} has no state for {', '.join(missing)}; it was saved by a run "
                f"tracking only {', '.join(sorted(data['objects'])) or 'nothing'}"
            )
        for name, obj in self._objects.items():  # model first: the optimizer's state maps onto it
            obj.load_state_dict(data["objects"][name])
        set_rng_state(data["rng"])
        emit("restore", step=step)
        return ResumePoint(step=step, extra=data["extra"], path=path, attempt=data["attempt"])

    def save(self, step: int, extra: dict[str, Any] | None = None) -> Path:
        """Checkpoint the tracked objects as `step`; returns the path it is (being) written to.

        Asynchronous mode returns once the state is copied; `wait()` makes it durable. A save
        still being written is waited for first (at most one in flight). A write error is raised
        by the next `save()`, `wait()` or `close()`.
        """
        if not self._objects:
            raise RuntimeError("nothing to save: call restore(model, optimizer, ...) or track(...) first")
        self.wait()  # one save in flight: the staging buffers are about to be overwritten
        path = checkpoint_path(step, self.dir, self.prefix, EXT)
        staged = self._stager.stage(
            {
                "format": FORMAT_VERSION,
                "step": step,
                "attempt": attempt(),
                "extra": extra or {},
                "objects": {name: obj.state_dict() for name, obj in self._objects.items()},
                "rng": rng_state(),
            }
        )
        if self._executor is None:
            return self._write(staged, path, step)
        self._pending = self._executor.submit(self._write, staged, path, step)
        return path

    def _write(self, staged: Staged, path: Path, step: int) -> Path:
        tree = staged.ready()
        with atomic_write(path, "wb") as f:
            torch.save(tree, f)
        prune(self.dir, self.keep, self.prefix, EXT)
        emit("save", step=step)
        return path

    def maybe_save(self, step: int, every: int | None = None, extra: dict[str, Any] | None = None) -> bool:
        """Call once per step. Saves every `every` steps, and at once when a notice has come.

        Returns True when a notice has come and its save is durable: stop training and exit.
        """
        if self.save_on_notice and should_stop():
            if self._stopped_at != step:
                self.save(step, extra)
                self.wait()
                self._stopped_at = step
            return True
        if every and step % every == 0:
            self.save(step, extra)
        return False

    def wait(self) -> None:
        """Block until the save in flight is on disk; re-raises its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
