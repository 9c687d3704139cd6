"""AttnLRP and CP-LRP (chapter "Explaining transformers"): each rule against a float64 matrix form written
here, the attention block against a reference of the whole block, conservation up to the terms the paper
names, agreement with lxt (the authors' library), and what is refused."""
import importlib

import pytest
import torch
import torchvision
from helpers import assert_unchanged, snapshot
from torch import nn
from torch.nn import functional as F

from xaiutils.attribution import _relevance, lxt_reference
from xaiutils.attribution.lrp_transformer import (AttentionRules, attach_attention, attention_forward,
                                                   layer_norm_rule, matmul_rule, softmax_rule, transformer_functions)
from xaiutils.attribution._canonize import explicit_additions
from xaiutils.attribution.lrp import Composite, epsilon_rule, lrp, named_composite
from xaiutils.core.model_state import explaining
from xaiutils.text import TextClassifier, TextConfig

@pytest.fixture(autouse=True)
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def relevance_of(out, inputs, relevance):
    """The backward of the rules carries relevance: seeding the output with R gives the inputs' R."""
    return torch.autograd.grad(out, inputs, grad_outputs=relevance)


def stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0)


# ---------------------------------------------------------------------------- each rule, matrix form
def test_softmax_rule_is_the_taylor_expansion_and_leaks_its_bias():
    """R_i = x_i (R_i - s_i sum_j R_j), written out as the epsilon rule on the linearisation
    s(x) ~ J x + b with J_ji = s_j (delta_ij - s_i): the bias b = s - J x absorbs sum_j b_j R_j / s_j."""
    torch.manual_seed(0)
    x, relevance = torch.randn(5), torch.randn(5)
    x_leaf = x.clone().requires_grad_(True)
    (ours,) = relevance_of(softmax_rule(x_leaf, 0), x_leaf, relevance)
    s = torch.softmax(x, 0)
    jacobian = torch.diag(s) - torch.outer(s, s)  # J[j, i] = ds_j / dx_i
    expected = torch.stack([sum(x[i] * jacobian[j, i] * relevance[j] / s[j] for j in range(5)) for i in range(5)])
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-14)
    bias = s - jacobian @ x
    assert abs(ours.sum() - (relevance.sum() - (bias * relevance / s).sum())) < 1e-12
    assert abs(ours.sum() - relevance.sum()) > 1e-3  # the bias term is not negligible


def test_softmax_rule_gives_masked_scores_nothing():
    x = torch.tensor([0.3, float("-inf"), -1.2, 2.0]).requires_grad_(True)
    (ours,) = relevance_of(softmax_rule(x, 0), x, torch.tensor([0.5, 0.0, -0.2, 1.0]))
    assert ours[1] == 0 and torch.isfinite(ours).all()


@pytest.mark.parametrize("share", [0.5, 0.0])
def test_matmul_rule_splits_each_product_between_its_factors(share):
    """c_ik = sum_j a_ij b_jk: the epsilon rule over j, then a_ij b_jk's relevance split share : 1 - share."""
    torch.manual_seed(1)
    a, b, relevance, eps = torch.randn(3, 4), torch.randn(4, 2), torch.randn(3, 2), 1e-3
    leaves = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ours_a, ours_b = relevance_of(matmul_rule(*leaves, share, eps), leaves, relevance)
    c = a @ b
    expected_a, expected_b = torch.zeros_like(a), torch.zeros_like(b)
    for i in range(3):
        for j in range(4):
            for k in range(2):
                product = a[i, j] * b[j, k] * relevance[i, k] / stab(c[i, k], eps)
                expected_a[i, j] += share * product
                expected_b[j, k] += (1 - share) * product
    assert torch.allclose(ours_a, expected_a, rtol=1e-12, atol=1e-14)
    assert torch.allclose(ours_b, expected_b, rtol=1e-12, atol=1e-14)
    conserved = (ours_a.sum() + ours_b.sum()) / (relevance * c / stab(c, eps)).sum()
    assert abs(conserved - 1) < 1e-12


