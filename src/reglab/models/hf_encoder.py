"""A `transformers` encoder (pretrained by name, or randomly initialised from a config) with a
classification head, exposing the same named dropout sites as the small Transformer.

All of the encoder's dropout starts at 0, like every reglab model: the dropout regularizer sets it."""

from __future__ import annotations

from torch import nn

from reglab.errors import ConfigError


def site_of(module_name: str) -> str:
    """BERT-style module names -> reglab dropout site types."""
    if "embeddings" in module_name:
        return "embedding"
    if module_name.endswith("attention.self.dropout") or module_name.endswith("attn.dropout"):
        return "attention"
    return "residual"


class HFEncoderClassifier(nn.Module):
    input_kind = "tokens"

    def __init__(self, vocab_size: int, num_classes: int, max_length: int, pad_id: int = 0, name: str | None = None,
                 config: dict | None = None, pooling: str = "cls"):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("cls", "mean"):
            raise ConfigError(f"model.pooling={pooling!r}: allowed ['cls', 'mean']")
        if name:
            try:
                self.encoder = AutoModel.from_pretrained(name)
            except Exception as err:
                raise ConfigError(f"model.name={name!r}: cannot load ({type(err).__name__}); it needs the hub or a "
                                  "local path") from None
            if vocab_size > self.encoder.config.vocab_size:
                raise ConfigError(f"model.name={name!r} has {self.encoder.config.vocab_size} tokens but the data's "
                                  f"tokenizer has {vocab_size}: set data.tokenizer={name}")
        else:
            if not config or "model_type" not in config:
                raise ConfigError("model: give model.name (pretrained) or model.config with a model_type")
            settings = {k: v for k, v in config.items() if k != "model_type"}
            settings.update(vocab_size=vocab_size, pad_token_id=pad_id,
                            max_position_embeddings=max(max_length, settings.get("max_position_embeddings", 0)))
            self.encoder = AutoModel.from_config(AutoConfig.for_model(config["model_type"], **settings))
        self.pooling = pooling
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)
        for module in self.encoder.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "embeddings" in name}

    def dropout_sites(self) -> dict[str, list[nn.Module]]:
        sites: dict[str, list[nn.Module]] = {"embedding": [], "attention": [], "residual": []}
        for name, module in self.encoder.named_modules():
            if isinstance(module, nn.Dropout):
                sites[site_of(name)].append(module)
        return {**{k: v for k, v in sites.items() if v}, "classifier": [self.head_drop]}

    def dropout_gates(self) -> list[nn.Module]:
        """Modules whose own train/eval mode gates a site's dropout: transformers' attention passes
        ``dropout=self.dropout.p if self.training else 0`` to its attention kernel and never calls the site's
        forward, so MC dropout must switch these on too (they use ``training`` for nothing else)."""
        return [module for name, module in self.encoder.named_modules()
                if isinstance(getattr(module, "dropout", None), nn.Dropout)
                and site_of(f"{name}.dropout") == "attention"]

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(self.head_drop(pooled))
