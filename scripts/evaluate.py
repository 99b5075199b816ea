"""`python scripts/evaluate.py ckpt=PATH mc_samples=30`: eval.py at the root, run from here."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval.py"), run_name="__main__")
