"""Time AttnLRP and CP-LRP on vision transformers against lxt and against one forward + backward pass.

Issue #14 asks that ``lrp(vit, x, target)`` with the AttnLRP composite stay within 1.5x of one forward
+ backward pass of the same batch to the input (the *floor*, parameters frozen, timed in the same run),
and be faster than ``lxt`` (Achtibat et al. 2024, ``achtibat2024attnlrp``), the authors' library, on
the same model and batch. lxt's efficient mode patches the forward functions of ``nn.LayerNorm``,
``nn.GELU`` and ``nn.MultiheadAttention`` and then takes gradient x input; its time here includes the
patching, which is a few microseconds. The classes it patches are restored after each call.

Models: the book's ``MnistViT`` (3 layers, 64 features, 50 tokens; batch 64) and a ViT-Tiny-sized
torchvision ``VisionTransformer`` (12 layers, 3 heads, 192 features, 224x224 in 16x16 patches, 197
tokens; batch 8), both with random weights: speed does not depend on training.

Usage: ``python benchmarks/transformer_speed.py [--quick] [--write]``; ``--write`` stores the table in
benchmarks/TRANSFORMERS.md with the date and the machine.
"""
from __future__ import annotations

import argparse
import datetime
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VisionTransformer

from xaiutils.attribution import lrp
from xaiutils.attribution.lxt_reference import lxt_efficient, lxt_vit_relevance
from xaiutils.vit import MnistViT

from _timing import interleaved_medians, machine as describe_machine  # noqa: E402

HERE = Path(__file__).parent


def floor(model, x, target):
    """One forward + backward pass to the input, parameters frozen (as every method runs)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        x = x.detach().requires_grad_(True)
        out = model(x)
        torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def setups(quick: bool):
    torch.manual_seed(0)
    mnist = random_head(MnistViT().eval())
    yield "MnistViT, batch 64, 1x28x28", mnist, torch.rand(64, 1, 28, 28), 4
    size = 112 if quick else 224
    tiny = VisionTransformer(image_size=size, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192,
                             mlp_dim=768, num_classes=1000).eval()
    random_head(tiny)
    yield f"ViT-Tiny size (12 layers, 192 features), batch 8, 3x{size}x{size}", tiny, torch.rand(8, 3, size, size), 1


def random_head(model):
    """torchvision starts the head at zero, so every logit would be 0 and every relevance with it."""
    nn.init.normal_(model.heads.head.weight, std=0.3)
    nn.init.normal_(model.heads.head.bias, std=0.1)
    return model


def run(quick: bool, rounds: int) -> list[dict]:
    rows = []
    with lxt_efficient():  # loaded once, so that each timed call pays for lxt's patching, not its import
        for label, model, x, scale in setups(quick):
            target = torch.arange(len(x)) % 10
            fns = {"floor": partial(floor, model, x, target)}
            cases = [(kind, epsilon) for kind in ("attn_lrp", "cp_lrp") for epsilon in (None, 1e-6)]
            for kind, epsilon in cases:
                fns[kind, epsilon] = partial(lrp, model, x, target, composite=kind, epsilon=epsilon)
                fns["lxt", kind] = partial(lxt_vit_relevance, model, x, target, kind)
            times = interleaved_medians(fns, rounds * scale)
            print(f"\n{label}: floor (forward + backward) {times['floor'] * 1e3:.1f} ms", flush=True)
            for kind, epsilon in cases:
                ours, theirs = fns[kind, epsilon](), fns["lxt", kind]()
                gap = ((ours - theirs).abs().max() / theirs.abs().max()).item()
                form = "default: gradient x input, no stabiliser" if epsilon is None else f"epsilon={epsilon:g}: explicit rules"
                t_ours, t_ref = times[kind, epsilon], times["lxt", kind]
                row = {"model": label, "method": f"lrp ({kind}, {form})", "ours_ms": t_ours * 1e3,
                       "ref_ms": t_ref * 1e3, "vs_ref": t_ours / t_ref, "vs_floor": t_ours / times["floor"], "gap": gap}
                rows.append(row)
                print(f"  {row['method']:60s} {row['ours_ms']:9.1f} ms  x{row['vs_ref']:.2f} lxt  "
                      f"x{row['vs_floor']:.2f} of the floor  (largest difference from lxt {gap:.0e} of its "
                      f"largest relevance)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | method | ours (ms) | lxt (ms) | ours / lxt | ours / floor | max difference / max relevance |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['ours_ms']:.1f} | {r['ref_ms']:.1f} | {r['vs_ref']:.2f} | "
                     f"{r['vs_floor']:.2f} | {r['gap']:.0e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 112x112 input for the larger ViT")
    parser.add_argument("--rounds", type=int, default=15, help="rounds for the larger ViT (four times as many for "
                        "the small one); each round times every function once, in a shuffled order")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/TRANSFORMERS.md")
    args = parser.parse_args()
    table = markdown(run(args.quick, args.rounds))
    print("\n" + table)
    if args.write:
        stamp = datetime.date.today().isoformat()
        path = HERE / "TRANSFORMERS.md"
        text = path.read_text() if path.exists() else ""
        start = text.find("<!-- table -->")
        head = text[:start] if start >= 0 else text
        path.write_text(f"{head}<!-- table -->\nMeasured {stamp} on {describe_machine()}.\n\n{table}\n")
