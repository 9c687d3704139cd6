"""Time every attribution method of xaiutils against its reference library, in one run.

For each model and method the table gives the median wall time, the ratio to the reference
library (Captum, Zennit or pytorch-grad-cam, same model and settings), and the ratio to the
*floor*: one forward + backward pass of the same batch to the input, timed in the same run.
Methods that evaluate the model N times (paths, noise) are compared with N floors. The coalition
methods (exact Shapley values, KernelSHAP, LIME) make forward passes only: their floor is one
forward pass of the same batch, without gradients, and N is their number of model evaluations
per example (``shapley.evaluations``); issue #14 asks that they stay within 1.05 of N floors.

Usage: ``python benchmarks/attribution_speed.py [--quick] [--write]``; ``--write`` stores the
table in benchmarks/README.md with the date and the machine.
"""
from __future__ import annotations

import argparse
import importlib
import datetime
import warnings
from pathlib import Path

import torch
import torchvision

from xaiutils import attribution as A
from xaiutils.models import MnistCNN

from _timing import machine as describe_machine, median_time  # noqa: E402

HERE = Path(__file__).parent


def floor(model, x, target):
    """One forward + backward pass to the input (parameters frozen by the caller, as every method runs)."""
    xr = x.detach().requires_grad_(True)
    out = model(xr)
    torch.autograd.grad(out.gather(1, target[:, None]).sum(), xr)


def forward_floor(model, x, target):
    """One forward pass, no gradients: what a coalition method pays per evaluation of the batch."""
    with torch.no_grad():
        model(x)


def coalition_cases(model, x, target):
    """(name, ours, reference, evaluations per example, reference library) for the coalition methods.

    Patches as the registry's defaults (``METHODS[name].options``). Captum's exact ``ShapleyValues``
    enumerates permutations (9! for 9 features), so exact Shapley values have no reference here.
    """
    from captum import attr as C
    from xaiutils import METHODS
    from xaiutils.attribution import shapley

    rows = []
    for name in ["shapley_values", "kernel_shap", "lime"]:
        options = METHODS[name].options(x)
        mask, count = shapley.feature_mask(options["features"], tuple(x.shape[1:]))
        evaluations = shapley.evaluations(name, count, options.get("samples"))
        samples = options.get("samples")
        reference, library = (lambda: None), "none"
        if name == "kernel_shap":
            reference, library = (lambda: C.KernelShap(model).attribute(
                x, baselines=0.0, target=target, feature_mask=mask[None], n_samples=evaluations,
                perturbations_per_eval=len(x))), "Captum"
        elif name == "lime":
            reference, library = (lambda: C.Lime(model).attribute(
                x, baselines=0.0, target=target, feature_mask=mask[None], n_samples=samples,
                perturbations_per_eval=len(x))), "Captum"
        label = f"{name} ({count} patches{f', {samples} samples' if samples else ''}; forward floor)"
        rows.append((label, lambda name=name: METHODS[name](model, x, target), reference, evaluations, library))
    return rows