def test_layer_norm_rule_is_the_epsilon_rule_on_the_norm_with_sigma_held():
    """y = gamma (x - mean x) / sigma + beta with sigma constant is y = M x + beta, M = diag(gamma / sigma) C:
    R_x = x * M^T (R / stab(y)); the sum is kept up to the bias: sum R_x = sum (y - beta) R / stab(y)."""
    torch.manual_seed(2)
    norm = nn.LayerNorm(6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x, relevance, eps = torch.randn(3, 6) * 2 + 1, torch.randn(3, 6), 1e-4
    x_leaf = x.clone().requires_grad_(True)
    out = layer_norm_rule(x_leaf, norm, eps)
    assert torch.allclose(out, norm(x), rtol=0, atol=1e-14)
    (ours,) = relevance_of(out, x_leaf, relevance)
    centring = torch.eye(6) - torch.full((6, 6), 1 / 6)
    y = norm(x).detach()
    for row in range(3):
        sigma = (x[row].var(unbiased=False) + norm.eps).sqrt()
        matrix = torch.diag(norm.weight.detach() / sigma) @ centring
        expected = x[row] * (matrix.T @ (relevance[row] / stab(y[row], eps)))
        assert torch.allclose(ours[row], expected, rtol=1e-12, atol=1e-14)
        kept = ((y[row] - norm.bias.detach()) * relevance[row] / stab(y[row], eps)).sum()
        assert abs(ours[row].sum() - kept) < 1e-12


def test_identity_rule_on_gelu_as_module_and_as_function():
    """GELU passes relevance unchanged, whether a module or F.gelu inside the forward."""
    class Functional(nn.Module):
        def __init__(self, first, second):
            super().__init__()
            self.first, self.second, self.norm = first, second, nn.LayerNorm(8)

        def forward(self, x):
            return self.second(F.gelu(self.norm(self.first(x))))

    torch.manual_seed(3)
    first, second = nn.Linear(4, 8), nn.Linear(8, 3)
    with_module = nn.Sequential(first, nn.LayerNorm(8), nn.GELU(), second).eval()
    with_module[1].load_state_dict(Functional(first, second).norm.state_dict())
    functional = Functional(first, second).eval()
    functional.norm.load_state_dict(with_module[1].state_dict())
    x = torch.randn(5, 4)
    assert torch.equal(lrp(with_module, x, 1, composite="attn_lrp"), lrp(functional, x, 1, composite="attn_lrp"))
    h = torch.randn(2, 8).requires_grad_(True)
    relevance = torch.randn(2, 8)
    with torch.enable_grad(), transformer_functions(nn.Identity(), AttentionRules(), []):
        out = F.gelu(h)
    assert torch.allclose(out, F.gelu(h.detach()), rtol=0, atol=0)
    assert torch.equal(relevance_of(out, h, relevance)[0], relevance)
    for function in (F.silu, F.elu, F.mish, torch.tanh):
        with torch.enable_grad(), transformer_functions(nn.Identity(), AttentionRules(), []):
            out = function(h)
        assert torch.equal(relevance_of(out, h, relevance)[0], relevance)


def test_layer_norm_as_a_function_gets_the_rule_of_the_module():
    class Functional(nn.Module):
        def __init__(self, first, norm, second):
            super().__init__()
            self.first, self.norm, self.second = first, norm, second

        def forward(self, x):
            h = F.layer_norm(self.first(x), (8,), self.norm.weight, self.norm.bias, eps=self.norm.eps)
            return self.second(h)

    torch.manual_seed(11)
    first, norm, second = nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(5, 4)
    module = lrp(nn.Sequential(first, norm, second).eval(), x, 2, composite="attn_lrp")
    assert torch.allclose(lrp(Functional(first, norm, second).eval(), x, 2, composite="attn_lrp"), module,
                          rtol=1e-12, atol=1e-15)
    assert not torch.allclose(module, lrp(nn.Sequential(first, second).eval(), x, 2), rtol=1e-2)  # the norm counts


def test_functions_linear_in_the_input_get_the_epsilon_rule():
    """A constant added is a bias (R_x = x R / stab(x + c)); scaling passes R; a sum shares it in proportion."""
    torch.manual_seed(4)
    x, constant, relevance = torch.randn(3, 4), torch.randn(4), torch.randn(3, 4)
    x_leaf = x.clone().requires_grad_(True)
    with torch.enable_grad(), transformer_functions(nn.Identity(), AttentionRules(epsilon=0.0), []):
        added, scaled, summed = x_leaf + constant, x_leaf / 3.0, x_leaf.sum(1)
    assert torch.allclose(relevance_of(added, x_leaf, relevance)[0], x * relevance / (x + constant), rtol=1e-12)
    assert torch.allclose(relevance_of(scaled, x_leaf, relevance)[0], relevance, rtol=1e-12)
    with torch.enable_grad(), transformer_functions(nn.Identity(), AttentionRules(epsilon=0.0), []):
        in_place = x_leaf * 1.0
        in_place += constant
    assert torch.allclose(relevance_of(in_place, x_leaf, relevance)[0], x * relevance / (x + constant), rtol=1e-12)
    row_relevance = torch.randn(3)
    assert torch.allclose(relevance_of(summed, x_leaf, row_relevance)[0], x * (row_relevance / x.sum(1))[:, None],
                          rtol=1e-12)


# ---------------------------------------------------------------------------- the attention block
def attention(embed=16, heads=4, batch_first=True, bias=True, kdim=None, seed=5):
    torch.manual_seed(seed)
    module = nn.MultiheadAttention(embed, heads, bias=bias, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    for p in module.parameters():
        nn.init.normal_(p, std=0.4)
    return module


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool", "float", "attn3d"])
def test_recomputed_attention_gives_the_module_output(batch_first, masks):
    module = attention(batch_first=batch_first)
    torch.manual_seed(6)
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    padding = torch.tensor([[False] * 5 + [True] * 2, [False] * 7])
    causal = torch.triu(torch.ones(5, 7, dtype=torch.bool), diagonal=3)
    kwargs = {"none": {}, "bool": {"key_padding_mask": padding, "attn_mask": causal},
              "float": {"key_padding_mask": torch.zeros(2, 7).masked_fill(padding, float("-inf"))},
              "attn3d": {"attn_mask": causal.expand(8, 5, 7)}}[masks]
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    expected = module(q, kv, kv, need_weights=False, **kwargs)[0]
    for kind in ("attn_lrp", "cp_lrp"):
        ours = attention_forward(module, q, kv, kv, kwargs.get("key_padding_mask"), kwargs.get("attn_mask"),
                                 AttentionRules(kind))
        assert torch.allclose(ours, expected, rtol=0, atol=1e-12)


def test_recomputed_cross_attention_with_other_key_width():
    module = attention(kdim=6)
    torch.manual_seed(7)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 4, 6)
    assert torch.allclose(attention_forward(module, q, kv, kv), module(q, kv, kv)[0], rtol=0, atol=1e-12)


def reference_attention(module, x, relevance, kind):
    """AttnLRP/CP-LRP through self-attention on one sequence x (L, E), epsilon = 0, written as matrices.
    Returns R_x and the relevance each bias and each softmax absorbs."""
    heads, width = module.num_heads, module.head_dim
    w_q, w_k, w_v = (w.detach() for w in module.in_proj_weight.chunk(3))
    b_q, b_k, b_v = (b.detach() for b in module.in_proj_bias.chunk(3))
    w_q, b_q = w_q / width ** 0.5, b_q / width ** 0.5
    w_o, b_o = module.out_proj.weight.detach(), module.out_proj.bias.detach()

    def linear_back(inp, w, b, r):
        z = inp @ w.T + b
        return inp * ((r / z) @ w), (b * r / z).sum()

    q, k, v = x @ w_q.T + b_q, x @ w_k.T + b_k, x @ w_v.T + b_v
    context, scores, weights = [], [], []
    for h in range(heads):
        cut = slice(h * width, (h + 1) * width)
        scores.append(q[:, cut] @ k[:, cut].T)
        weights.append(torch.softmax(scores[-1], -1))
        context.append(weights[-1] @ v[:, cut])
    r_context, leak = linear_back(torch.cat(context, 1), w_o, b_o, relevance)
    r_q, r_k, r_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    softmax_leak = 0.0
    for h in range(heads):
        cut = slice(h * width, (h + 1) * width)
        s_c = r_context[:, cut] / context[h]
        a_share = 0.5 if kind == "attn_lrp" else 0.0
        r_weights = a_share * weights[h] * (s_c @ v[:, cut].T)
        r_v[:, cut] = (1 - a_share) * v[:, cut] * (weights[h].T @ s_c)
        if kind == "attn_lrp":
            r_scores = scores[h] * (r_weights - weights[h] * r_weights.sum(-1, keepdim=True))
            softmax_leak += r_weights.sum() - r_scores.sum()
            s_s = r_scores / scores[h]
            r_q[:, cut] = 0.5 * q[:, cut] * (s_s @ k[:, cut])
            r_k[:, cut] = 0.5 * k[:, cut] * (s_s.T @ q[:, cut])
    r_x = torch.zeros_like(x)
    for w, b, r in ((w_q, b_q, r_q), (w_k, b_k, r_k), (w_v, b_v, r_v)):
        part, bias_leak = linear_back(x, w, b, r)
        r_x, leak = r_x + part, leak + bias_leak
    return r_x, leak, softmax_leak


@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_attention_block_against_its_matrix_form_and_its_leaks(kind):
    """Elementwise against the reference; and sum R_x = sum R_out - (bias terms) - (softmax terms) to 1e-10."""
    module = attention()
    torch.manual_seed(8)
    x, relevance = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    x_leaf = x.clone().requires_grad_(True)
    (ours,) = relevance_of(attention_forward(module, x_leaf, x_leaf, x_leaf, rules=AttentionRules(kind, 0.0)),
                           x_leaf, relevance)
    expected, bias_leak, softmax_leak = reference_attention(module, x[0], relevance[0], kind)
    assert torch.allclose(ours[0], expected, rtol=1e-10, atol=1e-12 * expected.abs().max().item())
    assert abs(ours.sum() - (relevance.sum() - bias_leak - softmax_leak)) < 1e-10 * relevance.abs().sum()
    assert abs(bias_leak) > 1e-3 and (kind == "cp_lrp") == (softmax_leak == 0.0)


def test_cp_lrp_conserves_relevance_through_bias_free_attention():
    """Without biases, CP-LRP's attention is linear in V: the sum is kept to rounding (1e-10 relative)."""
    module = attention(bias=False)
    torch.manual_seed(9)
    x, relevance = torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    x_leaf = x.clone().requires_grad_(True)
    (ours,) = relevance_of(attention_forward(module, x_leaf, x_leaf, x_leaf, rules=AttentionRules("cp_lrp", 0.0)),
                           x_leaf, relevance)
    out = attention_forward(module, x, x, x)
    assert abs(ours.sum() / relevance.sum() - 1) < 1e-10


# ---------------------------------------------------------------------------- whole models
def tiny_vit(seed=0):
    torch.manual_seed(seed)
    vit = torchvision.models.VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=4, hidden_dim=32,
                                               mlp_dim=64, num_classes=10).double().eval()
    nn.init.normal_(vit.heads.head.weight, std=0.3)  # torchvision starts the head at zero
    nn.init.normal_(vit.heads.head.bias, std=0.1)
    return vit


