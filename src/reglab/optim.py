"""Optimizers and LR schedules from ``cfg.optim``: any torch optimizer as a ``_target_`` with ``_partial_: true``
(reglab passes it the parameter groups), plus two schedule keys of reglab's own (``scheduler``,
``warmup_epochs``). Weight decay is never set here: it comes only from ``reg=weight_decay`` through parameter
groups, and is decoupled for every optimizer that accepts it."""

from __future__ import annotations

import inspect
import math

import torch

from reglab.errors import ConfigError, import_target, is_number

SCHEDULE_KEYS = ("scheduler", "warmup_epochs")  # cfg.optim keys that are not optimizer arguments
SCHEDULERS = ("cosine", "linear", "onecycle", "constant")
NOT_SETTINGS = ("self", "params", "weight_decay", "decoupled_weight_decay")  # never set by hand: see reg=weight_decay


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


def optimizer_class(cfg) -> type:
    target = cfg.get("_target_")
    try:
        cls = import_target(target)
    except Exception:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optim._target_={target!r}: not an importable torch.optim.Optimizer class (e.g. "
                          "torch.optim.AdamW, torch.optim.Adam, reglab.optim.SGDW)")
    return cls


def check_optim_config(cfg) -> None:
    cls = optimizer_class(cfg)
    if cfg.get("_partial_") is not True:
        raise ConfigError("optim._partial_: must be true (reglab calls the optimizer with its parameter groups)")
    if "weight_decay" in cfg:
        raise ConfigError("optim.weight_decay: not an optimizer setting here; use reg=weight_decay "
                          "(decoupled) or reg=l2 (coupled) so ablations stay clean")
    accepted = inspect.signature(cls.__init__).parameters
    for key in cfg:
        if not key.startswith("_") and key not in SCHEDULE_KEYS and key not in accepted:
            raise ConfigError(f"optim.{key}: not an argument of {cls.__name__}; allowed "
                              f"{[k for k in accepted if k not in NOT_SETTINGS] + list(SCHEDULE_KEYS)}")
    lr = cfg.get("lr")
    if not (is_number(lr) and lr > 0):
        raise ConfigError(f"optim.lr={lr!r}: must be a number > 0")
    if cfg.get("scheduler", "constant") not in SCHEDULERS:
        raise ConfigError(f"optim.scheduler={cfg.scheduler!r}: allowed {list(SCHEDULERS)}")
    warmup = cfg.get("warmup_epochs", 0)
    if not (is_number(warmup) and warmup >= 0):
        raise ConfigError(f"optim.warmup_epochs={cfg.warmup_epochs!r}: must be >= 0")


def check_decoupled_decay(cfg) -> None:
    """reg=weight_decay needs an optimizer whose ``weight_decay`` is decoupled decay (w <- w - lr * decay * w),
    not an L2 gradient: AdamW, SGDW, or Adam with decoupled_weight_decay: true."""
    cls = optimizer_class(cfg)
    if not (issubclass(cls, (torch.optim.AdamW, SGDW))
            or (issubclass(cls, torch.optim.Adam) and bool(cfg.get("decoupled_weight_decay", False)))):
        raise ConfigError(f"reg=weight_decay is decoupled decay, but optim._target_={cfg._target_} would couple it "
                          "(an L2 gradient): use torch.optim.AdamW, torch.optim.Adam with decoupled_weight_decay: "
                          "true, or reglab.optim.SGDW; or reg=l2 for a coupled penalty")


def build_optimizer(cfg, param_groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over ``param_groups``; ``cfg`` passed pre-flight (check_optim_config, and
    check_decoupled_decay where a regularizer sets a group's weight_decay), which is not repeated here."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups]
    for group in groups:
        group.setdefault("weight_decay", 0.0)
    arguments = {k: v for k, v in OmegaConf.to_container(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg,
                                                         resolve=True).items() if k not in SCHEDULE_KEYS}
    return instantiate(arguments, _convert_="all")(groups)


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
