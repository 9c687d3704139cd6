"""Layer-wise relevance propagation (LRP): rules, composites and the entry point (chapter 6).

LRP explains the score :math:`f_c(x)` by sending it back through the network layer by layer. The
relevance :math:`R_j` of each output neuron of a layer is shared among the layer's inputs in
proportion to their contributions :math:`z_{ij}`:

.. math:: R_i = \\sum_j \\frac{z_{ij}}{\\sum_{i'} z_{i'j}} R_j .

The rules differ only in the contributions. Every rule here has the "gradient times input" form

.. math:: s_j = \\frac{R_j}{\\operatorname{stab}(\\sum_k z^{(k)}_j)}, \\qquad
          c^{(k)} = \\rho_k(W)^{\\top} s, \\qquad R_i = \\sum_k \\iota_k(x)_i \\, c^{(k)}_i ,

where each term :math:`k` feeds a modified input :math:`\\iota_k(x)` through the layer with modified
weights and bias, :math:`z^{(k)} = \\rho_k(W) \\iota_k(x) + \\rho_k(b)`, and :math:`c^{(k)}` is the
gradient of :math:`z^{(k)}` with respect to its input, weighted by :math:`s`. So a rule is a
declaration: modifier functions (:class:`Term`) grouped into parts that share a denominator
(:class:`Part`), and a stabiliser (:class:`Rule`). One mechanism runs them all: a
:class:`~._relevance.RelevanceHook` on each layer, whose backward is the equation above. The epsilon
rule needs no forward pass of its own: :math:`c = W^\\top s` is the layer's own gradient, so its
relevance flows through the model's backward pass (:attr:`Rule.plain`).

A composite (:class:`Composite`) says which rule each layer gets. Everywhere, as in Zennit:
activations pass relevance unchanged, max-pooling sends it to the maximum (its gradient), average
pooling and residual additions share it in proportion to their inputs (or, with
``residual="gradient"``, an addition copies it to both branches), and a BatchNorm that follows a
linear layer is merged into it (:mod:`._canonize`). The composites "attn_lrp" and "cp_lrp" add the rules
of AttnLRP and CP-LRP for LayerNorm, attention and GELU (:mod:`.lrp_transformer`, and :mod:`._implicit` for
``epsilon=0``, their default; chapter 15), so that vision transformers and text classifiers are explained by the same mechanism.
References: ``bach2015pixel`` (LRP, epsilon, alpha-beta), ``montavon2017explaining`` (z+, z^B),
``montavon2019layer`` (gamma, composites), ``lapuschkin2019unmasking`` (flat), ``anders2021software``
(Zennit), ``ancona2018towards`` (epsilon-LRP with epsilon -> 0 is gradient x input on ReLU networks;
biases break conservation, not this equivalence, as chapter 6 shows), ``achtibat2024attnlrp`` (AttnLRP),
``ali2022xai`` (CP-LRP).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Union

import torch
from torch import nn

from ..core.batching import map_batched
from ..core.checks import check_choice, check_finite, describe
from ..core.model_state import explaining
from ..core.targets import Target, check_target, rows_of
from . import _implicit
from .lrp_transformer import ATTENTION_RULES, AttentionRules
from .embeddings import _embedding_layer, _vocab_size, check_token_ids, is_token_ids
from ._relevance import (AVERAGE_POOLINGS, CONVOLUTIONS, LAYERS, RESIDUALS, STABILISER, check_supported, identity,
                         negative, positive, propagate)

__all__ = ["lrp", "COMPOSITES", "TRANSFORMER_COMPOSITES", "ATTENTION_RULES", "RESIDUALS", "Composite",
           "named_composite", "Rule", "Part", "Term", "STABILISER", "epsilon_rule", "zplus_rule", "alpha_beta_rule",
           "gamma_rule", "flat_rule", "zbox_rule"]


# ---------------------------------------------------------------------------- what a rule is
Modifier = Callable[[torch.Tensor], torch.Tensor]


class Term(NamedTuple):
    """One term :math:`k` of a rule: the modifiers :math:`\\iota_k` of the layer's input and
    :math:`\\rho_k` of its weight and bias, :math:`z^{(k)} = \\rho_k(W) \\iota_k(x) + \\rho_k(b)`."""
    input: Modifier = identity
    weight: Modifier = identity
    bias: Modifier = identity


class Part(NamedTuple):
    """Terms that share one denominator; ``scale`` weighs the part's relevance, ``where`` restricts it
    to the outputs with a ``"positive"`` or ``"negative"`` original value."""
    terms: tuple[Term, ...]
    scale: float = 1.0
    where: str | None = None


class Rule(NamedTuple):
    """An LRP rule: its parts, and the stabiliser added (with the denominator's sign) to denominators."""
    parts: tuple[Part, ...]
    stabiliser: float = STABILISER

    @property
    def plain(self) -> bool:
        """The epsilon rule's form, one term that modifies nothing: the layer's own backward computes it."""
        return self.parts == (Part((Term(),)),)


# ---------------------------------------------------------------------------- rules
def epsilon_rule(epsilon: float = 1e-6) -> Rule:
    """LRP-epsilon (``bach2015pixel``): :math:`z_{ij} = x_i w_{ij}`, denominator
    :math:`z_j + \\epsilon\\,\\mathrm{sign}(z_j)` (bias included). ``epsilon=0`` is LRP-0."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
    return Rule((Part((Term(),)),), epsilon)


def zplus_rule() -> Rule:
    """LRP-z+ (``montavon2017explaining``): only positive contributions,
    :math:`z_{ij} = x_i^+ w_{ij}^+ + x_i^- w_{ij}^-` (positive bias included); alpha=1, beta=0."""
    return Rule((Part((Term(positive, positive, positive), Term(negative, negative, torch.zeros_like))),))


def alpha_beta_rule(alpha: float = 2.0, beta: float = 1.0) -> Rule:
    """LRP-alpha-beta (``bach2015pixel``): positive contributions weighted by alpha, negative ones by
    beta, each normalised on its own; ``alpha - beta = 1`` keeps relevance conserved."""
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
        raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, got alpha={alpha}, beta={beta}.")
    contributions_up = (Term(positive, positive, positive), Term(negative, negative, torch.zeros_like))
    contributions_down = (Term(positive, negative, negative), Term(negative, positive, torch.zeros_like))
    return Rule((Part(contributions_up, alpha), Part(contributions_down, -beta)))


def gamma_rule(gamma: float = 0.25) -> Rule:
    """LRP-gamma (``montavon2019layer``), in Zennit's form for inputs of either sign: positive weights
    boosted to :math:`w + \\gamma w^+` for outputs :math:`z_j > 0`, negative ones for :math:`z_j < 0`."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")

    def up(t):
        return t + gamma * t.clamp(min=0)

    def down(t):
        return t + gamma * t.clamp(max=0)

    return Rule((Part((Term(positive, up, up), Term(negative, down, torch.zeros_like)), where="positive"),
                 Part((Term(positive, down, down), Term(negative, up, torch.zeros_like)), where="negative")))