def text_model(pooling="cls", seed=0):
    torch.manual_seed(seed)
    return TextClassifier(TextConfig(vocab_size=30, layers=2, pooling=pooling)).double().eval()


def token_ids():
    torch.manual_seed(10)
    ids = torch.randint(4, 30, (3, 8))
    ids[:, 0] = 2
    ids[0, 5:] = 0  # <pad>
    return ids


def without_biases(model):
    """Every bias, LayerNorm shift, position embedding and class token set to zero: nothing absorbs relevance."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "pos_embedding" in name or "class_token" in name or "position" in name:
                p.zero_()
    return model


def hooked_output(model, x, kind, embedding=None):
    """The model's output while every rule is attached, as lrp runs it."""
    rules = AttentionRules(kind)
    with explaining(model) as hooks:
        _relevance.attach(model, named_composite(kind).layer_rules(model), hooks)
        attach_attention(model, rules, hooks)
        leaves = []
        if embedding is not None:
            hooks.append(embedding.register_forward_hook(_relevance._embedding_leaf(embedding, leaves)))
        else:
            x = x.clone().requires_grad_(True)
        with torch.enable_grad(), explicit_additions(_relevance._ProportionalSum.apply), \
                transformer_functions(model, rules, hooks):
            return model(x).detach()


@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_hooked_models_give_their_own_output(kind):
    vit, x = tiny_vit(), torch.randn(2, 3, 28, 28)
    assert torch.allclose(hooked_output(vit, x, kind), vit(x), rtol=0, atol=1e-12)
    for pooling in ("cls", "mean"):
        model = text_model(pooling)
        assert torch.allclose(hooked_output(model, token_ids(), kind, model.embedding), model(token_ids()),
                              rtol=0, atol=1e-12)


