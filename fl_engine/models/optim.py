"""Adam for FedHaem's survival networks, without torch.optim.

torch.optim's `Optimizer.step` and `zero_grad` import torch._dynamo on first use (the graph-break
and dynamo-disable wrappers), and with it sympy and torch.fx: ~70 MB and ~0.6 s of CPU in every
process that trains, which on a hospital node is every run's first training message. This class
is torch.optim.Adam's default algorithm on CPU (its single-tensor path: L2 weight decay added to
the gradient, no amsgrad, no maximize) written with the same tensor operations in the same order,
so it gives the same numbers step for step (tests/science_models/test_optim.py checks it bit for bit
against torch.optim.Adam).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam:
    """Adam (Kingma & Ba) as torch.optim.Adam(params, lr, betas, eps, weight_decay) computes it."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if not lr >= 0.0 or not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"Adam: lr, eps and weight_decay must be >= 0 (got {lr}, {eps}, {weight_decay})")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: betas must lie in [0, 1) (got {betas})")
        self.params = list(params)
        if any(p.is_complex() or p.device.type != "cpu" for p in self.params):
            raise ValueError("Adam: real CPU parameters only (use torch.optim.Adam otherwise)")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), betas, float(eps), float(weight_decay)
        self.state: dict[int, dict] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        beta1, beta2 = self.betas
        with torch.no_grad():
            for i, param in enumerate(self.params):
                if param.grad is None:
                    continue
                grad = param.grad
                st = self.state.get(i)
                if st is None:
                    st = self.state[i] = {
                        "step": 0.0,
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
                st["step"] += 1.0  # torch counts in a float32 tensor: exact below 2**24 steps
                step = st["step"]
                if self.weight_decay != 0:
                    grad = grad.add(param, alpha=self.weight_decay)
                exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = self.lr / bias_correction1
                bias_correction2_sqrt = bias_correction2 ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)
