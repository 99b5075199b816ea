"""Optimizers and LR schedules from ``cfg.optim``. Weight decay is never set here: it comes only
from ``reg=weight_decay`` through parameter groups, and is decoupled for every optimizer."""

from __future__ import annotations

import math

import torch

from reglab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "linear", "onecycle", "constant")


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter 2019): w <- w - lr * decay * w, applied
    outside the momentum buffer, as AdamW does for Adam. torch's SGD(weight_decay) is coupled."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, decay in zip(self.param_groups, decays):
            params = [p for p in group["params"] if p.grad is not None]
            if decay and params:
                torch._foreach_mul_(params, 1.0 - group["lr"] * decay)
            group["weight_decay"] = 0.0
        try:
            super().step()
        finally:
            for group, decay in zip(self.param_groups, decays):
                group["weight_decay"] = decay
        return loss


def check_optim_config(cfg) -> None:
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={cfg.name!r}: allowed {list(OPTIMIZERS)}")
    if not float(cfg.lr) > 0:
        raise ConfigError(f"optim.lr={cfg.lr!r}: must be > 0")
    if cfg.get("scheduler", "constant") not in SCHEDULERS:
        raise ConfigError(f"optim.scheduler={cfg.scheduler!r}: allowed {list(SCHEDULERS)}")
    if float(cfg.get("warmup_epochs", 0)) < 0:
        raise ConfigError(f"optim.warmup_epochs={cfg.warmup_epochs!r}: must be >= 0")
    if "weight_decay" in cfg:
        raise ConfigError("optim.weight_decay: not an optimizer setting here; use reg=weight_decay "
                          "(decoupled) or reg=l2 (coupled) so ablations stay clean")


def build_optimizer(cfg, param_groups: list[dict]) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups]
    for group in groups:
        group.setdefault("weight_decay", 0.0)
    if cfg.name == "sgd":
        return SGDW(groups, lr=cfg.lr, momentum=cfg.get("momentum", 0.0), nesterov=cfg.get("nesterov", False))
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, eps=cfg.get("eps", 1e-8),
                                decoupled_weight_decay=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.get("eps", 1e-8))


def adaptive_step_scales(optimizer, params: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Per weight, the factor Adam's update puts on a gradient-sized step: 1 / (sqrt(v_hat) + eps), v_hat the
    bias-corrected second moment, so that lr * scale is the weight's own step size. None for an optimizer with
    no per-weight metric (SGD). A weight without optimizer state yet gets 0 (no step has been taken)."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return None
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    stepped, corrections, eps, scales = [], [], [], [None] * len(params)
    for index, param in enumerate(params):
        state, group = optimizer.state.get(param) or {}, group_of.get(id(param))
        if group is None or "exp_avg_sq" not in state:
            scales[index] = torch.zeros_like(param)
            continue
        stepped.append((index, state["exp_avg_sq"]))
        corrections.append(math.sqrt(1.0 - group["betas"][1] ** float(state["step"])))
        eps.append(group["eps"])
    if stepped:  # one fused pass over all weights: this runs after every optimizer step
        denominators = torch._foreach_sqrt([v for _, v in stepped])
        torch._foreach_div_(denominators, corrections)
        torch._foreach_add_(denominators, eps)
        torch._foreach_reciprocal_(denominators)
        for (index, _), scale in zip(stepped, denominators):
            scales[index] = scale
    return scales


def build_scheduler(optimizer, cfg, total_steps: int, steps_per_epoch: int):
    """Per-step schedule: linear warmup over ``warmup_epochs``, then cosine or linear decay to 0 (or constant);
    ``onecycle`` is torch's OneCycleLR peaking at ``lr``."""
    name = cfg.get("scheduler", "constant")
    total_steps = max(1, int(total_steps))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps)
    warmup = min(total_steps, int(round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
