"""The mechanism behind LRP (chapter 6): one hook per layer that runs the layer's rule in the backward pass.

:mod:`.lrp` declares the rules (a :class:`~.lrp.Rule` is parts of terms, a term three modifier
functions) and says which layer gets which (a :class:`~.lrp.Composite`); this module runs them, as
Zennit's ``core.Hook`` runs Zennit's rules. For a layer :math:`z = W x + b` whose output holds the
relevance :math:`R_j`, every rule has the gradient-times-input form of chapter 6

.. math:: z^{(k)} = \\rho_k(W)\\,\\iota_k(x) + \\rho_k(b), \\qquad
          s_j = \\frac{R_j}{\\operatorname{stab}\\big(\\sum_k z^{(k)}_j\\big)}, \\qquad
          c^{(k)} = \\rho_k(W)^{\\top} s, \\qquad
          R_i = \\sum_k \\iota_k(x)_i \\, c^{(k)}_i ,

one such sum for each part of the rule, weighted by the part's scale. :math:`c^{(k)}` is the gradient
of :math:`z^{(k)}` with respect to its input, weighted by :math:`s`: autograd computes it.
:meth:`RelevanceHook.backward` is this equation, line by line.

How the relevance travels through the model's own backward pass:

* every Linear/Conv layer (and every average pooling) gets a :class:`RelevanceHook`: its forward hook
  returns the layer's output through an autograd node whose backward is the rule;
* the epsilon rule needs no forward pass of its own: its :math:`c = W^\\top s` is the layer's own
  gradient, so its hook only divides by :math:`\\operatorname{stab}(z)` at the output and multiplies by
  :math:`x` at the input;
* a BatchNorm right after a layer joins it: the pair is explained as one layer (:meth:`RelevanceHook.join`);
* activations, and a BatchNorm on its own, pass relevance on unchanged; max-pooling passes it to
  the maximum, which is its gradient;
* a residual sum ``a + b`` shares relevance in proportion to ``a`` and ``b`` (``residual="proportional"``,
  Zennit's Sum rule), or copies it to both, which is the plain gradient of ``+`` (``residual="gradient"``);
* with a transformer composite, LayerNorm, ``nn.MultiheadAttention`` and the functions of the forward get
  the rules of AttnLRP or CP-LRP (:mod:`.lrp_transformer`), and token ids are explained at the output of
  their embedding layer.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.weak import WeakIdKeyDictionary

from ..core.model_state import HookList
from ..core.targets import Target, select
from ._canonize import BATCHNORM, batchnorm_scale, explicit_additions, merge_batchnorm

if TYPE_CHECKING:
    from .lrp import Part, Rule

STABILISER = 1e-6  # added to the denominators of all rules but epsilon, as Zennit does
RESIDUALS = ("proportional", "gradient")  # how a residual sum a + b shares relevance; see the module docstring

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYERS = (nn.Linear,) + CONVOLUTIONS
AVERAGE_POOLINGS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                    nn.AdaptiveAvgPool3d)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid)


# ---------------------------------------------------------------------------- modifiers and the stabiliser
def identity(t: torch.Tensor) -> torch.Tensor:
    """The modifier that changes nothing."""
    return t


def positive(t: torch.Tensor) -> torch.Tensor:
    """:math:`t^+ = \\max(t, 0)`."""
    return t.clamp(min=0)


def negative(t: torch.Tensor) -> torch.Tensor:
    """:math:`t^- = \\min(t, 0)`."""
    return t.clamp(max=0)


def stabilise(z: torch.Tensor, stabiliser: float) -> torch.Tensor:
    """:math:`\\operatorname{stab}(z) = z + \\epsilon\\,\\operatorname{sign}(z)` with sign(0) = +1, as a new tensor."""
    step = z + 0.0  # -0.0 becomes +0.0, whose sign is +
    torch.copysign(z.new_tensor(stabiliser), step, out=step)  # copysign is faster than torch.where
    return step.add_(z)


# ---------------------------------------------------------------------------- autograd nodes
# A node on a module's output returns that output itself: passed in as a detached alias and marked
# dirty, it becomes the node's output without a copy, and later in-place additions (torchvision's
# ``out += identity``) stay allowed. Its backward carries relevance, not gradient.
class _Redistribute(torch.autograd.Function):
    """On a layer's output. Backward: the relevance of the layer's input ``x`` by the layer's rule,
    :meth:`RelevanceHook.backward` with the given weight and bias."""

    @staticmethod
    def forward(ctx, x, out, hook, weight, bias):
        ctx.save_for_backward(x)
        ctx.hook, ctx.weight, ctx.bias = hook, weight, bias
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, relevance):
        (x,) = ctx.saved_tensors
        return ctx.hook.backward(x, relevance, ctx.weight, ctx.bias), None, None, None, None


class _DivideByOutput(torch.autograd.Function):
    """On the output ``z`` of an epsilon-rule layer. Backward: :math:`s = R / \\operatorname{stab}(z)`, which
    the layer's own backward turns into :math:`c = W^\\top s`."""

    @staticmethod
    def forward(ctx, z, out, stabiliser):
        ctx.denominator = stabilise(z, stabiliser)
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, relevance):
        return relevance / ctx.denominator, None, None


