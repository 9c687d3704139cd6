"""Raw attention, attention rollout and Chefer's relevance: xaiutils.attribution.attention.

References, all independent of the code under test: a float64 forward pass of torchvision's
ViT and of the text model written out in matrix form (attention = softmax(QK^T / sqrt(d)) from
the projection weights), torch's own attention weights (need_weights=True), closed forms of
rollout (identity and uniform attention, one layer) and Chefer's rule on one block by hand.
"""
from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import VisionTransformer

from helpers import assert_untouched, mnist_cnn, snapshot
from xaiutils.attribution._attention_maps import recording
from xaiutils.attribution._tokens import token_grid
from xaiutils.attribution.attention import (attention_relevance, attention_rollout, fuse_heads, raw_attention,
                                            relevance, rollout)
from xaiutils.core.model_state import explaining
from xaiutils.text import TextClassifier, TextConfig

ATOL = 1e-10  # float64 against float64 references


# ---------------------------------------------------------------------------- models and references
def tiny_vit(layers: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=28, patch_size=7, num_layers=layers, num_heads=4, hidden_dim=32,
                              mlp_dim=64, num_classes=10)
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every gradient would be 0
    nn.init.normal_(model.class_token, std=0.5)
    nn.init.normal_(model.encoder.pos_embedding, std=0.5)
    return model.double().eval()


