from reglab.regularizers.base import Regularizer
from reglab.values import non_negative


class ProxL1(Regularizer):
    """Proximal L1 (ISTA's soft-thresholding), applied after each optimizer step:

        w <- sign(w) * max(|w| - t, 0)

    Unlike the subgradient `l1`, it makes weights exactly zero. The threshold is the proximal step of the
    problem the optimizer actually solves:

    - SGD: t = lr * strength, the same for every weight (ISTA);
    - Adam / AdamW: t = lr * strength / (sqrt(v_hat) + eps) per weight, the prox in Adam's own metric
      (Yun et al., NeurIPS 2021, "Adaptive proximal gradient methods for structured neural networks"). Adam's
      steps are about lr in size whatever the gradient, so a flat lr * strength (1e-7 at the defaults) would
      never catch up with them and no weight would reach zero.

    ``lr`` is the learning rate the optimizer just used for this step (the scheduled value, read before the
    scheduler moves it), so the threshold follows warmup and decay."""

    name = "prox_l1"
    rules = {"strength": non_negative}

    def __init__(self, strength: float = 3e-3, **selection):
        super().__init__(**selection)
        self.strength = float(strength)

    def after_step(self, model, lr: float, optimizer=None) -> None:
        import torch  # here, not at import: a bad reg.prox_l1.strength is refused before torch loads

        from reglab.optim import adaptive_step_scales

        base = lr * self.strength
        if base <= 0:
            return
        with torch.no_grad():
            scales = adaptive_step_scales(optimizer, self.params) if optimizer is not None else None
            if scales is None:
                # w - clamp(w, -t, t) is the soft threshold, and exactly 0.0 where |w| <= t
                clipped = torch._foreach_clamp_min(torch._foreach_clamp_max(self.params, base), -base)
            else:
                thresholds = scales  # fresh tensors: scaled in place
                torch._foreach_mul_(thresholds, base)
                clipped = torch._foreach_maximum(torch._foreach_minimum(self.params, thresholds),
                                                 torch._foreach_neg(thresholds))
            torch._foreach_sub_(self.params, clipped)
