"""Train one regularized model: `python train.py reg=elasticnet model=cnn` (see README)."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from reglab.errors import ReglabError
    from reglab.run import train

    try:
        results = train(cfg)
    except ReglabError as err:  # the user's to fix: one line, no traceback (results.json has it too)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return results["metrics"].get("val/acc")


if __name__ == "__main__":
    main()