def images(b: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def text_model(pooling: str = "cls", layers: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TextClassifier(TextConfig(vocab_size=30, classes=3, dim=16, heads=2, layers=layers, hidden=32,
                                     pooling=pooling)).double().eval()


IDS = torch.tensor([[2, 5, 6, 7, 0, 0], [2, 8, 9, 10, 11, 12], [2, 13, 0, 0, 0, 0]])


def _heads(h, w, b, heads):  # (B, T, E) -> (B, heads, T, d)
    n, t, e = h.shape
    return (h @ w.T + b).reshape(n, t, heads, e // heads).transpose(1, 2)


def _attention(mha: nn.MultiheadAttention, h: torch.Tensor, padding=None):
    """Matrix form of self-attention: (probabilities (B, heads, T, T), output (B, T, E))."""
    e, heads = h.shape[-1], mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q, k, v = (_heads(h, w[i * e:(i + 1) * e], b[i * e:(i + 1) * e], heads) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(e // heads)
    if padding is not None:
        scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    a = torch.softmax(scores, -1)
    out = (a @ v).transpose(1, 2).reshape(h.shape) @ mha.out_proj.weight.T + mha.out_proj.bias
    return a, out


def vit_reference(model, x):
    """(logits, [A per block]) of torchvision's ViT, written out."""
    n = len(x)
    t = model.conv_proj(x).flatten(2).transpose(1, 2)
    t = torch.cat([model.class_token.expand(n, -1, -1), t], 1) + model.encoder.pos_embedding
    attentions = []
    for block in model.encoder.layers:
        a, out = _attention(block.self_attention, block.ln_1(t))
        attentions.append(a)
        t = t + out
        t = t + block.mlp(block.ln_2(t))
    return model.heads(model.encoder.ln(t)[:, 0]), attentions


def text_reference(model, ids):
    """(logits, [A per layer]) of TextClassifier (pre-norm layers, GELU), written out."""
    padding = ids == model.pad_id
    t = model.embedding(ids) + model.position.weight[: ids.shape[1]]
    attentions = []
    for layer in model.layers:
        a, out = _attention(layer.self_attn, layer.norm1(t), padding)
        attentions.append(a)
        t = t + out
        t = t + layer.linear2(F.gelu(layer.linear1(layer.norm2(t))))
    if model.config.pooling == "cls":
        pooled = t[:, 0]
    else:
        keep = (~padding).to(t.dtype)[..., None]
        pooled = (t * keep).sum(1) / keep.sum(1)
    return model.head(model.norm(pooled)), attentions


def reference_maps(model, x, target):
    """Raw (per layer, mean over heads), rollout and Chefer's R, from the written-out model, in numpy loops."""
    forward = vit_reference if x.is_floating_point() else text_reference
    with torch.enable_grad():
        logits, attentions = forward(model, x)
        grads = torch.autograd.grad(logits[:, target].sum(), attentions)
    a = [t.detach().numpy() for t in attentions]
    g = [t.detach().numpy() for s in [grads] for t in s]
    tokens = a[0].shape[-1]
    eye = np.eye(tokens)
    rolled, r = [], []
    for i in range(len(x)):
        joint, rel = eye, eye
        for layer in range(len(a)):
            fused = a[layer][i].mean(0)
            step = 0.5 * fused + 0.5 * eye
            joint = (step / step.sum(1, keepdims=True)) @ joint
            rel = rel + np.maximum(g[layer][i] * a[layer][i], 0).mean(0) @ rel
        rolled.append(joint)
        r.append(rel)
    return [layer.mean(1) for layer in a], np.stack(rolled), np.stack(r), logits.detach()


def _patches(rows):  # (B, T) with a class token -> (B, 1, 4, 4)
    return torch.as_tensor(rows)[:, 1:].reshape(-1, 1, 4, 4)


# ---------------------------------------------------------------------------- the references agree with the models
def test_the_written_out_models_are_the_models():
    vit, x = tiny_vit(), images()
    assert torch.allclose(vit_reference(vit, x)[0], vit(x), atol=1e-12)
    text = text_model()
    assert torch.allclose(text_reference(text, IDS)[0], text(IDS), atol=1e-12)
    mean = text_model("mean")
    assert torch.allclose(text_reference(mean, IDS)[0], mean(IDS), atol=1e-12)


@pytest.mark.parametrize("batch_first", [True, False])
def test_recorded_probabilities_are_torchs_own_attention_weights(batch_first):
    """Masks of every kind: key padding (bool), an additive float mask, a boolean causal mask."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).double().eval()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    x_in = x if batch_first else x.transpose(0, 1)
    padding = torch.tensor([[False] * 4 + [True], [False] * 5])
    for kwargs in [{}, {"key_padding_mask": padding}, {"attn_mask": torch.randn(5, 5, dtype=torch.float64)},
                   {"attn_mask": torch.ones(5, 5, dtype=torch.bool).triu(1), "key_padding_mask": padding}]:
        expected_out, expected = mha(x_in, x_in, x_in, need_weights=True, average_attn_weights=False, **kwargs)
        with explaining(mha) as hooks, recording(mha, hooks) as calls:
            out, _ = mha(x_in, x_in, x_in, need_weights=False, **kwargs)
        assert len(calls) == 1 and torch.allclose(calls[0].probabilities, expected, atol=1e-12)
        assert torch.allclose(out, expected_out, atol=1e-12)


def test_recorded_probabilities_of_unbatched_cross_attention_with_other_key_widths():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, kdim=6, vdim=6).double().eval()
    q, kv = torch.randn(5, 12, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    padding = torch.tensor([False, False, True, False])
    expected_out, expected = mha(q, kv, kv, key_padding_mask=padding, average_attn_weights=False)
    with explaining(mha) as hooks, recording(mha, hooks) as calls:
        out, _ = mha(q, kv, kv, key_padding_mask=padding)
    assert torch.allclose(calls[0].probabilities[0], expected, atol=1e-12) and torch.equal(out, expected_out)
    assert calls[0].padding.tolist() == [padding.tolist()]


def unfused_output(model, x):
    """The model's output with torch's fused attention kernels switched off (and on again after)."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


@pytest.mark.parametrize("kind", ["vit", "text"])
def test_recording_leaves_the_output_and_its_input_gradient_as_they_are(kind):
    """The module's output value is passed on bit for bit (that of the unfused kernels, which
    recording switches to; the fused ones agree to rounding); the recomputation only carries the gradient."""
    model = tiny_vit() if kind == "vit" else text_model()
    x = images() if kind == "vit" else IDS
    with explaining(model):
        fused, plain = model(x), unfused_output(model, x)
        with explaining(model) as hooks, recording(model, hooks) as calls:
            recorded = model(x)
        assert torch.equal(plain, recorded) and len(calls) == 2
        assert torch.allclose(fused, recorded, atol=1e-12)
        if kind == "vit":
            def input_gradient(record):
                leaf = x.clone().requires_grad_()
                with explaining(model) as hooks:
                    if record:
                        with recording(model, hooks):
                            return torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)[0]
                    return torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)[0]
            assert torch.allclose(input_gradient(True), input_gradient(False), atol=1e-12)
    assert torch.backends.mha.get_fastpath_enabled()


def test_the_fused_fast_path_is_skipped_inside_without_the_global_switch():
    """Float32 text model in eval mode under no_grad: torch would run its fused encoder-layer kernel. Inside,
    every attention module is called and the output is the unfused one to the last bit, while the process-wide
    switch (torch.backends.mha) stays on, and another thread meanwhile still gets the fused kernel."""
    torch.manual_seed(0)
    model = TextClassifier(TextConfig(vocab_size=30, dim=16, heads=2, layers=2, hidden=32)).eval()
    twin = copy.deepcopy(model)  # without the hooks, which would keep the fast path out too
    with torch.no_grad():
        fused, unfused = model(IDS), unfused_output(model, IDS)
        assert not torch.equal(fused, unfused)  # else this test could not tell the paths apart
        with explaining(model) as hooks, recording(model, hooks) as calls:
            assert torch.backends.mha.get_fastpath_enabled()
            assert torch.equal(model(IDS), unfused) and len(calls) == 2
            other = []

            def in_another_thread():
                with torch.no_grad():  # grad mode is per thread too
                    other.append(torch.equal(twin(IDS), fused))

            thread = threading.Thread(target=in_another_thread)
            thread.start()
            thread.join()
            assert other == [True] and len(calls) == 2
    assert torch.backends.mha.get_fastpath_enabled()
    raw = raw_attention(model, IDS)
    assert raw.shape == IDS.shape and torch.isfinite(raw).all()


# ---------------------------------------------------------------------------- against the float64 references
@pytest.mark.parametrize("kind", ["vit", "text", "text_mean"])
def test_the_three_methods_match_the_written_out_reference(kind):
    model = {"vit": tiny_vit, "text": text_model, "text_mean": lambda: text_model("mean")}[kind]()
    x = images() if kind == "vit" else IDS
    raw, rolled, rel, _ = reference_maps(model, x, 2)
    if kind == "vit":
        def read(m):
            return _patches(m[:, 0])
        options = {"upsample": None}
    else:
        real = (IDS != 0).double()

        def read(m):
            if kind == "text_mean":
                rows = (torch.as_tensor(m) * real[:, :, None]).sum(1) / real.sum(1, keepdim=True)
                return rows
            rows = torch.as_tensor(m)[:, 0].clone()
            rows[:, 0] = 0  # the class token's own entry
            return rows
        options = {}
    for layer in range(2):
        assert torch.allclose(raw_attention(model, x, layer=layer, **options), read(raw[layer]), atol=ATOL)
    assert torch.allclose(raw_attention(model, x, **options), read(raw[-1]), atol=ATOL)
    assert torch.allclose(attention_rollout(model, x, **options), read(rolled), atol=ATOL)
    assert torch.allclose(attention_relevance(model, x, 2, **options), read(rel), atol=ATOL)
    assert attention_relevance(model, x, 2, **options).abs().sum() > 0  # the test is not vacuous


def test_head_fusions_max_and_min():
    vit, x = tiny_vit(), images()
    _, attentions = vit_reference(vit, x)
    a = attentions[-1].detach()
    assert torch.allclose(raw_attention(vit, x, head_fusion="max", upsample=None), _patches(a.amax(1)[:, 0]), atol=ATOL)
    assert torch.allclose(raw_attention(vit, x, head_fusion="min", upsample=None), _patches(a.amin(1)[:, 0]), atol=ATOL)
    assert torch.equal(fuse_heads(a, "max"), a.amax(1))


# ---------------------------------------------------------------------------- closed forms
def test_rollout_of_identity_and_uniform_attention():
    tokens, batch = 5, 2
    eye = torch.eye(tokens, dtype=torch.float64).expand(batch, tokens, tokens)
    assert torch.allclose(rollout([eye, eye, eye]), eye, atol=1e-15)
    uniform = torch.full((batch, tokens, tokens), 1 / tokens, dtype=torch.float64)
    for layers in (1, 2, 3):
        # (I/2 + U/2)^L = I/2^L + (1 - 1/2^L) U, with U = 11^T/T idempotent
        expected = eye / 2 ** layers + (1 - 1 / 2 ** layers) * uniform
        assert torch.allclose(rollout([uniform] * layers), expected, atol=1e-14)


def test_rollout_of_one_layer_is_half_attention_plus_half_identity():
    a = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = a / a.sum(-1, keepdim=True)
    assert torch.allclose(rollout([a]), 0.5 * a + 0.5 * torch.eye(6, dtype=torch.float64), atol=1e-15)


def test_one_block_vit_rollout_is_half_its_raw_attention_on_the_patches():
    vit, x = tiny_vit(layers=1), images()
    assert torch.allclose(attention_rollout(vit, x, upsample=None), 0.5 * raw_attention(vit, x, upsample=None),
                          atol=1e-14)


def test_uniform_attention_through_the_model():
    """Queries and keys zeroed: every score is 0, every token gets 1/T, rollout (1 - 2^-L)/T."""
    vit, x = tiny_vit(layers=3), images()
    e = vit.hidden_dim
    with torch.no_grad():
        for block in vit.encoder.layers:
            block.self_attention.in_proj_weight[: 2 * e] = 0
            block.self_attention.in_proj_bias[: 2 * e] = 0
    tokens = 17
    assert torch.allclose(raw_attention(vit, x, upsample=None), torch.full((3, 1, 4, 4), 1 / tokens,
                                                                           dtype=torch.float64), atol=1e-15)
    assert torch.allclose(attention_rollout(vit, x, upsample=None),
                          torch.full((3, 1, 4, 4), (1 - 2 ** -3) / tokens, dtype=torch.float64), atol=1e-15)


def test_chefer_rule_on_one_layer_by_hand():
    """R = I + mean_h max(G * A, 0), entry by entry."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    expected = np.zeros((2, 4, 4))
    for b in range(2):
        for i in range(4):
            for j in range(4):
                expected[b, i, j] = (i == j) + sum(max(grad[b, h, i, j] * a[b, h, i, j], 0) for h in range(3)) / 3
    assert np.allclose(relevance([a], [grad]).numpy(), expected, atol=1e-15)
    # two layers: R2 = (I + A2)(I + A1)
    a1, a2 = (torch.rand(1, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(2))
    one = torch.ones_like(a1)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(relevance([a1, a2], [one, one])[0], (eye + a2[0, 0]) @ (eye + a1[0, 0]), atol=1e-15)


def test_chefer_on_one_block_is_linear_in_the_score():
    """One block: R = I + A_bar, and A_bar is positively homogeneous in the score's gradient."""
    vit, x = tiny_vit(layers=1), images()
    once = attention_relevance(vit, x, 4, upsample=None)
    twice = attention_relevance(vit, x, lambda out: 2 * out[:, 4], upsample=None)
    assert once.abs().sum() > 0 and torch.allclose(twice, 2 * once, atol=1e-13)


def test_discard_ratio_drops_the_smallest_entries_first():
    a = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]], dtype=torch.float64)
    kept = torch.tensor([[[0.5, 0.3, 0.0], [0.0, 0.6, 0.3], [0.25, 0.25, 0.5]]], dtype=torch.float64)
    step = 0.5 * kept + 0.5 * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rollout([a], discard_ratio=2 / 9 + 1e-9), step / step.sum(-1, keepdim=True), atol=1e-15)
    vit, x = tiny_vit(), images()
    assert not torch.allclose(attention_rollout(vit, x, discard_ratio=0.5), attention_rollout(vit, x))


