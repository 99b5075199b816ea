"""Hydra callbacks (conf/hydra/default.yaml): checks that must run before Hydra itself writes into the output
folder, where a failure would surface as a logging-config traceback ("Unable to configure handler 'file'")."""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class OutputWritable(Callback):
    """The run (or sweep) folder must be one this user can write in: one line naming the key, exit code 2."""

    WHY = "the run's logs, checkpoints and results.json are written there"

    def check(self, key: str, folder: str) -> None:
        from reglab.atomic import check_writable_dir
        from reglab.errors import ConfigError

        try:
            check_writable_dir(folder, key, self.WHY)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self.check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.check("hydra.sweep.dir", config.hydra.sweep.dir)