def test_replaced_attention_forward_returns_weights_on_request_and_is_put_back():
    """While explaining, nn.MultiheadAttention's forward is replaced (the attention runs once, with the rules).
    A caller that asks for the weights still gets the module's own; afterwards, and after an error, the
    module's forward is its class's again."""
    module = attention()
    torch.manual_seed(8)
    q = torch.randn(2, 5, 16)
    expected_out, expected_weights = module(q, q, q)
    with explaining(module) as hooks:
        attach_attention(module, AttentionRules("attn_lrp"), hooks)
        assert "forward" in module.__dict__
        with torch.enable_grad():
            out, weights = module(q.clone().requires_grad_(True), q, q)
            out_only, none = module(q, q, q, need_weights=False)
    assert torch.allclose(out, expected_out, atol=1e-12) and torch.allclose(weights, expected_weights, atol=1e-12)
    assert none is None and torch.allclose(out_only, expected_out, atol=1e-12)
    assert "forward" not in module.__dict__
    vit = tiny_vit()
    with pytest.raises(ValueError, match="out of range"):
        lrp(vit, torch.randn(1, 3, 28, 28), 99)
    assert not any("forward" in m.__dict__ for m in vit.modules())


@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_vit_relevance_sums_to_the_logit_without_biases(kind, monkeypatch):
    """With every bias, position embedding and class token zero and all stabilisers 0, CP-LRP conserves the
    logit to rounding; AttnLRP loses what its softmax linearisations absorb (the paper's bias term)."""
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)  # residual sums
    vit, x = without_biases(tiny_vit()), torch.randn(2, 3, 28, 28)
    target = torch.tensor([3, 7])
    logit = vit(x).gather(1, target[:, None])[:, 0]
    # epsilon > 0 for AttnLRP: the zero class token gives exact zero scores, 0/0 in LRP-0
    total = lrp(vit, x, target, composite=kind, epsilon=0.0 if kind == "cp_lrp" else 1e-12).flatten(1).sum(1)
    if kind == "cp_lrp":
        assert torch.allclose(total, logit, rtol=1e-10, atol=0)
    else:
        assert torch.isfinite(total).all() and not torch.allclose(total, logit, rtol=1e-3)