# ---------------------------------------------------------------------------- outputs, invariances, batches
def test_image_maps_upsample_by_nearest_or_bilinear():
    vit, x = tiny_vit(), images()
    grid = raw_attention(vit, x, upsample=None)
    assert grid.shape == (3, 1, 4, 4)
    nearest = raw_attention(vit, x)
    assert nearest.shape == (3, 1, 28, 28)
    assert torch.equal(nearest, grid.repeat_interleave(7, 2).repeat_interleave(7, 3))
    bilinear = raw_attention(vit, x, upsample="bilinear")
    assert torch.allclose(bilinear, F.interpolate(grid, size=(28, 28), mode="bilinear", align_corners=False))


def test_text_maps_line_up_with_the_ids_and_ignore_padding():
    model = text_model()
    for method in (raw_attention, attention_rollout, lambda m, x: attention_relevance(m, x, 1)):
        m = method(model, IDS)
        assert m.shape == IDS.shape and (m[:, 0] == 0).all() and (m[IDS == 0] == 0).all()
        padded = torch.cat([IDS, torch.zeros(3, 3, dtype=torch.long)], 1)
        assert torch.allclose(method(model, padded)[:, :6], m, atol=1e-12)


def test_mean_pooling_reads_the_mean_row_by_default():
    model = text_model("mean")
    assert torch.equal(attention_rollout(model, IDS), attention_rollout(model, IDS, query="mean"))
    assert not torch.allclose(attention_rollout(model, IDS), attention_rollout(model, IDS, query="cls"))
    assert (attention_rollout(model, IDS)[:, 0] > 0).all()  # nothing is zeroed for a mean query


