import torch

from reglab.regularizers.base import Regularizer, check_non_negative


class ProxL1(Regularizer):
    """Proximal L1 (ISTA's soft-thresholding), applied after each optimizer step:

        w <- sign(w) * max(|w| - lr * strength, 0)

    Unlike the subgradient `l1`, it makes weights exactly zero. `lr` is the learning rate the optimizer just
    used for this step (the scheduled value, read before the scheduler moves it), so the threshold follows
    warmup and decay. The data-loss update is whatever the optimizer does (momentum, Adam's scaling); the
    prox step is separate from it, as AdamW's decay is, and uses the raw lr, not Adam's per-weight scale."""

    name = "prox_l1"

    def __init__(self, strength: float = 1e-4, **selection):
        check_non_negative(self.name, "strength", strength)
        super().__init__(**selection)
        self.strength = float(strength)

    @torch.no_grad()
    def after_step(self, model, lr: float) -> None:
        threshold = lr * self.strength
        if threshold <= 0:
            return
        # w - clamp(w, -t, t) is the soft threshold, and exactly 0.0 where |w| <= t
        clipped = torch._foreach_clamp_min(torch._foreach_clamp_max(self.params, threshold), -threshold)
        torch._foreach_sub_(self.params, clipped)