def test_text_relevance_per_token(monkeypatch):
    """(B, T) at the embedding output; pads, masked as keys and not pooled, get exactly 0; without biases and
    positions CP-LRP keeps the logit, with mean pooling too (its sum and division get the epsilon rule)."""
    model, ids = text_model(), token_ids()
    attr = lrp(model, ids, 1)
    assert attr.shape == (3, 8) and torch.isfinite(attr).all()
    assert torch.equal(attr[0, 5:], torch.zeros(3))
    assert torch.equal(attr, lrp(model, ids, 1, composite="attn_lrp", embedding="embedding"))
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)
    for pooling in ("cls", "mean"):
        bare = without_biases(text_model(pooling))
        logit = bare(ids)[:, 1]
        # epsilon > 0: mean pooling multiplies pads by 0, and LRP-0 would divide 0 by 0 there
        total = lrp(bare, ids, 1, composite="cp_lrp", epsilon=1e-12).sum(1)
        assert torch.allclose(total, logit, rtol=1e-8, atol=0)


def test_batches_and_targets_agree():
    vit, x, target = tiny_vit(), torch.randn(3, 3, 28, 28), torch.tensor([1, 5, 9])
    whole = lrp(vit, x, target)
    assert torch.allclose(lrp(vit, x, target, batch_size=2), whole, rtol=1e-12, atol=1e-15)
    assert torch.allclose(lrp(vit, x[1:2], 5), whole[1:2], rtol=1e-12, atol=1e-15)
    picked = lrp(vit, x, lambda out: out.gather(1, target[:, None])[:, 0])
    assert torch.allclose(picked, whole, rtol=1e-12, atol=1e-15)
    model, ids = text_model(), token_ids()
    assert torch.allclose(lrp(model, ids, 1, batch_size=1), lrp(model, ids, 1), rtol=1e-12, atol=1e-15)


def test_default_composite_is_attn_lrp_for_models_with_attention():
    """A LayerNorm without attention keeps the CNN default, which refuses it and names the composite to use."""
    with pytest.raises(ValueError, match="parameters in LayerNorm.*composite='attn_lrp'"):
        lrp(nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4)).eval(), torch.randn(2, 6), 0)
    vit, x = tiny_vit(), torch.randn(1, 3, 28, 28)
    assert torch.equal(lrp(vit, x, 2), lrp(vit, x, 2, composite="attn_lrp"))
    assert not torch.allclose(lrp(vit, x, 2), lrp(vit, x, 2, composite="cp_lrp"), rtol=1e-3)
    custom = Composite(dense=epsilon_rule(1e-6), conv=epsilon_rule(1e-6), attention="attn_lrp")
    assert torch.equal(lrp(vit, x, 2, composite=custom), lrp(vit, x, 2, composite="attn_lrp", epsilon=1e-6))


def test_transformer_composites_default_to_the_gradient_x_input_form(monkeypatch):
    """Without an epsilon, "attn_lrp" and "cp_lrp" run without stabilisers, as gradient x input (lxt's form);
    where that form does not apply (residual="gradient"), the explicit rules keep the stabiliser of 1e-6."""
    from xaiutils.attribution import _implicit
    vit, x = tiny_vit(), torch.randn(2, 3, 28, 28)
    calls = []
    original = _implicit.relevance
    monkeypatch.setattr(_implicit, "relevance", lambda *a, **k: calls.append(1) or original(*a, **k))
    for kind in ("attn_lrp", "cp_lrp"):
        assert torch.equal(lrp(vit, x, 1, composite=kind), lrp(vit, x, 1, composite=kind, epsilon=0))
    assert len(calls) == 4
    explicit = lrp(vit, x, 1, residual="gradient")
    assert len(calls) == 4
    assert torch.equal(explicit, lrp(vit, x, 1, residual="gradient", epsilon=1e-6))
    for bad in (-1e-3, float("nan"), float("inf"), "0", True):
        with pytest.raises(ValueError, match=r"epsilon must be a finite number >= 0 \(or None for the default\); got"):
            lrp(vit, x, 1, epsilon=bad)


# ---------------------------------------------------------------------------- agreement with lxt
@pytest.fixture
def lxt_efficient():
    """lxt's efficient rules and its torchvision ViT patch (xaiutils.attribution.lxt_reference loads them without
    lxt.efficient's __init__, which imports transformers); the classes lxt patches are restored afterwards."""
    pytest.importorskip("lxt")
    with lxt_reference.lxt_efficient() as modules:
        yield modules


@pytest.mark.parametrize("stabiliser, tolerance", [(0.0, 1e-7), (1e-6, 1e-3)])
def test_cp_lrp_agrees_with_lxts_vit_patch(lxt_efficient, monkeypatch, stabiliser, tolerance):
    """lxt's map for torchvision's ViT is CP-LRP (attention weights constant, LayerNorm's sigma held,
    identity on GELU, plain gradient = epsilon 0 elsewhere). With our stabilisers at 0 the two agree to 1e-7
    of the largest relevance (lxt's GELU divides by x + 1e-10); with our default 1e-6, to 1e-3."""
    monkeypatch.setattr(_relevance, "STABILISER", stabiliser)
    vit, x, target = tiny_vit(), torch.randn(2, 3, 28, 28), torch.tensor([1, 4])
    ours = lrp(vit, x, target, composite="cp_lrp", epsilon=stabiliser)
    theirs = lxt_reference.lxt_vit_relevance(vit, x, target, "cp_lrp")
    assert torch.allclose(ours, theirs, rtol=0, atol=tolerance * theirs.abs().max().item())