def test_raw_attention_and_rollout_sum_to_one_over_all_tokens():
    vit, x = tiny_vit(), images()
    _, attentions = vit_reference(vit, x)
    cls_to_itself = attentions[-1].detach().mean(1)[:, 0, 0]
    assert torch.allclose(raw_attention(vit, x, upsample=None).sum((1, 2, 3)) + cls_to_itself,
                          torch.ones(3, dtype=torch.float64), atol=1e-14)
    model = text_model()
    # rows of the rollout sum to 1; the class token's own share is what the map leaves out
    assert (attention_rollout(model, IDS).sum(1) < 1).all()


@pytest.mark.parametrize("name", ["raw", "rollout", "relevance"])
def test_a_batch_equals_its_rows_and_batch_size_changes_nothing(name):
    method = {"raw": raw_attention, "rollout": attention_rollout,
              "relevance": lambda m, x, t, **o: attention_relevance(m, x, t, **o)}[name]
    vit, x = tiny_vit(), images(4)
    target = torch.tensor([0, 3, 5, 9])
    whole = method(vit, x, target)
    rows = torch.cat([method(vit, x[i:i + 1], target[i:i + 1]) for i in range(4)])
    assert torch.allclose(whole, rows, atol=1e-13)
    assert torch.allclose(method(vit, x, target, batch_size=3), whole, atol=1e-13)


