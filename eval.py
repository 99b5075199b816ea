"""Evaluate a checkpoint with standard inference and MC dropout: `python eval.py ckpt=PATH mc_samples=30`."""

import sys

import hydra
from omegaconf import DictConfig

from reglab import overrides, resolvers

resolvers.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from reglab.evaluation import main as evaluate

    evaluate(cfg)


if __name__ == "__main__":
    # Any path works as typed, a sweep job's too (logs/multiruns/demo/reg=dropout,seed=0/checkpoints/last.ckpt):
    # Hydra's grammar would read its ',' and '=' as syntax.
    sys.argv[1:] = overrides.quote_path_values(sys.argv[1:], ("ckpt",))
    main()
