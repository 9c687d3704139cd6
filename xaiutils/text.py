"""The book's text model: a tiny transformer classifier and its vocabulary (chapter 16).

* :func:`tokenize` -- lower-cased words and punctuation marks, nothing learned.
* :class:`Vocabulary` -- tokens <-> ids, with the special tokens ``<pad>``, ``<unk>``, ``<cls>``
  and ``<mask>`` at ids 0..3, and the padding of a batch of texts to one length.
* :class:`TextConfig`, :class:`TextClassifier` -- token embedding plus learned positions, a few
  ``nn.TransformerEncoderLayer`` (pre-norm, GELU, ``batch_first=True``), CLS or mean pooling, a linear
  head. Built offline from its config, in plain PyTorch.

The explanations of chapter 16 interpolate ``model.embedding``, the token embedding
(``nn.Embedding``): positions are added *after* it, and the padding mask is computed from the ids,
so along an integrated-gradients path in embedding space only the words move
(:func:`xaiutils.attribution.embeddings.embedding_integrated_gradients`).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from .core.checks import check_choice, check_int, check_number, describe

SPECIALS = ("<pad>", "<unk>", "<cls>", "<mask>")
PAD, UNK, CLS, MASK = range(4)
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """``text`` lower-cased, split into words and punctuation marks: ``"Not bad!"`` -> ``not``, ``bad``, ``!``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {describe(text)}.")
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Tokens <-> ids. Ids 0..3 are ``<pad>``, ``<unk>``, ``<cls>``, ``<mask>``; the tokens follow in order.

    An unknown token maps to ``<unk>``. :meth:`encode` puts ``<cls>`` first (the token whose
    final state a CLS-pooling classifier reads) and pads with ``<pad>`` to ``length``.
    """

    def __init__(self, tokens: Iterable[str]):
        if isinstance(tokens, str):
            raise TypeError(f"tokens must be an iterable of str (not one str); got {tokens!r}.")
        self.itos: list[str] = list(SPECIALS)
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise TypeError(f"tokens must be non-empty strings; got {describe(token)}.")
            if token not in SPECIALS and token not in self.itos:
                self.itos.append(token)
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, min_count: int = 1, max_size: int | None = None) -> "Vocabulary":
        """The tokens of ``texts`` seen at least ``min_count`` times, the most frequent first (ties
        alphabetically), at most ``max_size`` of them (specials not counted)."""
        min_count = check_int(min_count, "min_count")
        counts = Counter(token for text in texts for token in tokenize(text))
        tokens = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            tokens = tokens[: check_int(max_size, "max_size", minimum=0)]
        return cls(tokens)

    pad_id, unk_id, cls_id, mask_id = PAD, UNK, CLS, MASK

    @property
    def special_ids(self) -> tuple[int, int]:
        """``(cls_id, pad_id)``: the structural tokens that an embedding baseline keeps as they are."""
        return (CLS, PAD)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, UNK)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens: {', '.join(self.itos[:8])}{', ...' if len(self) > 8 else ''})"

    def encode(self, text: str | Sequence[str], *, length: int | None = None, cls: bool = True) -> torch.Tensor:
        """The ids ``(T,)`` of ``text`` (a string, tokenized, or a list of tokens): ``<cls>`` first
        unless ``cls=False``, truncated or padded with ``<pad>`` to ``length`` if given."""
        tokens = tokenize(text) if isinstance(text, str) else list(text)
        ids = ([CLS] if cls else []) + [self[t] for t in tokens]
        if length is not None:
            length = check_int(length, "length")
            ids = ids[:length] + [PAD] * (length - len(ids))
        return torch.tensor(ids, dtype=torch.long)

    def encode_batch(self, texts: Sequence[str], *, length: int | None = None, cls: bool = True) -> torch.Tensor:
        """``(B, T)`` ids of ``texts``, padded to the longest (or to ``length``, truncating)."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError(f"texts must be a non-empty list of texts; got {describe(texts)}.")
        rows = [self.encode(text, cls=cls) for text in texts]
        length = max(len(r) for r in rows) if length is None else check_int(length, "length")
        return torch.stack([torch.cat([r[:length], r.new_full((max(length - len(r), 0),), PAD)]) for r in rows])

    def decode(self, ids: torch.Tensor | Sequence[int], *, skip_pad: bool = True) -> list[str]:
        """The tokens of a ``(T,)`` sequence of ids (without ``<pad>`` unless ``skip_pad=False``)."""
        ids = torch.as_tensor(ids)
        if ids.dim() != 1 or ids.is_floating_point():
            raise ValueError(f"ids must be one sequence of integer ids (T,); got {describe(ids)}.")
        bad = [i for i in ids.tolist() if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"ids must lie in [0, {len(self) - 1}] for this vocabulary; got {bad[0]}.")
        return [self.itos[i] for i in ids.tolist() if not (skip_pad and i == PAD)]