def test_target_matters_only_to_the_relevance():
    vit, x = tiny_vit(), images()
    for method in (raw_attention, attention_rollout):
        assert torch.equal(method(vit, x, 0), method(vit, x)) and torch.equal(method(vit, x, 7), method(vit, x))
    assert not torch.allclose(attention_relevance(vit, x, 0), attention_relevance(vit, x, 7))


class PatchTransformer(nn.Module):
    """No torchvision: a linear patch embedding of unfolded patches, nn.TransformerEncoder (sequence
    first), optionally a class token; on 28 x 14 images (a 4 x 2 grid)."""

    def __init__(self, class_token: bool):
        super().__init__()
        self.embed = nn.Linear(49, 16)
        self.cls = nn.Parameter(torch.randn(1, 1, 16)) if class_token else None
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def tokens(self, x):
        t = self.embed(F.unfold(x, 7, stride=7).transpose(1, 2))
        return t if self.cls is None else torch.cat([self.cls.expand(len(x), -1, -1), t], 1)

    def forward(self, x):
        h = self.encoder(self.tokens(x).transpose(0, 1)).transpose(0, 1)
        return self.head(h[:, 0] if self.cls is not None else h.mean(1))


@pytest.mark.parametrize("class_token", [True, False])
def test_any_patch_embedding_and_a_non_square_grid(class_token):
    torch.manual_seed(0)
    model = PatchTransformer(class_token).double().eval()
    x = torch.randn(2, 1, 28, 14, dtype=torch.float64)
    query = "cls" if class_token else "mean"
    # the first layer is post-norm: its attention reads the tokens themselves
    with torch.no_grad():
        a, _ = _attention(model.encoder.layers[0].self_attn, model.tokens(x))
    fused = a.mean(1)
    expected = fused[:, 0, 1:] if class_token else fused.mean(1)
    got = raw_attention(model, x, layer=0, query=query, upsample=None)
    assert got.shape == (2, 1, 4, 2) and torch.allclose(got, expected.reshape(2, 1, 4, 2), atol=ATOL)
    assert attention_relevance(model, x, 1, query=query).shape == (2, 1, 28, 14)


