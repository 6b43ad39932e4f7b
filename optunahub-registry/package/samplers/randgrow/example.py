"""RandGrow on scikit-learn's handwritten digits with plain Optuna, in about a minute on a CPU.

Each trial trains one network. ``RandGrowSampler`` proposes it before the trial starts: the initial network
first, then a copy of a parent drawn from the lower convex hull of (parameters, validation error) with one
step of random increments added. The child starts from its parent's trained weights (kept here in memory; the
optuna-nas CLI keeps them in Optuna's artifact store, so workers on many machines share them).
"""

from __future__ import annotations

import types

import optuna
import optunahub
import torch
from sklearn.datasets import load_digits
from torch import nn


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """1,797 8x8 images in [0, 1]: 1,400 to train on, the rest to validate on."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def make_objective(module: types.ModuleType, epochs: int) -> object:
    (x_train, y_train), (x_val, y_val) = digits()
    trained: dict[int, dict[str, torch.Tensor]] = {}  # weights by trial number, for the children

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        proposal = module.get_proposal(trial)
        net = module.RandGrowNetwork(proposal.architecture)
        if proposal.parent is not None:
            module.inherit_weights(net, trained[proposal.parent])
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for _ in range(epochs):
            net.train()
            for start in range(0, len(y_train), 64):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(net(x_train[start:start + 64]), y_train[start:start + 64])
                loss.backward()
                optimizer.step()
        net.eval()
        with torch.no_grad():
            error = 100.0 * (net(x_val).argmax(dim=1) != y_val).float().mean().item()
        trained[trial.number] = net.state_dict()
        return error, float(sum(p.numel() for p in net.parameters()))

    return objective


def run(module: types.ModuleType, n_trials: int = 12, epochs: int = 3) -> optuna.Study:
    # the paper's skeleton (N=6, F=32 on CIFAR-10), shrunk for 8x8 grey images: N=1, F=8
    initial = module.initial_architecture(cells_per_block=1, channels=8, in_channels=1, num_classes=10)
    sampler = module.RandGrowSampler(initial, mode="macro", seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(make_objective(module, epochs), n_trials=n_trials)
    for trial in sorted(study.best_trials, key=lambda t: t.values[1]):  # the Pareto front, cheapest first
        parent = trial.user_attrs["parent"]
        origin = "the initial model" if parent is None else f"grown from trial {parent}"
        print(f"trial {trial.number}: {trial.values[0]:.1f}% validation error, {int(trial.values[1]):,} parameters, "
              f"{origin} (generation {trial.user_attrs['generation']})")
    return study


if __name__ == "__main__":
    run(optunahub.load_module("samplers/randgrow"))
