"""`python scripts/evaluate.py ckpt=PATH mc_samples=30`: the same as eval.py at the root (conf/eval.yaml)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # also runs from a plain checkout
from reglab import resolvers  # noqa: E402

resolvers.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from reglab.evaluation import main as evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
