"""What reglab asks of a model and of a datamodule, written down once. A new model or data set that meets these
trains with every regularizer, evaluator and report without touching any other file.

``check_model`` / ``check_datamodule`` run when a run is built: a missing member is a one-line ConfigError naming
the class and the member, not an AttributeError deep in training."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from reglab.errors import ConfigError

INPUT_KINDS = ("image", "tokens", "features")


@runtime_checkable
class ClassifierModel(Protocol):
    """A classifier reglab can regularize.

    - ``input_kind``: which datamodules it can read ("image": a float tensor (N, C, H, W); "tokens": keyword
      arguments ``input_ids`` and ``attention_mask``; "features": a float tensor (N, D)). Checked against the
      datamodule's before any data is read.
    - constructor keywords: exactly the datamodule's ``model_kwargs`` (e.g. ``in_channels, image_size,
      num_classes``), plus its own settings from ``conf/model/<name>.yaml``.
    - ``dropout_sites()``: site type -> the dropout modules of that type. The dropout regularizer sets their
      rates; MC dropout switches exactly these on at inference. Every site starts at p=0.
    - ``no_weight_decay()``: parameter names kept out of penalties and decay by default (embeddings).
    - names: the trunk under ``features.*`` and the classifier under ``head.*`` where the model has them, so
      per-layer configs (``only: ["head.*"]``) and ``reg=activity`` (``features.*``) mean the same on every model.

    Optional: ``dropout_defaults`` (site type -> the rate plain ``reg=dropout`` sets); ``dropout_gates()``
    (modules whose own ``training`` flag gates a site's dropout, as transformers' attention does: MC dropout
    switches them on with the sites)."""

    input_kind: str

    def dropout_sites(self) -> dict[str, list[nn.Module]]: ...

    def no_weight_decay(self) -> set[str]: ...


@runtime_checkable
class ClassificationData(Protocol):
    """A datamodule reglab can train on (a LightningDataModule with these members).

    - ``input_kind``: what its batches hold (see ClassifierModel).
    - ``model_kwargs``: what the model is built with (shapes, vocabulary, ``num_classes``).
    - ``test_split``: which source split the test metrics come from ("test", or "validation" when the source
      has no labelled test split); results.json records it.
    - ``split_sizes``: examples per split as trained and evaluated.
    - ``val_dataloader()`` returns [validation, train_eval]: the second a fixed train subset evaluated in eval
      mode each epoch, for train/acc and gen_gap.
    - ``train_batches_per_epoch(world_size)``: optimizer steps per epoch, known before any loader exists, so the
      LR schedule needs no loader and Lightning restores the loader's mid-epoch position the ordinary way.
    - accepts ``train_size`` / ``subset_seed`` (a class-stratified training subset) and ``seed`` (batch order).

    Optional: ``feature_names`` (input_kind "features"): what results.json names a linear model's features by."""

    input_kind: str
    model_kwargs: dict
    test_split: str
    split_sizes: dict

    def setup(self, stage: str | None = None) -> None: ...

    def train_batches_per_epoch(self, world_size: int = 1) -> int: ...


MODEL_MEMBERS = ("input_kind", "dropout_sites", "no_weight_decay")
DATA_MEMBERS = ("input_kind", "model_kwargs", "test_split", "split_sizes", "setup", "train_dataloader",
                "val_dataloader", "test_dataloader", "train_batches_per_epoch")


def _missing(cls: type, members: tuple[str, ...]) -> list[str]:
    return [name for name in members if not hasattr(cls, name)]


def check_model_class(cls: type) -> None:
    """Before any data is read: the model class has every member of ClassifierModel, and a known input kind."""
    missing = _missing(cls, MODEL_MEMBERS)
    if missing:
        raise ConfigError(f"model {cls.__module__}.{cls.__qualname__} lacks {', '.join(missing)} (the model "
                          "contract: reglab.contracts.ClassifierModel)")
    if cls.input_kind not in INPUT_KINDS:
        raise ConfigError(f"model {cls.__qualname__}.input_kind={cls.input_kind!r}: allowed {list(INPUT_KINDS)}")


def check_data_class(cls: type) -> None:
    missing = _missing(cls, DATA_MEMBERS)
    if missing:
        raise ConfigError(f"data {cls.__module__}.{cls.__qualname__} lacks {', '.join(missing)} (the datamodule "
                          "contract: reglab.contracts.ClassificationData)")
    if getattr(cls, "input_kind", None) not in INPUT_KINDS:
        raise ConfigError(f"data {cls.__qualname__}.input_kind={getattr(cls, 'input_kind', None)!r}: allowed "
                          f"{list(INPUT_KINDS)}")


def check_model(model: nn.Module) -> None:
    """After construction: what dropout_sites() returns is a mapping of site type -> dropout modules. (The class's
    members were checked in pre-flight: check_model_class.)"""
    sites = model.dropout_sites()
    if not isinstance(sites, dict) or not all(isinstance(m, nn.Module) for ms in sites.values() for m in ms):
        raise ConfigError(f"model {type(model).__qualname__}.dropout_sites() must return {{site type: [modules]}}")