def test_token_grid():
    assert token_grid(17, (28, 28)) == (True, 4, 4)
    assert token_grid(16, (28, 28)) == (False, 4, 4)
    assert token_grid(9, (28, 14)) == (True, 4, 2)
    assert token_grid(8, (28, 14)) == (False, 4, 2)
    assert token_grid(65, (64, 64)) == (True, 8, 8)
    with pytest.raises(ValueError, match=r"7 tokens, which are not a grid of patches.*28x28 input"):
        token_grid(7, (28, 28))


# ---------------------------------------------------------------------------- the model is left as it was
CALLS = {
    "raw": lambda m, x: raw_attention(m, x, layer=0),
    "rollout": lambda m, x: attention_rollout(m, x, discard_ratio=0.1),
    "relevance": lambda m, x: attention_relevance(m, x, 1),
    "bad_layer": lambda m, x: raw_attention(m, x, layer=7),
    "bad_target": lambda m, x: attention_relevance(m, x, 99),
    "bad_query": lambda m, x: attention_rollout(m, x, query=40),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_model_left_unchanged_also_on_error(call):
    vit = tiny_vit()
    vit.train()
    vit.encoder.layers[0].eval()
    for p in vit.conv_proj.parameters():
        p.requires_grad_(False)
    vit.heads.head.weight.grad = torch.ones_like(vit.heads.head.weight)
    x = images()
    x_before, before = x.clone(), snapshot(vit)
    with pytest.warns(UserWarning, match="training mode"):
        if call.startswith("bad"):
            with pytest.raises(ValueError):
                CALLS[call](vit, x)
        else:
            out = CALLS[call](vit, x)
            assert out.shape == (3, 1, 28, 28) and not out.requires_grad and torch.isfinite(out).all()
    assert_untouched(vit, before, x, x_before)
    assert torch.backends.mha.get_fastpath_enabled()


# ---------------------------------------------------------------------------- bad inputs
class NotReproducible(nn.Module):
    """Calls its attention, then hands on something else as if it were the attention's output: fine.
    But an attention module whose forward is changed cannot be recomputed: refused."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.attention.forward = lambda q, k, v, **kw: (2 * v, None)

    def forward(self, x):
        return self.attention(x, x, x)[0].sum(1)


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.memory = nn.Parameter(torch.randn(1, 5, 8))

    def forward(self, x):
        return self.attention(x, self.memory.expand(len(x), -1, -1), self.memory.expand(len(x), -1, -1))[0].sum(1)


BAD = [
    ("a CNN", lambda: raw_attention(mnist_cnn(), torch.rand(2, 1, 28, 28), upsample=None), ValueError,
     r"model must contain attention layers .*got a MnistCNN with none"),
    ("layer out of range", lambda: raw_attention(tiny_vit(), images(), layer=2), ValueError,
     r"layer must be an integer in \[-2, 1\] \(the model ran 2 attention layers\); got 2"),
    ("layer a name", lambda: raw_attention(tiny_vit(), images(), layer="encoder"), TypeError,
     r"layer must be an int, the index of an attention layer.*got 'encoder'"),
    ("head_fusion", lambda: attention_rollout(tiny_vit(), images(), head_fusion="avg"), ValueError,
     r"head_fusion must be one of 'mean', 'max', 'min'; got 'avg'"),
    ("discard_ratio", lambda: attention_rollout(tiny_vit(), images(), discard_ratio=1.0), ValueError,
     r"discard_ratio must be a number in \[0, 1\); got 1.0"),
    ("query name", lambda: raw_attention(tiny_vit(), images(), query="first"), ValueError,
     r"query must be one of 'cls', 'mean'; got 'first'"),
    ("query position", lambda: raw_attention(tiny_vit(), images(), query=17), ValueError,
     r"query must be 'cls', 'mean' or a token position in \[-17, 16\]; got 17"),
    ("upsample", lambda: raw_attention(tiny_vit(), images(), upsample="cubic"), ValueError,
     r"upsample must be one of 'nearest', 'bilinear'; got 'cubic'"),
    ("no target", lambda: attention_relevance(tiny_vit(), images(), None), TypeError,
     r"target must be an int.*attention_relevance explains one score; got None"),
    ("target out of range", lambda: attention_relevance(tiny_vit(), images(), 10), ValueError,
     r"target 10 is out of range for a model with 10 outputs"),
    ("target shape", lambda: raw_attention(tiny_vit(), images(), torch.tensor([1, 2])), ValueError,
     r"target must be an int or have one class per example, shape \(3,\)"),
    ("one sequence", lambda: raw_attention(text_model(), IDS[0]), ValueError,
     r"x must be a batch of token ids \(B, T\); got shape \(6,\). For a single sequence use x.unsqueeze\(0\)"),
    ("float32 x for a float64 model", lambda: raw_attention(tiny_vit(), images().float()), TypeError,
     r"x has dtype torch.float32 but the model's parameters are torch.float64"),
    ("NaN", lambda: raw_attention(tiny_vit(), images() * float("nan")), ValueError, r"x contains NaN"),
    ("bias_kv", lambda: raw_attention(nn.MultiheadAttention(8, 2, add_bias_kv=True).eval(), torch.rand(2, 3, 8)),
     ValueError, r"add_bias_kv=True or add_zero_attn=True is not supported"),
    ("changed attention", lambda: raw_attention(NotReproducible().eval(), torch.rand(2, 3, 8)), RuntimeError,
     r"could not be recomputed from its input"),
    ("not a model", lambda: raw_attention("vit", IDS), TypeError, r"model must be a torch.nn.Module; got str"),
    ("cross-attention", lambda: attention_rollout(CrossAttention().eval(), torch.rand(2, 3, 8)), ValueError,
     r"attention layer 0 maps 3 queries to 5 keys; these methods need self-attention"),
    ("batch_size", lambda: raw_attention(tiny_vit(), images(), batch_size=0), ValueError,
     r"batch_size must be an integer >= 1; got 0"),
]


@pytest.mark.parametrize("name, call, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_refused_with_a_clear_message(name, call, error, message):
    with pytest.raises(error, match=message):
        call()
    assert torch.backends.mha.get_fastpath_enabled()
