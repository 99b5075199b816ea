"""MC dropout evaluation and calibration metrics: hand computations, determinism, and a checkpoint end to end."""

from __future__ import annotations


import pytest
import torch

from conftest import ROOT, run_cli
from reglab.evaluation import (calibration_metrics, mc_probabilities, reliability_bins, run_evaluation,
                               standard_probabilities)
from reglab.models.cnn import CNN
from reglab.run import train


def cnn_with_running_stats(p: float) -> CNN:
    """A small CNN whose BatchNorm has non-trivial running statistics (so train-mode BN would show)."""
    torch.manual_seed(0)
    model = CNN(in_channels=3, image_size=8, num_classes=4, widths=[6, 8], convs_per_stage=1, fc_hidden=12)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8) * 2 + 1)
    for module in model.modules():
        if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
            module.p = p
    return model


def test_mc_dropout_with_p0_equals_standard_inference_exactly():
    model = cnn_with_running_stats(p=0.0)
    x = torch.randn(10, 3, 8, 8)
    standard = standard_probabilities(model, x)
    for samples, max_rows in ((30, 8192), (7, 25)):  # one pass of 300 rows; passes of 2 samples
        assert torch.equal(mc_probabilities(model, x, samples, max_rows), standard)


def test_mc_dropout_without_an_active_site_runs_one_pass():
    model = cnn_with_running_stats(p=0.0)
    rows = []
    model.register_forward_hook(lambda module, args, output: rows.append(len(output)))
    mc_probabilities(model, torch.randn(10, 3, 8, 8), samples=30)
    assert rows == [10]  # not 30 copies of a deterministic pass
    active, rows = cnn_with_running_stats(p=0.1), []
    active.register_forward_hook(lambda module, args, output: rows.append(len(output)))
    mc_probabilities(active, torch.randn(10, 3, 8, 8), samples=30)
    assert rows == [300]


def test_mc_dropout_samples_differ_and_the_average_is_seeded():
    model = cnn_with_running_stats(p=0.5)
    x = torch.randn(10, 3, 8, 8)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    running_mean = bn.running_mean.clone()
    torch.manual_seed(1)
    one, other = mc_probabilities(model, x, 1), mc_probabilities(model, x, 1)
    assert not torch.allclose(one, other)  # dropout is active at test time
    torch.manual_seed(3)
    first = mc_probabilities(model, x, 30, max_rows=40)
    torch.manual_seed(3)
    assert torch.equal(mc_probabilities(model, x, 30, max_rows=40), first)  # same seed, same average
    assert torch.allclose(first.sum(-1), torch.ones(10))
    assert torch.equal(bn.running_mean, running_mean) and not bn.training  # BatchNorm stayed in eval mode
    assert not any(m.training for m in model.modules())  # and the model is left in eval mode


def test_calibration_metrics_match_a_hand_computation():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 1])
    metrics = calibration_metrics(probs, labels)
    # confidences 0.9, 0.8, 0.7, 0.55 fall in four different 1/15-wide bins, each with one sample:
    # ECE = mean |accuracy - confidence| = (|1-0.9| + |0-0.8| + |1-0.7| + |1-0.55|) / 4
    assert metrics["ece"] == pytest.approx((0.1 + 0.8 + 0.3 + 0.45) / 4, abs=1e-6)
    assert metrics["acc"] == pytest.approx(0.75)
    nll = -(torch.tensor([0.9, 0.2, 0.7, 0.55]).log().mean())
    assert metrics["nll"] == pytest.approx(float(nll), abs=1e-6)
    brier = ((0.1**2 + 0.1**2) + (0.8**2 + 0.8**2) + (0.3**2 + 0.3**2) + (0.45**2 + 0.45**2)) / 4
    assert metrics["brier"] == pytest.approx(brier, abs=1e-6)
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert metrics["entropy"] == pytest.approx(float(entropy), abs=1e-6)
    bins = reliability_bins(probs, labels)
    assert sum(bins["count"]) == 4 and bins["count"][13] == 1  # 0.9 * 15 = 13.5 -> bin 13


