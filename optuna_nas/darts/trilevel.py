"""Tri-level optimisation of ω, α and β (A-DARTS Algorithm 1).

Each step: ω on a search-train batch, then α, then β on a search-val batch, each with its own
optimiser (SGD for ω; two Adams for α and β).

Choices where Algorithm 1 leaves room:

- ``beta_pass="shared"`` (default): α and β take their gradients from one validation forward and
  backward at (ω_{t+1}, α_t, β_t); the α optimiser steps, then the β optimiser. Algorithm 1 evaluates
  β's gradient at α_{t+1}, which costs a second validation pass; the paper's reported overhead (+20%
  over DARTS) only fits one pass, and α moves by at most ~lr = 6e-4 in between.
  ``beta_pass="separate"`` runs Algorithm 1 literally.
- The architecture step never computes weight gradients (weights are frozen for its backward pass),
  and the weight step never computes architecture gradients.
- ``unrolled=True`` is DARTS's second-order approximation: the architecture gradient at
  ω' = ω - ξ∇ω L_train, corrected by a finite-difference Hessian-vector product, with ξ = ω's lr.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.func import functional_call

from ..train import autocast, check_finite, grad_scaler
from .supernet import SearchNetwork, recomputation


@contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Temporarily stop autograd from computing gradients for ``params``."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


class TriLevelOptimizer:
    def __init__(self, network: SearchNetwork, weight_optimizer: torch.optim.Optimizer,
                 alpha_optimizer: torch.optim.Optimizer, beta_optimizer: torch.optim.Optimizer | None,
                 grad_clip: float = 5.0, unrolled: bool = False, beta_pass: str = "shared",
                 amp: str | bool = "bf16") -> None:
        if beta_pass not in ("shared", "separate"):
            raise ValueError(f"beta_pass must be 'shared' or 'separate', got {beta_pass!r}")
        self.net = network
        self.w_opt, self.a_opt, self.b_opt = weight_optimizer, alpha_optimizer, beta_optimizer
        self.grad_clip = grad_clip
        self.unrolled = unrolled
        self.beta_pass = beta_pass
        self.amp = amp
        # fp16: the weight step scales its loss (GradScaler); the architecture step scales its gradient by the
        # same factor and skips the update when it overflowed
        self.scaler = grad_scaler(self.device_of(network), amp)
        self.criterion = nn.CrossEntropyLoss()
        self.weights = network.weight_parameters()
        self.alphas = network.alpha_parameters()
        self.betas = network.beta_parameters() if beta_optimizer is not None else []

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @staticmethod
    def device_of(network: nn.Module) -> torch.device:
        return next(network.parameters()).device

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.amp):
            logits = self.net(x)
        return self.criterion(logits.float(), y), logits

    def step(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
             y_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration of Algorithm 1; returns the weight step's loss and logits."""
        loss, logits = self.weight_step(x_train, y_train)
        arch = self.alphas + (self.betas if self.beta_pass == "shared" else [])
        self._arch_step(arch, x_train, y_train, x_val, y_val)
        if self.betas and self.beta_pass == "separate":
            self._arch_step(self.betas, x_train, y_train, x_val, y_val)
        return loss, logits

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.w_opt.zero_grad(set_to_none=True)
        with frozen(self.alphas + self.betas):
            loss, logits = self._loss(x, y)
            check_finite(loss, "the weight step")
            self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.w_opt)
            dispatch_clip_grad(self.weights, self.grad_clip)
        self.scaler.step(self.w_opt)
        self.scaler.update()
        return loss.detach(), logits.detach()

    def _arch_step(self, params: list[nn.Parameter], x_train: torch.Tensor, y_train: torch.Tensor,
                   x_val: torch.Tensor, y_val: torch.Tensor) -> None:
        if self.unrolled:
            with recomputation(False):  # recomputation cannot see functional_call's weights
                grads = self._unrolled_grads(params, x_train, y_train, x_val, y_val)
        else:
            with frozen(self.weights):
                loss, _ = self._loss(x_val, y_val)
                check_finite(loss, "the architecture step")
                if self.scaler.is_enabled():
                    scale = self.scaler.get_scale()
                    grads = [g / scale for g in torch.autograd.grad(loss * scale, params)]
                    if not all(bool(torch.isfinite(g).all()) for g in grads):
                        return  # fp16 overflowed: this step is skipped, as the weight step's scaler skips it
                else:
                    grads = list(torch.autograd.grad(loss, params))
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        ids = {id(p) for p in params}
        for opt in (self.a_opt, self.b_opt):
            if opt is not None and any(id(p) in ids for g in opt.param_groups for p in g["params"]):
                opt.step()
        for p in params:
            p.grad = None

    # ---- DARTS second-order approximation
    def _unrolled_grads(self, params: list[nn.Parameter], x_train: torch.Tensor, y_train: torch.Tensor,
                        x_val: torch.Tensor, y_val: torch.Tensor) -> list[torch.Tensor]:
        names = {id(p): n for n, p in self.net.named_parameters()}
        w_names = [names[id(w)] for w in self.weights]
        group = self.w_opt.param_groups[0]
        lr, momentum, wd = group["lr"], group.get("momentum", 0.0), group.get("weight_decay", 0.0)

        def loss_at(weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.amp):
                logits = functional_call(self.net, dict(zip(w_names, weights, strict=True)), (x,))
            return self.criterion(logits.float(), y)

        # ω' = ω - ξ (momentum·buffer + ∇ω L_train + wd·ω), the virtual step of DARTS
        grads_w = torch.autograd.grad(loss_at(self.weights, x_train, y_train), self.weights)
        unrolled = []
        for w, g in zip(self.weights, grads_w, strict=True):
            buf = self.w_opt.state.get(w, {}).get("momentum_buffer")
            step = g + wd * w.detach() + (momentum * buf if buf is not None else 0.0)
            unrolled.append((w.detach() - lr * step).requires_grad_())
        val_loss = loss_at(unrolled, x_val, y_val)
        check_finite(val_loss, "the unrolled architecture step")
        both = torch.autograd.grad(val_loss, params + unrolled)
        d_arch, d_w = both[: len(params)], both[len(params) :]
        # finite-difference Hessian-vector product ∇²_{α,ω} L_train · dω'
        eps = 0.01 / torch.sqrt(sum((d * d).sum() for d in d_w)).clamp_min(1e-12)
        shifted = []
        for sign in (1.0, -1.0):
            moved = [w.detach() + sign * eps * d for w, d in zip(self.weights, d_w, strict=True)]
            shifted.append(torch.autograd.grad(loss_at(moved, x_train, y_train), params))
        return [da - lr * (gp - gm) / (2 * eps) for da, gp, gm in zip(d_arch, *shifted, strict=True)]
