"""Issue 8's pieces: the device-resident data path (same batches and augmentation as the DataLoader path), the
deferred non-finite check, label smoothing, the cifar_fast model options and schedule, startup timing."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import ROOT, compose_config
from reglab.data.batching import DeviceBatches
from reglab.data.cifar10 import CIFAR10DataModule
from reglab.errors import ConfigError, DivergedError
from reglab.models.cnn import CNN
from reglab.module import ClassifierModule, FiniteLossGuard
from reglab.optim import build_optimizer, build_scheduler
from reglab.regularizers import build_regularizers
from reglab.regularizers.label_smoothing import LabelSmoothing
from reglab.run import train
from test_models_and_augment import crop_offsets, distinct_images

SGDW = {"_target_": "reglab.optim.SGDW", "_partial_": True}  # conf/optim/sgd.yaml's optimizer

# ------------------------------------------------------------------------------------- device-resident data


class FakeTrainer:
    """What the datamodule asks a trainer: rank, world size, root device, and whether it is training."""

    global_rank, world_size, training, datamodule = 0, 1, True, None

    class strategy:
        root_device = torch.device("cpu")


def datamodule(path, tmp_path, resident, **kwargs):
    dm = CIFAR10DataModule(path=str(path), cache_dir=str(tmp_path / "cache"), val_size=20, batch_size=16,
                           crop_padding=4, hflip=True, seed=3, device_resident=resident, **kwargs)
    dm.trainer = FakeTrainer()
    dm.setup()
    return dm


def test_device_path_gathers_the_same_batches_without_a_dataloader(cifar_python_batches, tmp_path):
    on, off = (datamodule(cifar_python_batches, tmp_path, r) for r in (True, False))
    device_loader, cpu_loader = on.train_dataloader(), off.train_dataloader()
    assert isinstance(device_loader, DeviceBatches) and not isinstance(device_loader, torch.utils.data.DataLoader)
    assert isinstance(cpu_loader, torch.utils.data.DataLoader) and len(device_loader) == len(cpu_loader)
    for epoch in (0, 1):
        device_loader.sampler.set_epoch(epoch), cpu_loader.sampler.set_epoch(epoch)
        pairs = list(zip(device_loader, cpu_loader, strict=True))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
        assert pairs[0][0][0].dtype == torch.uint8
    # and the eval loaders: every sample once, in order
    for a, b in zip(on.val_dataloader(), off.val_dataloader()):
        assert [t.tolist() for batch in a for t in batch] == [t.tolist() for batch in b for t in batch]


def test_device_path_resumes_mid_epoch(cifar_python_batches, tmp_path):
    dm = datamodule(cifar_python_batches, tmp_path, True)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    full = [labels.tolist() for _, labels in loader]
    loader.load_state_dict({"epoch": 1, "batches_done": 2})
    assert [labels.tolist() for _, labels in loader] == full[2:]


def test_auto_is_on_only_for_a_gpu_and_bad_values_are_one_line(cifar_python_batches, tmp_path):
    dm = datamodule(cifar_python_batches, tmp_path, "auto")
    assert dm.resident_device() is None  # a CPU trainer: the DataLoader path
    with pytest.raises(ConfigError, match=r"data.device_resident='yes'.*allowed \['auto', true, false\]"):
        CIFAR10DataModule(path=str(cifar_python_batches), device_resident="yes")


def augmentation_draws(dm, images: torch.Tensor, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets and flips the datamodule's training transform drew for ``images``, ``rounds`` times over."""
    offsets, flips = [], []
    for _ in range(rounds):
        out, _ = dm.on_after_batch_transfer((images, torch.zeros(len(images), dtype=torch.long)), 0)
        raw = (out * dm.std[:, None, None] + dm.mean[:, None, None]) * 255
        raw = raw.round().to(torch.uint8)
        plain, mirrored = crop_offsets(images, raw, 4), crop_offsets(images.flip(3), raw, 4)
        assert ((plain >= 0) | (mirrored >= 0)).all()
        offsets.append(torch.where(plain >= 0, plain, mirrored))
        flips.append(plain < 0)
    return torch.cat(offsets), torch.cat(flips)