def test_attn_lrp_agrees_with_lxts_attention_rule(lxt_efficient, monkeypatch):
    """lxt's AttnLRP wrapper for attention functions (gradient divided by 4 at Q and K, by 2 at V; the plain
    softmax gradient is its softmax rule in gradient x input form) put on nn.MultiheadAttention, with its
    LayerNorm and GELU patches: our attn_lrp agrees to 1e-7 of the largest relevance."""
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)
    vit, x, target = tiny_vit(), torch.randn(2, 3, 28, 28), torch.tensor([1, 4])
    ours = lrp(vit, x, target, composite="attn_lrp", epsilon=0.0)
    assert not torch.allclose(ours, lrp(vit, x, target, composite="cp_lrp", epsilon=0.0), rtol=1e-2)
    theirs = lxt_reference.lxt_vit_relevance(vit, x, target, "attn_lrp")
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-7 * theirs.abs().max().item())


@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_text_model_agrees_with_lxt(lxt_efficient, monkeypatch, kind):
    """The same rules from lxt on the text classifier: its LayerNorm patch, its identity rule on the layers'
    F.gelu (set on a copy of the model), its attention wrapper (AttnLRP) or stop-gradient at Q and K
    (CP-LRP); gradient x input at the embedding output, summed per token. Agreement to 1e-7 of the largest."""
    import copy

    patches, vit_torch = lxt_efficient
    rules = importlib.import_module("lxt.efficient.rules")
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)
    model, ids, target = text_model(), token_ids(), torch.tensor([0, 1, 1])
    ours = lrp(model, ids, target, composite=kind, epsilon=1e-15)
    theirs_model = copy.deepcopy(model)
    for layer in theirs_model.layers:
        layer.activation = lambda h: rules.identity_rule_implicit(F.gelu, h)
    assert vit_torch.cp_LRP[nn.LayerNorm](nn.LayerNorm)
    attention_patch = patches.wrap_attention_forward if kind == "attn_lrp" else None
    if kind == "cp_lrp":
        assert vit_torch.cp_LRP[nn.MultiheadAttention](nn.MultiheadAttention)
    else:
        nn.MultiheadAttention.forward = attention_patch(nn.MultiheadAttention.forward)
    leaves = []

    def leaf(module, args, output):
        leaves.append(output.detach().requires_grad_(True))
        return leaves[-1]

    handle = theirs_model.embedding.register_forward_hook(leaf)
    out = theirs_model(ids)
    handle.remove()
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaves[0])
    theirs = (grad * leaves[0]).sum(-1).detach()
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-7 * theirs.abs().max().item())


# ---------------------------------------------------------------------------- the model is left as it was
def test_models_are_restored_also_on_error():
    vit, x = tiny_vit().train(), torch.randn(1, 3, 28, 28)
    before = snapshot(vit)
    for kind in ("attn_lrp", "cp_lrp"):
        with pytest.warns(UserWarning, match="training mode"):
            lrp(vit, x, 0, composite=kind)
        assert_unchanged(vit, before)
    with pytest.raises(ValueError, match="out of range"):
        lrp(vit.eval(), x, 99)
    vit.train()
    assert_unchanged(vit, before)
    model, ids = text_model(), token_ids()
    before = snapshot(model)
    lrp(model, ids, 0)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="must be token ids"):
        lrp(model, ids + 100, 0)
    assert_unchanged(model, before)


def test_an_error_inside_the_forward_leaves_no_hook_and_no_mode():
    """A float mask with values other than 0 and -inf is refused while the model runs."""
    class Biased(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.head = attention(), nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.attention(x, x, x, attn_mask=torch.full((4, 4), 0.5))[0].mean(1))

    model, x = Biased().eval(), torch.randn(2, 4, 16)
    before = snapshot(model)
    with pytest.raises(ValueError, match="attn_mask as a boolean mask or a float mask of 0 and -inf"):
        lrp(model, x, 0)
    assert_unchanged(model, before)
    assert torch.overrides._get_current_function_mode_stack() == []
    assert torch.equal(torch.ones(2) + torch.ones(2), torch.full((2,), 2.0))


