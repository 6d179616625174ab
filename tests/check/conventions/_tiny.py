"""The tiny CPU model every convention script trains: deterministic, so a resumed run that
restored everything ends with exactly the uninterrupted run's weights."""

import hashlib
import json
import os
import time

import torch

STEPS = 60
STEP_TIME = 0.05
X = torch.randn(STEPS, 8, 4, generator=torch.Generator().manual_seed(1))
Y = X.sum(-1, keepdim=True)


def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, i: int) -> float:
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(X[i % STEPS]), Y[i % STEPS])
    loss.backward()
    opt.step()
    time.sleep(STEP_TIME)
    return loss.item()


def write_result(path: str, model: torch.nn.Module) -> None:
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    with open(path, "w") as f:
        json.dump({"weights": digest}, f)


def load(path: str, model: torch.nn.Module) -> int:
    """The step to start from: after the one saved at `path`, or 0 when nothing is there."""
    try:
        state = torch.load(path)
    except FileNotFoundError:
        return 0
    model.load_state_dict(state["model"])
    return state["step"] + 1


def save(path: str, model: torch.nn.Module, step: int) -> None:
    torch.save({"model": model.state_dict(), "step": step}, path + ".tmp")
    os.replace(path + ".tmp", path)