def test_both_paths_draw_crops_and_flips_from_one_uniform_distribution(cifar_python_batches, tmp_path):
    images = distinct_images(400)  # 3x8x8, distinct pixel values: each crop window is identifiable
    counts = []
    for resident in (True, False):
        dm = datamodule(cifar_python_batches, tmp_path, resident)
        dm.mean, dm.std = torch.zeros(3), torch.ones(3) / 255 * 255  # identity normalisation up to /255
        torch.manual_seed(0)
        loader = dm.train_dataloader()
        batch = next(iter(loader))  # the path's own batch type reaches the same transform
        assert batch[0].dtype == torch.uint8
        offsets, flips = augmentation_draws(dm, images, rounds=10)
        # 81 windows equally likely (chi-square, 80 dof: p < 1e-4 above ~135), flips ~ Binomial(4000, 1/2)
        expected = len(offsets) / 81
        chi2 = ((torch.bincount(offsets, minlength=81) - expected) ** 2 / expected).sum().item()
        assert chi2 < 135, chi2
        assert abs(flips.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / len(flips))
        counts.append(torch.bincount(offsets, minlength=81).float())
    # the two paths' histograms agree with each other (two-sample chi-square on 81 cells)
    a, b = counts
    chi2 = (((a - b) ** 2) / (a + b).clamp_min(1)).sum().item()
    assert chi2 < 135, chi2


@pytest.mark.slow
def test_a_run_on_the_device_path_equals_a_run_on_the_dataloader_path(tmp_path):
    """On the CPU both paths draw the same order and the same augmentation: the trained weights are equal."""
    outcomes = []
    for resident in ("true", "false"):
        cfg = compose_config(tmp_path / resident, [
            "data=digits", "data.crop_padding=1", "data.hflip=true", f"data.device_resident={resident}",
            "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=csv", "data.batch_size=32",
            "model.widths=[8,16]", "model.convs_per_stage=1", "model.fc_hidden=16", "reg=[l2,dropout]"])
        results = train(cfg)
        assert results["status"] == "completed"
        outcomes.append(results["metrics"])
    assert outcomes[0]["weights/l2"] == outcomes[1]["weights/l2"]
    assert outcomes[0]["val/loss"] == outcomes[1]["val/loss"] and outcomes[0]["test/acc"] == outcomes[1]["test/acc"]


# ----------------------------------------------------------------------------------- non-finite loss check


@pytest.mark.slow
def test_deferred_check_stops_one_step_later_and_never_checkpoints_the_bad_state(make_config, monkeypatch):
    # What a GPU run does (the step's flag is read when the next step starts), forced on the CPU.
    monkeypatch.setattr(FiniteLossGuard, "defer", True)
    cfg = make_config("data=digits", "+reg.nan_at={_target_: test_failures.NaNAtStep, step: 5}",
                      "checkpoint_every_n_steps=2", "trainer.max_epochs=2")
    with pytest.raises(DivergedError, match=r"loss is not finite at step 5 \(epoch 0\): data loss .*nan_at nan"):
        train(cfg)
    checkpoint = torch.load(ROOT / cfg.paths.output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # the checkpoint after step 5 found the pending NaN first
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())


# ------------------------------------------------------------------------------------------ label smoothing


def test_label_smoothing_loss_is_the_hand_computation_and_only_in_training():
    torch.manual_seed(0)
    model = CNN(in_channels=1, image_size=8, num_classes=4, widths=[4], convs_per_stage=1, fc_hidden=0)
    regs = [LabelSmoothing(smoothing=0.2)]
    module = ClassifierModule(model, regs, OmegaConf.create({**SGDW, "lr": 0.1}), num_classes=4)
    assert module.label_smoothing == 0.2
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    logits = model(x)
    log_p = logits.log_softmax(dim=1)
    # targets (1 - 0.2) one-hot + 0.2 / 4 everywhere
    targets = 0.8 * F.one_hot(y, 4) + 0.2 / 4
    by_hand = -(targets * log_p).sum(dim=1).mean()
    smoothed = F.cross_entropy(logits, y, label_smoothing=module.label_smoothing)
    assert smoothed.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # the gradient moves toward the smoothed targets: d loss / d logits = softmax - targets
    logits = logits.detach().requires_grad_()
    F.cross_entropy(logits, y, label_smoothing=0.2).backward()
    assert torch.allclose(logits.grad, (logits.softmax(1) - targets) / 6, atol=1e-6)
    # validation / test losses stay plain cross-entropy
    module.val_loss.reset()
    module.validation_step((x, y), 0)
    assert module.val_loss.compute().item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