def test_evaluate_a_checkpoint_writes_std_and_mc_metrics(make_config):
    cfg = make_config("data=digits", "reg=dropout", "reg.dropout.p=0.3", "trainer.max_epochs=3")
    train(cfg)
    run_dir = ROOT / cfg.paths.output_dir
    trained = (run_dir / "results.json").read_bytes()
    outcome = run_evaluation(str(run_dir / "checkpoints" / "last.ckpt"), mc_samples=8, device="cpu")
    assert (run_dir / "results.json").read_bytes() == trained  # the training run's record is never rewritten
    from reglab.report.collect import load_results

    results = load_results([run_dir])[0]  # evaluation.json beside it, merged as the report reads it
    metrics = results["metrics"]
    for kind in ("std", "ts", "mc"):
        assert {f"{kind}/{k}" for k in ("acc", "nll", "brier", "ece", "entropy")} <= set(metrics)
    # one temperature, fitted on validation: the argmax (accuracy) never moves
    assert metrics["ts/acc"] == metrics["std/acc"] and metrics["ts/temperature"] > 0
    assert results["calibration"]["temperature_fit_split"] == "validation"
    # standard inference on last.ckpt is the run's own test: same weights, same split
    assert metrics["std/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["std/nll"] == pytest.approx(metrics["test/loss"], rel=1e-4)
    assert results["calibration"]["mc_samples"] == 8 and results["calibration"]["n"] == 360
    assert (run_dir / "reliability.png").stat().st_size > 0
    assert outcome["metrics"]["mc/acc"] == metrics["mc/acc"]


def test_eval_cli_refuses_a_checkpoint_of_another_model(make_config):
    cfg = make_config("data=digits", "reg=dropout", "trainer.max_epochs=1")
    train(cfg)
    ckpt = ROOT / cfg.paths.output_dir / "checkpoints" / "last.ckpt"
    done = run_cli(f"ckpt={ckpt}", "+model={widths: [4]}", script="eval.py")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "was trained with model=" in done.stderr and "Traceback" not in done.stderr
    done = run_cli(f"ckpt={ckpt}", "mc_samples=4", "write_results=false", script="eval.py")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MC (4)" in done.stdout and "temperature" in done.stdout


def test_temperature_scaling_recovers_a_known_temperature():
    from reglab.evaluation import fit_temperature

    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 5, generator=generator)
    labels = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=generator).squeeze(1)  # truly T = 2
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.05)
    nll = lambda t: float(torch.nn.functional.cross_entropy(logits / t, labels))  # noqa: E731
    assert nll(temperature) <= min(nll(temperature * 0.9), nll(temperature * 1.1), nll(1.0))  # a minimum


@pytest.mark.parametrize("site", ["attention", "embedding", "residual", "classifier"])
def test_mc_dropout_reaches_the_transformers_attention_dropout(site):
    """With dropout only on the attention probabilities, MC samples differ: the site training sets is the site MC
    switches on (it used to read the attention block's mode and stay off). So for every other site type alone:
    MC dropout is driven by dropout_sites()."""
    from reglab.evaluation import dropout_modules, mc_probabilities, standard_probabilities
    from reglab.models.transformer import TransformerClassifier
    from reglab.regularizers.dropout import Dropout

    torch.manual_seed(0)
    model = TransformerClassifier(vocab_size=50, num_classes=2, max_length=12)
    Dropout(p=0.0, rates={site: 0.9}).configure(model)
    assert {m.p for m in dropout_modules(model)} == {0.0, 0.9}
    inputs = {"input_ids": torch.randint(1, 50, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.bool)}
    torch.manual_seed(1)
    first = mc_probabilities(model, inputs, samples=1)
    torch.manual_seed(2)
    second = mc_probabilities(model, inputs, samples=1)
    assert not torch.allclose(first, second)
    assert torch.equal(standard_probabilities(model, inputs), standard_probabilities(model, inputs))
