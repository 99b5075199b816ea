"""Train one regularized model: `python train.py reg=elasticnet model=cnn` (see README)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from reglab import overrides, resolvers

resolvers.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from reglab.run import main as run_job

    return run_job(cfg)


if __name__ == "__main__":
    conf = Path(__file__).parent / "conf"
    problem = overrides.unknown_choice(sys.argv[1:], conf) or overrides.unknown_key(sys.argv[1:], conf)
    if problem:
        sys.exit(print(f"error: {problem}", file=sys.stderr) or 2)
    main()