# ---------------------------------------------------------------------------- refused
def test_refusals_name_what_is_wrong():
    class OwnForward(nn.MultiheadAttention):
        def forward(self, query, key, value, **kwargs):
            return super().forward(query, key, value, **kwargs)

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.head = inner, nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.inner(x, x, x)[0].mean(1))

    x = torch.randn(2, 4, 16)
    own = Wrapper(OwnForward(16, 4, batch_first=True)).eval()
    before = snapshot(own)
    with pytest.raises(ValueError, match="OwnForward overrides forward"):
        lrp(own, x, 0)
    assert_unchanged(own, before)
    with pytest.raises(ValueError, match="add_bias_kv=True"):
        lrp(Wrapper(nn.MultiheadAttention(16, 4, batch_first=True, add_bias_kv=True)).eval(), x, 0)

    class HandWritten(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
            self.norm = nn.LayerNorm(16)

        def forward(self, x):
            weights = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2), -1)
            return (weights @ self.v(self.norm(x))).mean(1)

    with pytest.raises(ValueError, match="no rule for (softmax|matmul) called as a function"):
        lrp(HandWritten().eval(), x, 0, composite="attn_lrp")

    class Exponential(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(16, 2)

        def forward(self, x):
            return self.layer(torch.exp(x).mean(1))

    with pytest.raises(ValueError, match="no rule for exp called as a function"):
        lrp(Exponential().eval(), x, 0, composite="cp_lrp")
    vit = tiny_vit()
    with pytest.raises(ValueError, match="LayerNorm, MultiheadAttention.*composite='attn_lrp'"):
        lrp(vit, torch.randn(1, 3, 28, 28), 0, composite="epsilon_plus")
    with pytest.raises(ValueError, match="Composite.attention must be one of 'attn_lrp', 'cp_lrp'; got 'cp'"):
        lrp(vit, torch.randn(1, 3, 28, 28), 0, composite=Composite(epsilon_rule(), epsilon_rule(), attention="cp"))
    with pytest.raises(ValueError, match="composite must be one of .*did you mean 'attn_lrp'"):
        lrp(vit, torch.randn(1, 3, 28, 28), 0, composite="atn_lrp")
    with pytest.raises(ValueError, match="embedding is for token ids"):
        lrp(vit, torch.randn(1, 3, 28, 28), 0, embedding="conv_proj")
    with pytest.raises(ValueError, match="embedding must be given"):
        lrp(Wrapper(nn.MultiheadAttention(16, 4, batch_first=True)).eval(), torch.ones(1, 4, dtype=torch.long), 0)


# ---------------------------------------------------------------------------- epsilon=0: gradient x input form
@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_implicit_form_equals_the_explicit_rules_without_stabilisers(kind, monkeypatch):
    """lrp(..., epsilon=0) runs the gradient x input form (_implicit); the explicit rules with every stabiliser
    at 0 give the same relevance, on the ViT and on the text model (padding mask included), in float64."""
    from xaiutils.attribution import _implicit

    vit, x, target = tiny_vit(), torch.randn(3, 3, 28, 28, dtype=torch.float64), torch.tensor([1, 4, 7])
    fast = lrp(vit, x, target, composite=kind, epsilon=0.0)
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(_implicit, "supports", lambda model: calls.append(model) or False)
        patch.setattr(_relevance, "STABILISER", 0.0)
        explicit = lrp(vit, x, target, composite=kind, epsilon=0.0)
    assert calls and torch.allclose(fast, explicit, rtol=0, atol=1e-10 * explicit.abs().max().item())
    monkeypatch.setattr(_relevance, "STABILISER", 0.0)
    for pooling in ("cls", "mean"):  # the padded positions' zeros need a tiny epsilon in the explicit rules
        model, ids = text_model(pooling), token_ids()
        explicit = lrp(model, ids, torch.tensor([0, 1, 1]), composite=kind, epsilon=1e-15)
        fast = lrp(model, ids, torch.tensor([0, 1, 1]), composite=kind, epsilon=0.0)
        assert torch.allclose(fast, explicit, rtol=0, atol=1e-10 * explicit.abs().max().item())


class CrossAndSelfAttention(nn.Module):
    """Self-attention (Q, K, V in one product in the implicit form), then cross-attention to a memory of another
    width with a padding mask (three products), and the activations whose ratio phi(x)/x has a closed form."""

    def __init__(self, batch_first: bool, kdim: int | None):
        super().__init__()
        torch.manual_seed(11)
        self.batch_first = batch_first
        self.embed, self.memory = nn.Linear(6, 16), nn.Linear(6, kdim or 16)
        self.self_attention = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.cross_attention = nn.MultiheadAttention(16, 2, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.mlp, self.act, self.head = nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3)

    def forward(self, x):
        q, memory = self.embed(x[:, :3]), self.memory(x[:, 3:])
        padding = torch.zeros(x.shape[0], memory.shape[1], dtype=torch.bool)
        padding[0, -1] = True
        if not self.batch_first:
            q, memory = q.transpose(0, 1), memory.transpose(0, 1)
        h = q + self.self_attention(q, q, q, need_weights=False)[0]
        h = self.cross_attention(h, memory, memory, key_padding_mask=padding, need_weights=False)[0]
        h = F.silu(self.act(h)) + F.gelu(self.mlp(h), approximate="tanh")
        return self.head(h.mean(0 if not self.batch_first else 1))


@pytest.mark.parametrize("batch_first, kdim", [(True, None), (False, None), (True, 5)])
@pytest.mark.parametrize("kind", ["attn_lrp", "cp_lrp"])
def test_implicit_form_equals_the_explicit_rules_on_cross_attention(batch_first, kdim, kind, monkeypatch):
    """The implicit form's shortcuts (one product for Q, K and V in self-attention, the rule's factors folded
    into the projections' backward weights, GELU's and SiLU's phi(x)/x without nan_to_num) against the
    explicit rules with every stabiliser at 0, in float64; batch-second sequences and another key width too."""
    from xaiutils.attribution import _implicit
    model = CrossAndSelfAttention(batch_first, kdim).double().eval()
    x, target = torch.randn(3, 7, 6, dtype=torch.float64), torch.tensor([0, 2, 1])
    fast = lrp(model, x, target, composite=kind)
    with monkeypatch.context() as patch:
        patch.setattr(_implicit, "supports", lambda model: False)
        patch.setattr(_relevance, "STABILISER", 0.0)
        explicit = lrp(model, x, target, composite=kind, epsilon=0.0)
    assert explicit.abs().max() > 1e-3
    assert torch.allclose(fast, explicit, rtol=0, atol=1e-10 * explicit.abs().max().item())


@pytest.mark.parametrize("activation", [F.gelu, nn.SiLU, torch.sigmoid, F.softplus])
def test_identity_rule_gradient_is_phi_over_x_and_zero_at_zero(activation):
    """The implicit identity rule's gradient is g * phi(x) / x, and 0 (not nan, not inf) where x is exactly 0,
    for the activations with phi(0) = 0 and for those without (sigmoid, softplus)."""
    from xaiutils.attribution import _implicit
    phi = activation() if isinstance(activation, type) else activation
    x = torch.tensor([-2.0, -1e-30, 0.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.5], dtype=torch.float64)
    with torch.enable_grad():
        y = _implicit._identity_rule(x, phi(x), activation)
    (grad,) = torch.autograd.grad(y, x, g)
    assert torch.equal(y, phi(x.detach()))
    expected = g * phi(x.detach()) / x.detach()
    keep = torch.isfinite(expected) & (x != 0)
    assert torch.allclose(grad[keep], expected[keep], rtol=1e-12, atol=0) and grad[2] == 0
    assert torch.isfinite(grad).all()


def test_implicit_form_agrees_with_lxt_and_leaves_the_model_as_it_was(lxt_efficient):
    vit, x, target = tiny_vit(), torch.randn(2, 3, 28, 28), torch.tensor([1, 4])
    before = snapshot(vit)
    ours = lrp(vit, x, target, composite="attn_lrp", epsilon=0.0)
    assert_unchanged(vit, before)
    assert not any("forward" in m.__dict__ for m in vit.modules())
    theirs = lxt_reference.lxt_vit_relevance(vit, x, target, "attn_lrp")
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-7 * theirs.abs().max().item())