def flat_rule() -> Rule:
    """LRP-flat (``lapuschkin2019unmasking``): every input within a neuron's receptive field gets an
    equal share, :math:`z_{ij} = 1`."""
    return Rule((Part((Term(torch.ones_like, torch.ones_like, torch.zeros_like),)),))


def zbox_rule(low=None, high=None) -> Rule:
    """LRP-z^B for inputs bounded by ``low <= x <= high`` (``montavon2017explaining``):
    :math:`z_{ij} = x_i w_{ij} - l_i w_{ij}^+ - h_i w_{ij}^-`.

    ``low``/``high``: floats or tensors broadcastable to the layer's input; ``None`` uses each
    example's own smallest/largest value, which does not depend on the rest of the batch.
    """
    def bound(value, reduce):
        def modifier(x):
            if value is None:
                return reduce(x.flatten(1), 1).values.view(-1, *[1] * (x.dim() - 1)).expand_as(x)
            return torch.as_tensor(value).to(x).expand_as(x)
        return modifier

    def minus(clamp):
        return lambda t: -clamp(t)

    return Rule((Part((Term(), Term(bound(low, torch.min), minus(positive), minus(positive)),
                       Term(bound(high, torch.max), minus(negative), minus(negative)))),))


# ---------------------------------------------------------------------------- composites
class Composite(NamedTuple):
    """Which rule each Linear/Conv layer gets: ``first`` for the first layer (the first module in
    ``model.modules()`` order of the kind ``first_on``, "conv" or "any"), ``conv`` for convolutions,
    ``dense`` for ``nn.Linear``. Average pooling always gets the epsilon rule with :data:`STABILISER`.

    ``attention``: ``None`` for networks without LayerNorm or attention, or one of :data:`ATTENTION_RULES`:
    ``"attn_lrp"`` (``achtibat2024attnlrp``) or ``"cp_lrp"`` (``ali2022xai``), the rules of
    :mod:`.lrp_transformer` for ``nn.MultiheadAttention``, ``nn.LayerNorm`` and the functions of a
    transformer's forward (GELU, constants added, sums)."""
    dense: Rule
    conv: Rule
    first: Rule | None = None
    first_on: str = "any"
    attention: str | None = None

    def layer_rules(self, model: nn.Module) -> dict[nn.Module, Rule]:
        """The rule of each Linear/Conv layer and each average pooling of ``model``."""
        check_choice(self.first_on, "Composite.first_on", ("any", "conv"))
        rules, first = {}, self.first
        for module in model.modules():
            if isinstance(module, AVERAGE_POOLINGS):
                rules[module] = epsilon_rule(STABILISER)
            elif isinstance(module, LAYERS):
                convolution = isinstance(module, CONVOLUTIONS)
                if first is not None and (self.first_on == "any" or convolution):
                    rules[module], first = first, None
                else:
                    rules[module] = self.conv if convolution else self.dense
        return rules


COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
TRANSFORMER_COMPOSITES = ATTENTION_RULES  # ("attn_lrp", "cp_lrp"): epsilon on every layer, and attention's rules


def named_composite(name: str, *, epsilon: float = 1e-6, gamma: float = 0.25, low=None, high=None) -> Composite:
    """The composite called ``name``, one of :data:`COMPOSITES` (as Zennit's composites of the same names)
    or :data:`TRANSFORMER_COMPOSITES`:

    * ``"epsilon"``: epsilon on every layer;
    * ``"epsilon_plus"``: z+ on convolutions, epsilon on dense layers;
    * ``"epsilon_plus_flat"``: as epsilon_plus, with flat on the first layer;
    * ``"epsilon_gamma_box"``: gamma on convolutions, epsilon on dense layers, z^B with the bounds
      ``low`` and ``high`` on the first convolution;
    * ``"epsilon_alpha2_beta1"``: alpha=2, beta=1 on convolutions, epsilon on dense layers;
    * ``"attn_lrp"``: AttnLRP (``achtibat2024attnlrp``): epsilon on every Linear/Conv layer, LayerNorm with
      its standard deviation held constant, the softmax rule, the uniform rule on :math:`QK^\\top` and
      :math:`AV`, the identity rule on GELU; chapter 15;
    * ``"cp_lrp"``: as attn_lrp, but the attention weights are constants (CP-LRP, ``ali2022xai``), as lxt's
      patch of torchvision's ViT.

    ``epsilon`` is that of every epsilon rule, ``gamma`` that of the gamma rule. Chapter 6.
    """
    check_choice(name, "composite", COMPOSITES + TRANSFORMER_COMPOSITES)
    eps = epsilon_rule(epsilon)
    if name in TRANSFORMER_COMPOSITES:
        return Composite(dense=eps, conv=eps, attention=name)
    if name == "epsilon":
        return Composite(dense=eps, conv=eps)
    if name == "epsilon_plus":
        return Composite(dense=eps, conv=zplus_rule())
    if name == "epsilon_plus_flat":
        return Composite(dense=eps, conv=zplus_rule(), first=flat_rule())
    if name == "epsilon_gamma_box":
        return Composite(dense=eps, conv=gamma_rule(gamma), first=zbox_rule(low, high), first_on="conv")
    return Composite(dense=eps, conv=alpha_beta_rule(2.0, 1.0))


