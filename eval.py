"""Evaluate a checkpoint with standard inference and MC dropout: `python eval.py ckpt=PATH mc_samples=30`."""

import hydra
from omegaconf import DictConfig

from reglab import resolvers

resolvers.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from reglab.evaluation import main as evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
