"""A small Transformer encoder for sentence classification, readable top to bottom (nanoGPT style).

    tokens -> token embedding + position (learned or sinusoidal) -> Dropout ("embedding")
           -> n_layers x pre-norm block:
                x + Dropout("residual")(SelfAttention(LN(x)))   attention probs -> Dropout("attention")
                x + Dropout("residual")(MLP(LN(x)))
           -> LN -> pool ([CLS] = position 0, or mean / max over real tokens)
           -> Dropout ("classifier") -> Linear(num_classes)

Padded positions are masked out of attention and of mean pooling, so padding never changes the output.
Every dropout site starts at p=0; only the dropout regularizer sets rates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reglab.errors import ConfigError


def sinusoidal_positions(max_length: int, d_model: int) -> torch.Tensor:
    position = torch.arange(max_length)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_drop = nn.Dropout(0.0)  # its p is applied to the attention probabilities

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in self.qkv(x).split(width, dim=2))
        # The dropout module's own mode, not this block's: MC dropout switches on exactly the declared sites.
        drop = self.attn_drop.p if self.attn_drop.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.attn_out_drop, self.mlp_out_drop = nn.Dropout(0.0), nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_out_drop(self.attn(self.ln1(x), key_mask))
        return x + self.mlp_out_drop(self.mlp(self.ln2(x)))


class TransformerClassifier(nn.Module):
    input_kind = "tokens"

    def __init__(self, vocab_size: int, num_classes: int, max_length: int, pad_id: int = 0, d_model: int = 128,
                 n_layers: int = 2, n_heads: int = 4, d_ff: int = 512, positions: str = "learned",
                 pooling: str = "mean"):
        super().__init__()
        if positions not in ("learned", "sinusoidal"):
            raise ConfigError(f"model.positions={positions!r}: allowed ['learned', 'sinusoidal']")
        if pooling not in ("cls", "mean", "max"):
            raise ConfigError(f"model.pooling={pooling!r}: allowed ['cls', 'mean', 'max']")
        if d_model % n_heads:
            raise ConfigError(f"model.d_model={d_model} must be divisible by model.n_heads={n_heads}")
        self.pooling = pooling
        self.token_embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        if positions == "learned":
            self.pos_embed = nn.Parameter(torch.randn(max_length, d_model) * 0.02)
        else:
            self.register_buffer("pos_embed", sinusoidal_positions(max_length, d_model), persistent=False)
        self.embed_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(d_model, num_classes)

    def no_weight_decay(self) -> set[str]:
        """Embeddings stay out of penalties and decay by default; ``include: ["token_embed.*"]`` adds them."""
        return {"token_embed.weight", "pos_embed"}

    def dropout_sites(self) -> dict[str, list[nn.Module]]:
        return {
            "embedding": [self.embed_drop],
            "attention": [block.attn.attn_drop for block in self.blocks],
            "residual": [m for block in self.blocks for m in (block.attn_out_drop, block.mlp_out_drop)],
            "classifier": [self.head_drop],
        }

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()
        x = self.embed_drop(self.token_embed(input_ids) + self.pos_embed[: input_ids.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.pooling == "cls":
            pooled = x[:, 0]
        elif self.pooling == "max":  # max over time, as in Kim (2014)
            pooled = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        else:
            weights = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(self.head_drop(pooled))
