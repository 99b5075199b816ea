"""How every checkpoint file is written: serialised in memory, written to a temporary file in the checkpoint's own
folder, then renamed over the target (reglab.atomic). Lightning's own writer commits through fsspec, which stages
the file in the system temp folder and moves it across filesystems: a copy, so a full disk or a kill mid-move
leaves a torn ``epoch*.ckpt``, and a failed write surfaces as three chained tracebacks. Here a failed write is one
line naming the file and the cause (reglab.atomic.WriteError), and the folder keeps its last whole checkpoint."""

from __future__ import annotations

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from reglab.atomic import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(path, checkpoint)