def test_label_smoothing_config_and_bad_values():
    regs = build_regularizers(OmegaConf.load(ROOT / "conf" / "reg" / "label_smoothing.yaml"))
    assert regs[0].label_smoothing == 0.1 and regs[0].name == "label_smoothing"
    with pytest.raises(ConfigError, match=r"reg.label_smoothing.smoothing=1.5: must be in \[0, 1\)"):
        LabelSmoothing(smoothing=1.5)


# -------------------------------------------------------------------------------- cifar_fast model / schedule


def test_pool_first_stem_and_channels_last():
    torch.manual_seed(0)
    kwargs = dict(in_channels=3, image_size=32, num_classes=10, widths=[8, 16], convs_per_stage=2, fc_hidden=0,
                  stem_width=4, pool="first", activation="gelu")
    model = CNN(**kwargs)
    stage = model.features[1]
    assert isinstance(stage[1], torch.nn.MaxPool2d)  # right after the stage's first conv
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in model.features[0])  # the stem has no site
    x = torch.randn(2, 3, 32, 32)
    fast = CNN(**kwargs, channels_last=True)
    fast.load_state_dict(model.state_dict())
    model.eval(), fast.eval()
    assert torch.allclose(model(x), fast(x), atol=1e-5)
    assert fast.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match=r"model.pool='middle': allowed \['end', 'first'\]"):
        CNN(in_channels=3, image_size=32, num_classes=10, pool="middle")


def test_linear_schedule_warms_up_then_decays_to_zero():
    w = torch.nn.Parameter(torch.zeros(1))
    cfg = OmegaConf.create({**SGDW, "lr": 0.4, "scheduler": "linear", "warmup_epochs": 1})
    optimizer = build_optimizer(cfg, [{"names": ["w"], "params": [w]}])
    schedule = build_scheduler(optimizer, cfg, total_steps=12, steps_per_epoch=4)
    lrs = []
    for _ in range(13):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), schedule.step()
    assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lrs[4:] == pytest.approx([0.4 * (1 - k / 8) for k in range(9)])


@pytest.mark.slow
def test_cifar_fast_is_a_plain_reglab_run_with_its_regularizers(cifar_python_batches, tmp_path):
    cfg = compose_config(tmp_path, [
        "experiment=cifar_fast", "trainer=cpu", "trainer.precision=32-true", f"data.path={cifar_python_batches}",
        "data.batch_size=32", "data.val_size=20", "data.train_eval_size=20", "trainer.max_epochs=1",
        "model.widths=[8,16,16]", "model.stem_width=4", "logger=csv"])
    assert OmegaConf.select(cfg, "reg.label_smoothing.smoothing") == 0.2 and "weight_decay" in cfg.reg
    results = train(cfg)
    assert results["status"] == "completed"
    assert results["choices"]["reg"] == "weight_decay+label_smoothing"
    assert results["config"]["model"]["pool"] == "first" and results["config"]["optim"]["scheduler"] == "linear"
    # where its time and memory went
    timing = results["timing"]
    assert {"preflight_s", "record_and_resume_s", "data_s", "model_s", "trainer_and_loggers_s", "fit_setup_s"} <= set(timing)
    assert all(v >= 0 for v in timing.values())
    assert results["peak_memory"]["cpu_peak_rss_mb"] > 50
    written = json.loads((ROOT / cfg.paths.output_dir / "results.json").read_text())
    assert written["timing"] == timing


# ------------------------------------------------------------------------------------- fused penalty kernel


@pytest.mark.parametrize("l1,l2", [(0.3, 0.7), (0.3, 0.0), (0.0, 0.7), (0.0, 0.0)])
def test_fused_l1_l2_matches_autograd_of_the_formula(l1, l2):
    from reglab.regularizers.base import weighted_l1_l2

    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(4, 2, 3, 3, requires_grad=True)]
    with torch.no_grad():
        params[0][0, 0] = 0.0  # |w|'s subgradient at 0 is 0 both ways
    scale = 0.25  # a warmup's factor multiplies the term; the gradient follows
    (scale * weighted_l1_l2(params, l1, l2)).backward()
    fused = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    naive = scale * sum(l1 * p.abs().sum() + l2 * (p ** 2).sum() for p in params)
    naive.backward()
    value = scale * weighted_l1_l2(params, l1, l2)
    assert value.item() == pytest.approx(naive.item(), rel=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-7) for a, p in zip(fused, params))