def cases(model, x, target, steps):
    """(name, ours, reference, evaluations per example, reference library) for one model."""
    from captum import attr as C
    import pytorch_grad_cam as PGC
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlus, LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Linear as ZennitLinear
    from zennit.attribution import Gradient as ZGradient
    from zennit.torchvision import ResNetCanonizer
    from zennit.canonizers import SequentialMergeBatchNorm

    layer = importlib.import_module("xaiutils.attribution.cam").default_layer(model)[0]
    cam_targets = [ClassifierOutputTarget(int(t)) for t in target]
    is_resnet = isinstance(model, torchvision.models.ResNet)
    canonizers = [ResNetCanonizer()] if is_resnet else [SequentialMergeBatchNorm()]
    cam_layer = model.layer4 if is_resnet else model.block3

    def zennit(composite_cls):
        def run():
            with ZGradient(model, composite_cls(canonizers=canonizers)) as attributor:
                xr = x.detach().requires_grad_(True)
                out = model(xr)
                attributor(xr, torch.nn.functional.one_hot(target, out.shape[1]).to(x) * out.detach())
        return run

    def pgc(cls):
        # built and released inside the timed call: its hooks store every forward pass's activations
        def run():
            with cls(model=model, target_layers=[cam_layer]) as runner:
                runner(input_tensor=x, targets=cam_targets)
        return run

    baseline = torch.zeros_like(x)
    references = torch.rand(16, *x.shape[1:])
    return [
        ("gradient", lambda: A.gradient(model, x, target),
         lambda: C.Saliency(model).attribute(x, target=target, abs=False), 1, "Captum"),
        ("gradient_x_input", lambda: A.gradient_x_input(model, x, target),
         lambda: C.InputXGradient(model).attribute(x, target=target), 1, "Captum"),
        ("guided_backprop", lambda: A.guided_backprop(model, x, target),
         lambda: C.GuidedBackprop(model).attribute(x, target=target), 1, "Captum"),
        ("deconvnet", lambda: A.deconvnet(model, x, target),
         lambda: C.Deconvolution(model).attribute(x, target=target), 1, "Captum"),
        (f"integrated_gradients ({steps} steps)", lambda: A.integrated_gradients(model, x, target, steps=steps),
         lambda: C.IntegratedGradients(model).attribute(x, baseline, target=target, n_steps=steps), steps, "Captum"),
        (f"smoothgrad ({steps} samples)", lambda: A.smoothgrad(A.gradient, model, x, target, samples=steps),
         lambda: C.NoiseTunnel(C.Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=steps,
                                                            stdevs=0.15, target=target, abs=False), steps, "Captum"),
        (f"expected_gradients ({steps} samples)",
         lambda: A.expected_gradients(model, x, target, references=references, samples=steps),
         lambda: C.GradientShap(model).attribute(x, references, n_samples=steps, target=target), steps, "Captum"),
        ("deeplift (rescale)", lambda: A.deeplift(model, x, target),
         lambda: C.DeepLift(model).attribute(x, baseline, target=target), 2, "Captum"),
        ("lrp epsilon", lambda: A.lrp(model, x, target, composite="epsilon"),
         zennit(lambda canonizers: LayerMapComposite(layer_map_base() + [(ZennitLinear, Epsilon())],
                                                     canonizers=canonizers)), 1, "Zennit"),
        ("lrp epsilon_plus", lambda: A.lrp(model, x, target, composite="epsilon_plus"), zennit(EpsilonPlus), 1,
         "Zennit"),
        ("lrp epsilon_alpha2_beta1", lambda: A.lrp(model, x, target, composite="epsilon_alpha2_beta1"),
         zennit(EpsilonAlpha2Beta1), 1, "Zennit"),
        ("grad_cam", lambda: A.grad_cam(model, x, target), pgc(PGC.GradCAM), 1, "pytorch-grad-cam"),
        ("grad_cam_pp", lambda: A.grad_cam_pp(model, x, target), pgc(PGC.GradCAMPlusPlus), 1, "pytorch-grad-cam"),
        ("xgrad_cam", lambda: A.xgrad_cam(model, x, target), pgc(PGC.XGradCAM), 1, "pytorch-grad-cam"),
        ("layer_cam", lambda: A.layer_cam(model, x, target), pgc(PGC.LayerCAM), 1, "pytorch-grad-cam"),
        ("fullgrad", lambda: A.fullgrad(model, x, target), pgc(PGC.FullGrad), 1, "pytorch-grad-cam"),
        ("guided_grad_cam", lambda: A.guided_grad_cam(model, x, target, layer=layer if not is_resnet else "layer4"),
         lambda: C.GuidedGradCam(model, cam_layer).attribute(x, target=target), 1, "Captum"),
    ]


