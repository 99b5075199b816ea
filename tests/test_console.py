"""What a person sees (issue 18): a quiet console by default, captured in a pipe as a newcomer's first commands
print it. The W&B banners are silenced by reglab itself: the test removes the suite's WANDB_SILENT."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_environment

pytestmark = pytest.mark.slow

NOISE = ("wandb:", "Tip:", "litlogger", "LeafSpec", "smaller than the logging interval", "GPU available",
         "TPU available", "weights_only", "Seed set to", "`Trainer.fit` stopped", "anonymous setting")


def quiet_lines(done: subprocess.CompletedProcess, budget: int) -> list[str]:
    """The console, checked for the line budget and for every known noise line."""
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) < budget, "\n".join(lines)
    assert not [line for line in lines if any(noise in line for noise in NOISE)], "\n".join(lines)
    return lines


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in subprocess_environment().items() if k != "WANDB_SILENT"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_first_run_prints_a_header_one_line_per_epoch_and_a_closing_block(tmp_path):
    done = run("data=digits", "reg=elasticnet", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = quiet_lines(done, budget=15)
    text = "\n".join(lines)
    assert f"reglab: data=digits model=cnn_small reg=elasticnet optim=adamw seed=0 -> {tmp_path}" in text
    assert "epoch 1/1  train/loss" in text and "val/acc" in text
    assert "done in" in text and "test/acc=" in text
    assert "test/* is measured on the held-out test split" in text
    assert f"results: {tmp_path / 'results.json'}" in text
    assert f"W&B run logged offline; to upload it: wandb sync {tmp_path / 'wandb'}/offline-run-" in text
    assert text.count("wandb sync") == 1 and f"next: reglab-report {tmp_path}" in text
    # the ablation it suggests keeps the run's own overrides (data=digits: else it would train CIFAR-10)
    assert "(or an ablation: python train.py -m data=digits trainer.max_epochs=1 reg=none,l1,l2 seed=0,1,2)" in text
    assert "Seed set to 0" in (tmp_path / "train.log").read_text()  # the file keeps what the console leaves out


def test_verbose_puts_every_library_line_back(tmp_path):
    done = run("data=digits", "trainer.max_epochs=1", "logger=csv", "verbose=true", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GPU available" in done.stdout + done.stderr


def test_a_sweep_ends_with_a_summary_of_done_failed_and_skipped_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "data=digits", "reg=none,l1", "++reg.l1.strength=-1", "trainer.max_epochs=1", "logger=csv",
            f"hydra.sweep.dir={sweep}"]
    done = run(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = quiet_lines(done, budget=20)
    text = "\n".join(lines)
    assert f"sweep: 2 jobs: 1 done, 1 failed, 0 skipped (already complete), 0 unfinished -> {sweep}" in text
    failed = [line for line in lines if line.startswith("  failed ")]
    assert len(failed) == 1 and "reg=l1" in failed[0]
    assert failed[0].endswith(": reg.l1.strength=-1: must be a number >= 0")
    assert f"next: reglab-report {sweep}" in text
    again = run(*args)
    assert "sweep: 2 jobs: 0 done, 1 failed, 1 skipped (already complete)" in again.stdout + again.stderr


def test_help_shows_examples_groups_and_eval_keys():
    train_help = run("--help")
    assert train_help.returncode == 0
    assert "== Examples ==" in train_help.stdout and "python train.py data=digits reg=elasticnet" in train_help.stdout
    assert "reg: activity, dropconnect, dropout" in train_help.stdout and "--cfg job" in train_help.stdout
    assert "_target_" not in train_help.stdout  # no config dump
    eval_help = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--help"], cwd=ROOT, capture_output=True,
                               text=True, env=subprocess_environment(), timeout=120)
    assert "mc_samples" in eval_help.stdout and "ckpt" in eval_help.stdout and "reg: " not in eval_help.stdout


def test_each_data_set_pairs_with_a_model_that_fits_unless_one_is_named(make_config):
    assert make_config("data=digits", fast=False).model.fc_hidden == 128  # cnn_small
    assert make_config("data=digits", "model=cnn", fast=False).model.fc_hidden == 256
    assert make_config(fast=False).model.fc_hidden == 256  # CIFAR-10 keeps the CNN
    for data, model in (("sst2", "TextCNN"), ("text", "TextCNN"), ("text_tsv", "TextCNN"),
                        ("sst2_bow", "LinearClassifier"), ("sparse_logistic", "LinearClassifier")):
        assert make_config(f"data={data}", fast=False).model._target_.endswith(model), data
    # the tokens follow the model: Kim's words for text_cnn, WordPiece for the Transformer; text_bow brings L-BFGS
    assert make_config("data=sst2", fast=False).data.tokenizer == "words"
    assert make_config("data=sst2", "model=transformer", fast=False).data.tokenizer == "wordpiece"
    bow = make_config("data=text_bow", fast=False)
    assert bow.model._target_.endswith("LinearClassifier") and bow.optim._target_ == "torch.optim.LBFGS"
    assert bow.data.batch_size == "full"


def test_the_terminal_bar_counts_epochs_from_one_as_the_epoch_lines_do():
    from reglab.console import EpochBar

    bar = EpochBar()

    class Trainer:
        max_epochs = 30

    bar._trainer = Trainer()
    assert bar._get_train_description(0).strip() == "Epoch 1/30"
    assert bar._get_train_description(29).strip() == "Epoch 30/30"


def test_a_long_epoch_says_how_far_it_is(caplog):
    import logging

    from reglab.callbacks import EpochHistory, EpochLine

    class Trainer:
        is_global_zero, num_training_batches, max_epochs, current_epoch = True, 4000, 3, 0

    line = EpochLine(EpochHistory(), heartbeat_s=0.0)
    line.on_train_epoch_start(Trainer(), None)
    with caplog.at_level(logging.INFO, logger="reglab.callbacks"):
        line.on_train_batch_end(Trainer(), None, None, None, 1199)
    text = caplog.records[-1].getMessage()
    assert text.startswith("epoch 1/3: batch 1,200/4,000 (30%), ") and "batches/s, about " in text
    assert text.endswith("left in the epoch")
