"""A small synthetic 6-class text set in fastText's layout, where the L2 strength matters: each line holds one or two
cue words of its class, one cue word of another class and 5-15 filler words drawn Zipf-like from 3,000, and 15%
of the labels are redrawn at random. For solver checks (scripts/linear_vs_sklearn.py), not for claims about text.

    python scripts/synthetic_cue_words.py DIR      # DIR/q6.train.txt (600), q6.dev.txt (300), q6.test.txt (1,000)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

CLASSES = ["abbr", "desc", "enty", "hum", "loc", "num"]


def main(folder: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    cues = {c: [f"{c}{i}" for i in range(30)] for c in CLASSES}
    filler = [f"w{i}" for i in range(3000)]
    weights = [1 / (i + 1) for i in range(3000)]

    def line() -> str:
        c = rng.choice(CLASSES)
        words = rng.sample(cues[c], rng.randint(1, 2)) + [rng.choice(cues[rng.choice(CLASSES)])]
        words += rng.choices(filler, weights, k=rng.randint(5, 15))
        rng.shuffle(words)
        label = rng.choice(CLASSES) if rng.random() < 0.15 else c
        return f"__label__{label} {' '.join(words)}"

    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 600), ("dev", 300), ("test", 1000)):
        (folder / f"q6.{split}.txt").write_text("\n".join(line() for _ in range(n)) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
