"""Tokenizers: a WordPiece or a word vocabulary trained on the training split (offline, seconds, cached), or any
pretrained tokenizer by name or path.

``words`` is Kim (2014)'s tokenization: text cleaned of everything but letters, digits and a few punctuation marks,
contractions split off (``don't`` -> ``do n't``), punctuation spaced out, then split on whitespace; the vocabulary
is the training split's words (the ``vocab_size`` most frequent), the rest map to [UNK]. No [CLS]/[SEP]."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from reglab.atomic import check_writable_dir, with_umask_mode
from reglab.errors import DataUnavailableError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(sentences: list[str], vocab_size: int, lowercase: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(sentences, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                             special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


# Kim's clean-up, as normalizer rules: keep letters, digits and ( ) , ! ? ' `; split off contractions; space out
# punctuation.
WORD_RULES = ([(r"[^\w(),!?'`]|_", " ")]
              + [(rf"{suffix}\b", f" {suffix}") for suffix in ("'s", "'ve", "n't", "'re", "'d", "'ll", "'m")]
              + [(rf"\{mark}", f" {mark} ") for mark in ",!()?"])


def train_words(sentences: list[str], vocab_size: int, lowercase: bool):
    """The ``vocab_size`` most frequent words, ties broken alphabetically: the same vocabulary, and so the same
    embedding rows, on every machine (the library's trainers break ties in hash order)."""
    from collections import Counter

    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rules = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    normalizer = normalizers.Sequence(rules + [normalizers.Replace(Regex(p), r) for p, r in WORD_RULES])
    splitter = pre_tokenizers.WhitespaceSplit()
    counts = Counter(word for sentence in sentences
                     for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(sentence)))
    words = sorted(counts, key=lambda word: (-counts[word], word))[:max(0, vocab_size - 2)]
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS[:2] + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, splitter
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]")


TRAINED = ("wordpiece", "words")  # tokenizers fitted on the training split: train_<name>


def trained_cache_dir(cache_root: Path, spec: str, fingerprint: str, vocab_size: int, lowercase: bool,
                      split_key: str = "") -> Path:
    key = hashlib.sha1(f"{fingerprint}:{vocab_size}:{lowercase}:{split_key}".encode()).hexdigest()[:16]
    return cache_root / "tokenizers" / f"{spec}-{vocab_size}-{key}"


def load_tokenizer(spec: str, train_sentences: list[str], cache_root: Path, fingerprint: str, vocab_size: int,
                   lowercase: bool, split_key: str = ""):
    """``spec`` 'wordpiece' or 'words': trained on the training examples once per (data, split, vocab size,
    lowercase), cached with ``save_pretrained`` under the cache dir (written to a temp dir and renamed, so never
    half-written). Anything else: ``AutoTokenizer.from_pretrained(spec)``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if spec not in TRAINED:
        try:
            return AutoTokenizer.from_pretrained(spec)
        except Exception as err:
            raise DataUnavailableError(f"data.tokenizer={spec!r}: cannot load ({type(err).__name__}); give a local "
                                       "path, or use data.tokenizer=wordpiece or words to train one offline") from None
    target = trained_cache_dir(cache_root, spec, fingerprint, vocab_size, lowercase, split_key)
    if (target / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(target))
    check_writable_dir(target.parent, "paths.cache_dir", "the trained tokenizer is cached there")
    train = train_wordpiece if spec == "wordpiece" else train_words
    tokenizer = train(train_sentences, vocab_size, lowercase)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tokenizer.save_pretrained(str(staging))
        with_umask_mode(staging, directory=True)  # mkdtemp's folder is private (0700); colleagues read caches too
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "tokenizer.json").is_file():  # lost a race to another process: theirs is fine
            raise
    return tokenizer