def test_implicit_form_refuses_what_the_explicit_rules_refuse():
    class SoftmaxInForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.attention(x, x, x, need_weights=False)[0]
            return self.head(torch.softmax(h, -1).mean(1))

    model, x = SoftmaxInForward().eval(), torch.randn(2, 4, 8)
    for epsilon in (0.0, 1e-6):
        with pytest.raises(ValueError, match="no rule for softmax"):
            lrp(model, x, 0, epsilon=epsilon)
        assert not any("forward" in m.__dict__ for m in model.modules())


def test_lxt_reference_puts_back_the_classes_and_modules_it_changes():
    pytest.importorskip("lxt")
    import sys

    forwards = {cls: cls.__dict__["forward"] for cls in lxt_reference.PATCHED}
    loaded = {name for name in sys.modules if name.startswith("lxt.efficient")}
    vit, x = tiny_vit(), torch.randn(1, 3, 28, 28)
    for kind in ("attn_lrp", "cp_lrp"):
        assert lxt_reference.lxt_vit_relevance(vit, x, 3, kind).shape == x.shape
    with pytest.raises(ValueError, match="kind must be one of"):
        lxt_reference.lxt_vit_relevance(vit, x, 3, "lrp")
    with pytest.raises(RuntimeError), lxt_reference.lxt_efficient() as (patches, vit_torch):
        nn.MultiheadAttention.forward = patches.wrap_attention_forward(nn.MultiheadAttention.forward)
        raise RuntimeError("inside")
    assert {cls: cls.__dict__["forward"] for cls in lxt_reference.PATCHED} == forwards
    assert not any("original_forward" in cls.__dict__ for cls in lxt_reference.PATCHED)
    assert {name for name in sys.modules if name.startswith("lxt.efficient")} == loaded