@dataclass(frozen=True)
class TextConfig:
    """Everything that defines a :class:`TextClassifier` before training.

    ``dim``: embedding width; ``heads``: attention heads (dividing ``dim``); ``layers``: encoder
    layers; ``hidden``: width of each layer's feed-forward block; ``max_length``: longest input;
    ``pooling``: ``"cls"`` (the final state of position 0) or ``"mean"`` (over non-pad positions).
    ``pad_id``, ``cls_id``, ``mask_id``: the special ids (those of :class:`Vocabulary` by default).
    """

    vocab_size: int
    classes: int = 2
    dim: int = 32
    heads: int = 2
    layers: int = 1
    hidden: int = 64
    max_length: int = 64
    dropout: float = 0.1
    pooling: str = "cls"
    pad_id: int = PAD
    cls_id: int = CLS
    mask_id: int = MASK

    def __post_init__(self):
        check_int(self.vocab_size, "vocab_size", minimum=len(SPECIALS))
        for name in ("classes", "dim", "heads", "layers", "hidden", "max_length"):
            check_int(getattr(self, name), name)
        if self.dim % self.heads:
            raise ValueError(f"dim must be divisible by heads; got dim={self.dim}, heads={self.heads}.")
        check_number(self.dropout, "dropout", minimum=0, maximum=1, exclusive_maximum=True)
        check_choice(self.pooling, "pooling", ("cls", "mean"))
        for name in ("pad_id", "cls_id", "mask_id"):
            check_int(getattr(self, name), name, minimum=0)
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"{name} must be < vocab_size = {self.vocab_size}; got {getattr(self, name)}.")

    @classmethod
    def for_vocabulary(cls, vocab: Vocabulary, **options) -> "TextConfig":
        """A config whose vocabulary size and special ids are ``vocab``'s."""
        return cls(vocab_size=len(vocab), pad_id=vocab.pad_id, cls_id=vocab.cls_id, mask_id=vocab.mask_id, **options)


class TextClassifier(nn.Module):
    """A tiny transformer text classifier: ``(B, T)`` token ids -> ``(B, classes)`` logits.

    .. math:: h^0_t = E[x_t] + P_t, \\quad
              h^{\\ell} = \\mathrm{Layer}_\\ell(h^{\\ell-1};\\ \\text{mask } x = \\text{pad}),
              \\quad f(x) = W \\, \\mathrm{LN}(\\mathrm{pool}(h^L)) + b.

    Attributes:
        embedding: the token embedding :math:`E` (``nn.Embedding(vocab_size, dim)``): the layer
            that embedding-space explanations interpolate. Its ``<pad>`` row is an ordinary
            (learned) vector, so the "pad" and "zero" baselines differ.
        position: the learned positions :math:`P` (``nn.Embedding(max_length, dim)``), added after it.
        layers, norm, head: the encoder layers (pre-norm), the final LayerNorm, the linear head.
        config: the :class:`TextConfig`; ``pad_id``, ``cls_id``, ``mask_id`` and ``special_ids``
            (``(cls_id, pad_id)``, the tokens an embedding baseline keeps) are read from it.

    Padding positions are masked as attention keys (``src_key_padding_mask``), computed from the
    ids; every sequence needs at least one non-pad token (:class:`Vocabulary` puts ``<cls>`` first).
    Initialised from torch's global generator: seed it (``torch.manual_seed``) for a reproducible model.
    """

    def __init__(self, config: TextConfig):
        super().__init__()
        if not isinstance(config, TextConfig):
            raise TypeError(f"config must be a TextConfig; got {describe(config)}.")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.dim)
        self.position = nn.Embedding(config.max_length, config.dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(config.dim, config.heads, config.hidden, config.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.classes)

    pad_id = property(lambda self: self.config.pad_id)
    cls_id = property(lambda self: self.config.cls_id)
    mask_id = property(lambda self: self.config.mask_id)
    special_ids = property(lambda self: (self.config.cls_id, self.config.pad_id),
                           doc="``(cls_id, pad_id)``: the tokens an embedding baseline keeps.")

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be a (B, T) tensor of integer token ids; got {describe(input_ids)}.")
        length = input_ids.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"input_ids has {length} tokens; this model reads at most max_length = "
                             f"{self.config.max_length}.")
        padding = input_ids == self.config.pad_id
        h = self.embedding(input_ids) + self.position.weight[:length]
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=padding)
        if self.config.pooling == "cls":
            pooled = h[:, 0]
        else:
            weight = (~padding).unsqueeze(-1).to(h.dtype)
            pooled = (h * weight).sum(1) / weight.sum(1).clamp_min(1)
        return self.head(self.norm(pooled))