class _TimesInput(torch.autograd.Function):
    """On the input ``x`` of an epsilon-rule layer. Backward: :math:`R_i = x_i c_i`, ``x`` times the
    layer's own gradient :math:`c = W^\\top s` that arrives."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, c):
        (x,) = ctx.saved_tensors
        return x * c


class _Pass(torch.autograd.Function):
    """On the output of an activation, or of a BatchNorm on its own. Backward: the relevance passes to
    the module's input unchanged."""

    @staticmethod
    def forward(ctx, x, out):
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, relevance):
        return relevance, None


class _ProportionalSum(torch.autograd.Function):
    """``a + b``. Backward: the relevance is shared in proportion to the summands (Zennit's Sum rule),
    :math:`R_a = a \\, R / \\operatorname{stab}(a + b)` and :math:`R_b = b \\, R / \\operatorname{stab}(a + b)`."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, relevance):
        a, b = ctx.saved_tensors
        s = relevance / stabilise(a + b, STABILISER)
        return a * s, b * s


# ---------------------------------------------------------------------------- the hook
class RelevanceHook:
    """Runs one layer's rule in the backward pass (chapter 6): attached to a Linear/Conv layer (or an
    average pooling) for one batch, as a forward hook and, for the epsilon rule, a forward pre-hook.

    * :meth:`forward` keeps the layer's input ``x`` and returns the layer's output through a node whose
      backward is :meth:`backward`: the rule, applied to the relevance that arrives at the output.
    * The epsilon rule (``rule.plain``: one term, nothing modified) has :math:`c = W^\\top s`, the layer's
      own gradient: :meth:`pre_forward` multiplies what arrives at the input by ``x``, :meth:`forward`
      divides the relevance at the output by :math:`\\operatorname{stab}(z)`, and the layer's own
      backward runs in between. Same relevance, no forward pass of its own.
    * :meth:`join` lets a BatchNorm right after the layer join it.
    """

    def __init__(self, module: nn.Module, rule: Rule):
        self.module, self.rule = module, rule
        # each output the layer gave -> the tensor its relevance goes to: its input, or (epsilon rule) the
        # undivided output; for a BatchNorm that follows. Entries die with the outputs.
        self.sources = WeakIdKeyDictionary()
        if isinstance(module, nn.Linear):
            self.stack_dim = -1  # the input dimension along which the terms of a rule can run side by side
        else:
            self.stack_dim = 1 if getattr(module, "groups", 1) == 1 else None

    def register(self, hooks: list) -> None:
        """Attach the hook to its module; the handles go to ``hooks``."""
        if self.rule.plain:
            hooks.append(self.module.register_forward_pre_hook(self.pre_forward))
        hooks.append(self.module.register_forward_hook(self.forward))

    def pre_forward(self, module: nn.Module, args: tuple) -> tuple:
        """Epsilon rule, before the layer: its input, to be multiplied by ``x`` in the backward pass."""
        return (_TimesInput.apply(args[0]),) + args[1:]

    def forward(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        """After the layer: its output, whose backward is the rule."""
        if self.rule.plain:
            result = _DivideByOutput.apply(out, out.detach(), self.rule.stabiliser)
            self.sources[result] = out
        else:
            result = _Redistribute.apply(args[0], out.detach(), self, module.weight, module.bias)
            self.sources[result] = args[0]
        return result

    def join(self, batchnorm: nn.Module, layer_output: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The output ``out`` of a BatchNorm applied to the layer's output: the pair is one layer, with
        the weight and bias of :func:`~._canonize.merge_batchnorm`, and gets the layer's rule. For the epsilon
        rule, ``bn(z)`` is recomputed from the undivided ``z``: the pair's own backward is then that of
        the merged layer."""
        source = self.sources[layer_output]
        if self.rule.plain:
            batchnorm_scale(batchnorm)  # refuses a BatchNorm without running statistics
            pair = batchnorm.forward(source)
            return _DivideByOutput.apply(pair, pair.detach(), self.rule.stabiliser)
        weight, bias = merge_batchnorm(self.module.weight, self.module.bias, batchnorm)
        return _Redistribute.apply(source, out.detach(), self, weight, bias)

    def apply_layer(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The layer's function of ``x``, with the given weight and bias."""
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight, bias)
        return self.module._conv_forward(x, weight, bias)

    def backward(self, x: torch.Tensor, relevance: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
        """The relevance :math:`R_i` of the layer's input ``x``, from the relevance :math:`R_j` of its
        output, by the rule (the equation of the module docstring)."""
        result = torch.zeros_like(x)
        restricted = any(part.where for part in self.rule.parts)
        z = self.apply_layer(x, weight, bias) if restricted else None  # the layer's output, for `Part.where`
        for part in self.rule.parts:
            inputs, outputs = self.term_passes(part, x, weight, bias)  # iota_k(x) and z^(k)
            if not inputs:
                continue
            # s_j = R_j / stab(sum_k z^(k)_j), zero outside the outputs the part is restricted to
            s = relevance / stabilise(sum(output.detach() for output in outputs), self.rule.stabiliser)
            if part.where is not None:
                s = s * (z > 0 if part.where == "positive" else z < 0)
            # c^(k) = rho_k(W)^T s, the gradient of z^(k) with respect to iota_k(x), weighted by s
            gradients = torch.autograd.grad(outputs, inputs, grad_outputs=[s] * len(outputs))
            for modified_input, c in zip(inputs, gradients):
                result.addcmul_(modified_input.detach(), c, value=part.scale)  # R_i += scale iota_k(x)_i c^(k)_i
        return result

    def term_passes(self, part: Part, x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The modified inputs :math:`\\iota_k(x)` of a part's terms (leaves that require gradients) and
        the outputs :math:`z^{(k)} = \\rho_k(W) \\iota_k(x) + \\rho_k(b)` they give.

        Two shortcuts leave the result as it is: a term whose input and bias are zero (:math:`x^-` after
        a ReLU) adds exactly 0 and is left out; and where the layer allows (a Linear, a Conv without
        groups), the terms run as one pass, inputs and weights side by side, whose output is their sum.
        """
        lowest, highest = (value.item() for value in torch.aminmax(x))
        inputs, weights, biases = [], [], []
        for term in part.terms:
            modified = _modified_input(term.input, x, lowest, highest)
            term_bias = None if bias is None else term.bias(bias)
            if modified is None and (term_bias is None or not term_bias.any()):
                continue
            modified = torch.zeros_like(x) if modified is None else modified
            inputs.append(modified.detach().requires_grad_(True))
            weights.append(term.weight(weight))
            biases.append(term_bias)
        with torch.enable_grad():
            if len(inputs) > 1 and self.stack_dim is not None:
                side_by_side = torch.cat(inputs, self.stack_dim)
                summed_bias = None if bias is None else sum(biases)
                return inputs, [self.apply_layer(side_by_side, torch.cat(weights, 1), summed_bias)]
            return inputs, [self.apply_layer(*args) for args in zip(inputs, weights, biases)]


def _modified_input(modifier, x: torch.Tensor, lowest: float, highest: float) -> torch.Tensor | None:
    """``modifier(x)``, or ``None`` where it is zero everywhere. For an ``x`` of one sign (known from its
    extremes), :math:`x^+` and :math:`x^-` are ``x`` or zero, without computing them."""
    if modifier in (positive, negative) and (lowest >= 0 or highest <= 0):
        return x if (modifier is positive) == (lowest >= 0) else None
    modified = modifier(x)
    return modified if any(value.item() != 0 for value in torch.aminmax(modified)) else None  # faster than .any()


# ---------------------------------------------------------------------------- the model's other modules
def _batchnorm_forward(layer_hooks: list[RelevanceHook], batchnorm: nn.Module, args: tuple,
                       out: torch.Tensor) -> torch.Tensor:
    """A BatchNorm right after a Linear/Conv layer joins it; on its own, it passes relevance on."""
    for hook in layer_hooks:
        if args[0] in hook.sources:  # the layer whose output this is
            return hook.join(batchnorm, args[0], out)
    return _Pass.apply(args[0], out.detach())


def _activation_forward(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    """An activation passes relevance on."""
    return _Pass.apply(args[0], out.detach())


def attach(model: nn.Module, rules: dict[nn.Module, Rule], hooks: list) -> None:
    """Make ``model``'s backward pass carry relevance: a :class:`RelevanceHook` with its rule on each
    module of ``rules`` (Linear/Conv layers and average poolings), and on each BatchNorm and activation
    a forward hook. The handles go to ``hooks``."""
    layer_hooks = []
    for module, rule in rules.items():
        hook = RelevanceHook(module, rule)
        hook.register(hooks)
        if isinstance(module, LAYERS):
            layer_hooks.append(hook)
    for module in model.modules():
        if isinstance(module, BATCHNORM):
            hooks.append(module.register_forward_hook(partial(_batchnorm_forward, layer_hooks)))
        elif isinstance(module, ACTIVATIONS):
            hooks.append(module.register_forward_hook(_activation_forward))


def _constant_holders() -> tuple[type, ...]:
    """Modules whose own parameters the models we know use as constants: a class token that is concatenated,
    position embeddings that are added (a bias)."""
    from ..text import TextClassifier
    holders: tuple[type, ...] = (TextClassifier, nn.Embedding)
    try:
        from torchvision.models.vision_transformer import Encoder, VisionTransformer
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return holders
    return holders + (Encoder, VisionTransformer)


def check_supported(model: nn.Module, attention: bool = False) -> None:
    """Refuse a model with parameters in modules that have no rule. With ``attention`` (the AttnLRP and CP-LRP
    composites), ``nn.LayerNorm``, ``nn.MultiheadAttention`` and the constants of known transformers have one."""
    known = LAYERS + BATCHNORM + ACTIVATIONS
    if attention:
        known += (nn.LayerNorm, nn.MultiheadAttention) + _constant_holders()
    unknown = sorted({type(m).__name__ for m in model.modules()
                      if next(m.parameters(recurse=False), None) is not None and not isinstance(m, known)})
    if unknown:
        rules = "nn.Linear, nn.Conv1d/2d/3d and BatchNorm layers" + (
            ", nn.LayerNorm, nn.MultiheadAttention and the embeddings of torchvision's VisionTransformer and "
            "xaiutils.text.TextClassifier" if attention else "")
        hint = "" if attention or not {"LayerNorm", "MultiheadAttention"} & set(unknown) else \
            " For a transformer use composite='attn_lrp' or 'cp_lrp'."
        raise ValueError(f"lrp has rules for {rules}, but the model also has parameters in {', '.join(unknown)}; "
                         f"their relevance would be the plain gradient.{hint}")


def _residual_sums(residual: str):
    """The context in which the forward pass runs: residual sums made explicit, or left to ``+``."""
    return explicit_additions(_ProportionalSum.apply) if residual == "proportional" else nullcontext()


def _embedding_leaf(embedding: nn.Module, leaves: list):
    """A forward hook that makes the embedding's output a leaf whose relevance is read (token ids as input)."""
    def hook(module, args, output):
        if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.dim() < 3:
            raise ValueError(f"embedding must output one vector per token (B, T, D); got "
                             f"{getattr(output, 'shape', type(output).__name__)}.")
        leaves.append(output.detach().requires_grad_(True))
        return leaves[-1]
    return hook


def propagate(model: nn.Module, x: torch.Tensor, target: Target, rules: dict[nn.Module, Rule], hooks: HookList,
              residual: str = "proportional", attention=None, embedding: nn.Module | None = None) -> torch.Tensor:
    """The relevance of ``x`` for ``target``: :math:`R = f(x) \\odot \\partial t / \\partial f(x)` at the
    output, carried back to ``x`` by the hooks of :func:`attach`, which are removed afterwards.

    ``attention``: an :class:`~.lrp_transformer.AttentionRules` for LayerNorm, attention and the functions
    of a transformer's forward. ``embedding``: ``x`` holds token ids, and the relevance is that of this
    layer's output, summed over its last dims, ``(B, T)``."""
    from .lrp_transformer import attach_attention, transformer_functions
    attach(model, rules, hooks)
    try:
        leaves: list = []
        if embedding is None:
            x = x.detach().requires_grad_(True)
        else:
            hooks.append(embedding.register_forward_hook(_embedding_leaf(embedding, leaves)))
        functions = nullcontext()
        if attention is not None:
            attach_attention(model, attention, hooks)
            functions = transformer_functions(model, attention, hooks)
        with torch.enable_grad():
            with _residual_sums(residual), functions:
                out = model(x)
            if embedding is not None and len(leaves) != 1:
                raise ValueError(f"embedding ran {len(leaves)} times in one forward pass of the model; pass the "
                                 "layer that embeds the token ids, which runs exactly once.")
            source = x if embedding is None else leaves[0]
            (seed,) = torch.autograd.grad(select(out, target).sum(), out, retain_graph=True)
            (relevance,) = torch.autograd.grad(out, source, grad_outputs=seed * out.detach())
        return relevance if embedding is None else relevance.flatten(2).sum(2)
    finally:
        hooks.remove_all()
