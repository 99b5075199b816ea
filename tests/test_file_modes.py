"""Files reglab writes get the user's umask, as any other file would (issue 17): atomic writes used to keep
mkstemp's private 0600, so colleagues on a shared cluster could not read results or caches."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import run_cli


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_atomic_writes_and_the_tokenizer_cache_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    from reglab.atomic import atomic_write
    from reglab.data.tokenizer import load_tokenizer

    umask(mask)
    written = atomic_write(tmp_path / "results.json", lambda handle: handle.write(b"{}"))
    assert mode(written) == file_mode
    load_tokenizer("wordpiece", ["a good film", "a dull film"] * 20, tmp_path / "cache", "fp", 50, True)
    (folder,) = (tmp_path / "cache" / "tokenizers").iterdir()
    assert mode(folder) == dir_mode and mode(folder / "tokenizer.json") == file_mode


@pytest.mark.slow
def test_a_run_under_umask_002_leaves_group_writable_results(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("data=digits", "model=cnn_small", "model.widths=[8]", "model.fc_hidden=8", "trainer.max_epochs=1",
                   "logger=default", f"hydra.run.dir={run_dir}", umask=0o002)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("results.json", "wandb_run.json", "checkpoints/last.ckpt"):
        assert mode(run_dir / name) == 0o664, name