def _bounds(value, x: torch.Tensor, name: str):
    if value is None:
        return None
    try:
        bound = torch.broadcast_to(torch.as_tensor(value, dtype=x.dtype, device=x.device), x.shape)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a float or a tensor broadcastable to x's shape {tuple(x.shape)}; "
                         f"got {value!r}.") from error
    return check_finite(bound, name)


# ---------------------------------------------------------------------------- the entry point
def _epsilon(epsilon, default: float) -> float:
    if epsilon is None:
        return default
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
        raise ValueError(f"epsilon must be a finite number >= 0 (or None for the default); got {epsilon!r}.")
    return float(epsilon)


def lrp(model: nn.Module, x: torch.Tensor, target: Target, *, composite: Union[str, Composite, None] = None,
        epsilon: float | None = None, gamma: float = 0.25, low=None, high=None, residual: str = "proportional",
        embedding: nn.Module | str | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Layer-wise relevance propagation of the score :math:`f_c(x)` to the input.

    The relevance entering the network is :math:`R = f(x) \\odot \\partial t / \\partial f(x)` for the
    target function :math:`t` of the output: for a class index, the one-hot vector times the logit
    :math:`f_c(x)`. LRP then conserves relevance layer by layer, so ``attr.sum()`` is close to
    :math:`f_c(x)`; biases (merged BatchNorm shifts included) and stabilisers absorb some of it.

    Args:
        model: a network of ``nn.Linear``/``nn.Conv*d`` layers, BatchNorm, pooling and activation
            modules; ``+`` of two branches (a residual connection) is treated as a sum layer. A ReLU
            may also be a function (its gradient passes relevance too); other activations must be
            modules, as functions they would scale relevance by their derivative. With the transformer
            composites also ``nn.LayerNorm``, ``nn.MultiheadAttention`` (its own forward, boolean or
            0/-inf masks), GELU as a function and functions linear in the input (constants added,
            scaling, sums): torchvision's ``VisionTransformer``, ``nn.TransformerEncoderLayer`` and
            :class:`xaiutils.text.TextClassifier`; attention written as a call of
            ``F.scaled_dot_product_attention`` (timm-style blocks) gets the same rules. A softmax or matmul
            written in the forward is refused.
        x: input batch ``(B, ...)``, or ``(B, T)`` integer token ids for a model with an embedding layer.
        target: int, ``(B,)`` tensor of class indices, or a callable ``output -> (B,)``.
        composite: one of :data:`COMPOSITES` ("epsilon", "epsilon_plus", "epsilon_plus_flat",
            "epsilon_gamma_box", "epsilon_alpha2_beta1") or :data:`TRANSFORMER_COMPOSITES` ("attn_lrp",
            "cp_lrp"; :func:`named_composite` says what each does), or a :class:`Composite` of rules built
            with :func:`epsilon_rule`, :func:`zplus_rule`, :func:`alpha_beta_rule`, :func:`gamma_rule`,
            :func:`flat_rule`, :func:`zbox_rule`. Default: ``"attn_lrp"`` for a model with an
            ``nn.MultiheadAttention``, else ``"epsilon_plus"`` (which refuses a LayerNorm: pass
            ``"attn_lrp"`` for its rule).
        epsilon: the epsilon of the epsilon rule (the other rules use a fixed stabiliser of 1e-6); default
            1e-6, and 0 with ``"attn_lrp"`` or ``"cp_lrp"``. There ``epsilon=0`` removes every stabiliser and
            the relevance is computed as gradient x input of a modified forward pass (:mod:`._implicit`, lxt's
            efficient form), which divides by nothing and runs at about the cost of one gradient; a positive
            epsilon carries relevance through the explicit rules of :mod:`.lrp_transformer`, layer by layer,
            with that stabiliser (also the default where the implicit form does not apply: a model with
            BatchNorm, or ``residual="gradient"``).
        gamma: the gamma of the gamma rule.
        low, high: the bounds of the z^B rule, floats or tensors broadcastable to ``x`` (e.g.
            ``(1, C, 1, 1)`` for per-channel bounds of normalised images). Default: the smallest and
            largest value of each example.
        residual: how a residual sum ``a + b`` of two branches passes relevance on, one of
            :data:`RESIDUALS`: ``"proportional"`` (default, Zennit's Sum rule) shares it in proportion
            to the summands, :math:`R_a = \\frac{a}{a + b} R` and :math:`R_b = \\frac{b}{a + b} R`
            (stabilised), which conserves it; ``"gradient"`` uses the plain backward of ``+``, which
            copies :math:`R` to both branches.
        embedding: for token ids ``x``, the layer that embeds them (a module of ``model`` or its dotted
            name; default ``model.embedding``). Its output's relevance is returned, summed over the
            embedding dimension: the relevance of each token, ``(B, T)``. Positions added after it are
            a bias and keep their share.
        batch_size: at most this many rows per pass (default: the whole batch).

    Returns:
        The relevance of each input element, shape of ``x`` (token ids: ``(B, T)``); raw and signed.

    References ``bach2015pixel``, ``montavon2019layer``, ``achtibat2024attnlrp``, ``ali2022xai``. Chapter 6
    and chapter 15.
    """
    check_choice(residual, "residual", RESIDUALS)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}.")
    if composite is None:
        attends = any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
        composite = "attn_lrp" if attends else "epsilon_plus"
    if isinstance(composite, str):
        check_choice(composite, "composite", COMPOSITES + TRANSFORMER_COMPOSITES)
    elif not isinstance(composite, Composite):
        raise TypeError(f"composite must be a name or a Composite; got {type(composite).__name__}.")
    elif composite.attention is not None:
        check_choice(composite.attention, "Composite.attention", ATTENTION_RULES)
    attention = named_composite(composite).attention if isinstance(composite, str) else composite.attention
    tokens = is_token_ids(x)
    layer = None
    if tokens:
        layer = _embedding_layer(model, embedding)
        x = check_token_ids(x, "x", _vocab_size(layer))
        check_target(target, len(x))
    elif embedding is not None:
        raise ValueError(f"embedding is for token ids; x is {describe(x)}, so pass embedding=None.")
    with explaining(model, None if tokens else x, target) as hooks:
        check_supported(model, attention is not None)
        low, high = _bounds(low, x, "low"), _bounds(high, x, "high")
        implicit = (isinstance(composite, str) and composite in TRANSFORMER_COMPOSITES
                    and residual == "proportional" and _implicit.supports(model))
        epsilon = _epsilon(epsilon, 0.0 if implicit else STABILISER)
        implicit = implicit and epsilon == 0
        rules = None if attention is None else AttentionRules(attention, epsilon)

        def explain(rows: torch.Tensor, chunk: slice) -> torch.Tensor:
            if implicit:
                return _implicit.relevance(model, rows, rows_of(target, chunk), attention, hooks, layer)
            chosen = composite if isinstance(composite, Composite) else named_composite(
                composite, epsilon=epsilon, gamma=gamma, low=rows_of(low, chunk), high=rows_of(high, chunk))
            return propagate(model, rows, rows_of(target, chunk), chosen.layer_rules(model), hooks, residual,
                             rules, layer)

        return map_batched(explain, x, batch_size, default=len(x))
