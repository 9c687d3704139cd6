"""AttnLRP and CP-LRP on what a model writes as function calls: attention as F.scaled_dot_product_attention
(as timm's blocks write it) gives the same relevance as the same weights in nn.MultiheadAttention, in both
forms; F.linear and F.conv1d outside their modules get the epsilon rule; and what the rules do not cover."""
import pytest
import torch
from helpers import assert_unchanged, snapshot
from torch import nn
from torch.nn import functional as F

from xaiutils.attribution import _implicit, _relevance
from xaiutils.attribution.lrp import lrp


class Block(nn.Module):
    """A pre-norm transformer block on (B, T, 6) inputs, its attention either an nn.MultiheadAttention or the
    same weights in a timm-style module that calls F.scaled_dot_product_attention."""

    def __init__(self, fused: bool, mask: str = "none", scale: float | None = None, heads: int = 4):
        super().__init__()
        torch.manual_seed(3)
        self.fused, self.mask, self.scale, self.heads = fused, mask, scale, heads
        self.embed, self.norm = nn.Linear(6, 16), nn.LayerNorm(16)
        self.attention = nn.MultiheadAttention(16, heads, batch_first=True)
        self.mlp, self.head = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)), nn.Linear(16, 3)
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)  # timm's names, the attention's weights
        with torch.no_grad():
            self.qkv.weight.copy_(self.attention.in_proj_weight)
            self.qkv.bias.copy_(self.attention.in_proj_bias)
            self.proj.weight.copy_(self.attention.out_proj.weight)
            self.proj.bias.copy_(self.attention.out_proj.bias)
        if fused:  # no nn.MultiheadAttention left in the model, as in timm's
            del self.attention

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        batch, length, width = h.shape
        padding = torch.zeros(batch, length, dtype=torch.bool)
        padding[0, -2:] = True
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)
        if not self.fused:
            masks = {"none": {}, "padding": {"key_padding_mask": padding}, "causal": {"attn_mask": causal},
                     "float": {"key_padding_mask": torch.zeros(batch, length).masked_fill(padding, float("-inf"))}}
            return self.attention(h, h, h, need_weights=False, **masks[self.mask])[0]
        q, k, v = self.qkv(h).reshape(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        masks = {"none": {}, "padding": {"attn_mask": ~padding[:, None, None, :]}, "causal": {"is_causal": True},
                 "float": {"attn_mask": torch.zeros(batch, 1, 1, length).masked_fill(padding[:, None, None], -torch.inf)}}
        context = F.scaled_dot_product_attention(q, k, v, scale=self.scale, **masks[self.mask])
        return self.proj(context.transpose(1, 2).reshape(batch, length, width))

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attend(self.norm(h))
        h = h + self.mlp(h)
        return self.head(h.mean(1))


X, TARGET = torch.randn(3, 7, 6, dtype=torch.float64), torch.tensor([0, 2, 1])


@pytest.mark.parametrize("mask", ["none", "padding", "causal", "float"])
@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
@pytest.mark.parametrize("epsilon", [None, 1e-12])
def test_fused_attention_gets_the_rules_of_nn_multihead_attention(mask, kind, epsilon):
    """Same weights, same relevance in float64: the gradient x input form (default) and the explicit
    rules of F.scaled_dot_product_attention agree with those of nn.MultiheadAttention, which the tests of
    tests/test_attnlrp.py check against matrix forms and lxt. (nn.MultiheadAttention's rules scale the query's
    projection, the fused call scales the query: their stabilisers differ by a factor, so the explicit rules
    are compared with a tiny epsilon.)"""
    modules, fused = Block(False, mask).double().eval(), Block(True, mask).double().eval()
    with torch.no_grad():
        assert torch.allclose(modules(X), fused(X), rtol=0, atol=1e-12)
    before = snapshot(fused)
    expected = lrp(modules, X, TARGET, composite=kind, epsilon=epsilon)
    ours = lrp(fused, X, TARGET, composite=kind, epsilon=epsilon)
    assert_unchanged(fused, before)
    assert expected.abs().max() > 1e-3
    assert torch.allclose(ours, expected, rtol=0, atol=1e-10 * expected.abs().max().item())


@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_fused_attention_with_its_own_scale_in_both_forms(kind, monkeypatch):
    """A scale other than 1/sqrt(d): the explicit rules with every stabiliser at 0 equal the default form."""
    model = Block(True, "padding", scale=0.3).double().eval()
    fast = lrp(model, X, TARGET, composite=kind)
    monkeypatch.setattr(_implicit, "supports", lambda model: False)
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)
    explicit = lrp(model, X, TARGET, composite=kind, epsilon=0.0)
    assert torch.allclose(fast, explicit, rtol=0, atol=1e-10 * explicit.abs().max().item())
    assert not torch.allclose(fast, lrp(Block(True, "padding").double().eval(), X, TARGET, composite=kind), rtol=1e-3)


class Refused(Block):
    def __init__(self, **call):
        super().__init__(True)
        self.call = call

    def attend(self, h):
        q = k = v = h.unflatten(-1, (self.heads, 4)).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v, **self.call).transpose(1, 2).flatten(2)


@pytest.mark.parametrize("call, message", [
    (dict(dropout_p=0.1), r"without dropout and without grouped-query attention; got dropout_p=0.1, enable_gqa=False"),
    (dict(enable_gqa=True), r"got dropout_p=0.0, enable_gqa=True"),
    (dict(attn_mask=torch.full((7, 7), 0.5)), r"attn_mask as a boolean mask or a float mask of 0 and -inf"),
])
@pytest.mark.parametrize("epsilon", [None, 1e-6])
def test_what_the_fused_rules_do_not_cover_is_refused(call, message, epsilon):
    model = Refused(**call).eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        lrp(model, X.float(), TARGET, composite="attn_lrp", epsilon=epsilon)
    assert_unchanged(model, before)


class FunctionalLayers(nn.Module):
    """Layers called as functions (F.linear, F.conv1d) on the parameters of modules that are not called."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.embed, self.conv = nn.Linear(6, 16), nn.Conv1d(16, 16, 3, bias=False)
        self.norm, self.attention = nn.LayerNorm(16), nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = F.linear(x, self.embed.weight, self.embed.bias)
        h = h + F.conv1d(h.transpose(1, 2), self.conv.weight, padding=1).transpose(1, 2)
        h = h + self.attention(*(self.norm(h),) * 3, need_weights=False)[0]
        return self.head(F.gelu(h).mean(1))


@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_layers_called_as_functions_get_the_epsilon_rule(kind, monkeypatch):
    """The explicit rules give F.linear and F.conv1d called outside a module the epsilon rule (they passed the
    relevance through as a gradient before); with every stabiliser at 0 they equal the default form, whose
    plain gradient is right for them."""
    model = FunctionalLayers().double().eval()
    fast = lrp(model, X, TARGET, composite=kind)
    monkeypatch.setattr(_implicit, "supports", lambda model: False)
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)
    explicit = lrp(model, X, TARGET, composite=kind, epsilon=0.0)
    assert explicit.abs().max() > 1e-3
    assert torch.allclose(fast, explicit, rtol=0, atol=1e-10 * explicit.abs().max().item())


def test_a_layer_function_whose_weight_depends_on_the_input_is_refused():
    class InputWeight(FunctionalLayers):
        def forward(self, x):
            h = self.embed(x)
            return self.head(F.linear(h, h[:, :16]).mean(1)[:, :16])

    with pytest.raises(ValueError, match="no rule for linear with a weight that depends on the input"):
        lrp(InputWeight().eval(), X.float(), TARGET, composite="attn_lrp", epsilon=1e-6)