def run(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    setups = [("MnistCNN, batch 64, 1x28x28", MnistCNN().eval(), torch.rand(64, 1, 28, 28), 32, 5)]
    size = 112 if quick else 224
    setups.append((f"resnet18, batch 8, 3x{size}x{size}", torchvision.models.resnet18(weights=None).eval(),
                   torch.rand(8, 3, size, size), 8 if quick else 16, 3))
    rows = []
    for label, model, x, steps, repeats in setups:
        target = torch.arange(len(x)) % 10
        for p in model.parameters():
            p.requires_grad_(False)
        base = median_time(lambda: floor(model, x, target), repeats)
        print(f"\n{label}: floor (forward + backward) {base * 1e3:.1f} ms", flush=True)
        for p in model.parameters():
            p.requires_grad_(True)
        for name, ours, ref, evaluations, library in cases(model, x, target, steps):
            t_ours = median_time(ours, repeats)
            try:
                t_ref = median_time(ref, repeats)
            except RuntimeError as error:  # e.g. Captum's DeepLift refuses ResNet's reused ReLU modules
                t_ref, library = float("nan"), f"{library}: fails ({str(error).split('.')[0][:60]})"
            row = {"model": label, "method": name, "ours_ms": t_ours * 1e3, "ref_ms": t_ref * 1e3, "library": library,
                   "vs_ref": t_ours / t_ref, "vs_floor": t_ours / (base * evaluations), "evaluations": evaluations}
            rows.append(row)
            print(f"  {name:38s} {row['ours_ms']:9.1f} ms  x{row['vs_ref']:.2f} {library:16s} "
                  f"x{row['vs_floor']:.2f} of {evaluations} floor(s)", flush=True)
        if isinstance(model, MnistCNN):  # on the ResNet, 512 passes per call would take minutes
            rows += coalition_rows(label, model, x[:8], target[:8], repeats)
    return rows


def coalition_rows(label, model, x, target, repeats) -> list[dict]:
    """The coalition methods on 8 examples, against N forward floors of the same 8 (the passes they make)."""
    label = f"{label.split(',')[0]}, batch {len(x)}, {'x'.join(map(str, x.shape[1:]))}"
    with torch.no_grad():
        base = median_time(lambda: forward_floor(model, x, target), max(repeats, 20))
    print(f"\n{label}: forward floor {base * 1e3:.2f} ms", flush=True)
    rows = []
    for name, ours, ref, evaluations, library in coalition_cases(model, x, target):
        t_ours = median_time(ours, repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum: "a separate interpretable model for each example"
            t_ref = median_time(ref, repeats) if library != "none" else float("nan")
        row = {"model": label, "method": name, "ours_ms": t_ours * 1e3, "ref_ms": t_ref * 1e3, "library": library,
               "vs_ref": t_ours / t_ref, "vs_floor": t_ours / (base * evaluations), "evaluations": evaluations}
        rows.append(row)
        print(f"  {name:50s} {row['ours_ms']:9.1f} ms  x{row['vs_ref']:.2f} {library:8s} "
              f"x{row['vs_floor']:.2f} of {evaluations} forward floor(s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | method | ours (ms) | reference (ms) | ours / reference | ours / (N floors) | N |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['ours_ms']:.1f} | {r['ref_ms']:.1f} ({r['library']}) | "
                     f"{r['vs_ref']:.2f} | {r['vs_floor']:.2f} | {r['evaluations']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller resnet input and fewer steps")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args()
    rows = run(args.quick)
    table = markdown(rows)
    print("\n" + table)
    if args.write:
        machine = describe_machine()
        stamp = datetime.date.today().isoformat()
        text = (HERE / "README.md").read_text() if (HERE / "README.md").exists() else ""
        start = text.find("<!-- table -->")
        head = text[:start] if start >= 0 else text
        (HERE / "README.md").write_text(f"{head}<!-- table -->\nMeasured {stamp} on {machine}.\n\n{table}\n")
