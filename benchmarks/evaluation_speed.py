"""Time the evaluation metrics of xaiutils against Captum and Quantus, in one run.

For each metric the table gives the median wall time of ours, of the reference library with the
same model and settings, their ratio, and the ratio of ours to the *floor*: the model
evaluations the metric cannot avoid, timed in the same run (N forward passes of the batch for
perturbation metrics, N forward + backward passes for metrics that re-explain perturbed inputs
with the gradient, plus N forward passes where the metric also checks the predicted class). Map-only metrics (sparseness, localisation) have no model floor.

Usage: ``python benchmarks/evaluation_speed.py [--quick] [--write]``; ``--write`` stores the
table in benchmarks/EVALUATION.md with the date and the machine.
"""
from __future__ import annotations

import argparse
import datetime
import warnings
from pathlib import Path

import numpy as np
import torch

from xaiutils import evaluation as E
from xaiutils.attribution.gradients import gradient
from xaiutils.models import MnistCNN

from _timing import machine as describe_machine, median_time  # noqa: E402

HERE = Path(__file__).parent


def forward_floor(model, x):
    with torch.no_grad():
        model(x)


def gradient_floor(model, x, target):
    xr = x.detach().requires_grad_(True)
    torch.autograd.grad(model(xr).gather(1, target[:, None]).sum(), xr)


def quantus_explain(model, inputs, targets, **kwargs):
    return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


def model_cases(model, x, target, samples):
    """(name, ours, reference, floor kind, N, library) for the metrics that run the model."""
    import quantus
    from captum.metrics import infidelity, sensitivity_max

    xn, yn = x.numpy(), target.numpy()
    attr = gradient(model, x, target)
    an = attr.numpy()
    sigma, radius = 0.1, 0.02
    quiet = dict(disable_warnings=True, display_progressbar=False, normalise=False, abs=False)

    def captum_gaussian(inputs):
        noise = sigma * torch.randn_like(inputs)
        return noise, inputs - noise

    def captum_explain(inputs, target):
        if isinstance(inputs, tuple):
            return (gradient(model, inputs[0], target),)
        return gradient(model, inputs, target)

    def q(metric, **call):
        return lambda: metric(model=model, x_batch=xn, y_batch=yn, a_batch=call.pop("a", an), device="cpu",
                              batch_size=len(xn), **call)

    steps = 16
    features = x[0, 0].numel()
    return [
        (f"infidelity ({samples} samples)", lambda: E.infidelity(model, x, attr, target, samples=samples, sigma=sigma),
         lambda: infidelity(model, captum_gaussian, x, attr, target=target, n_perturb_samples=samples),
         "forward", samples + 1, "Captum"),
        (f"max_sensitivity ({samples} samples)",
         lambda: E.max_sensitivity(gradient, model, x, target, samples=samples, radius=radius),
         lambda: sensitivity_max(captum_explain, x, target=target, n_perturb_samples=samples, perturb_radius=radius),
         "gradient", samples + 1, "Captum"),
        (f"max_sensitivity ({samples} samples)",
         lambda: E.max_sensitivity(gradient, model, x, target, samples=samples, radius=radius),
         q(quantus.MaxSensitivity(nr_samples=samples, lower_bound=radius, **quiet), a=None,
           explain_func=quantus_explain), "gradient", samples + 1, "Quantus"),
        (f"avg_sensitivity ({samples} samples)",
         lambda: E.avg_sensitivity(gradient, model, x, target, samples=samples, radius=radius),
         q(quantus.AvgSensitivity(nr_samples=samples, lower_bound=radius, **quiet), a=None,
           explain_func=quantus_explain), "gradient", samples + 1, "Quantus"),
        (f"local_lipschitz ({samples} samples)",
         lambda: E.local_lipschitz(gradient, model, x, target, samples=samples, sigma=sigma),
         q(quantus.LocalLipschitzEstimate(nr_samples=samples, perturb_std=sigma, **quiet), a=None,
           explain_func=quantus_explain), "gradient", samples + 1, "Quantus"),
        (f"relative_input_stability ({samples} samples)",
         lambda: E.relative_input_stability(gradient, model, x, target, samples=samples),
         q(quantus.RelativeInputStability(nr_samples=samples, **quiet), a=None, explain_func=quantus_explain),
         "gradient+forward", samples + 1, "Quantus"),
        (f"faithfulness_correlation ({samples} subsets)",
         lambda: E.faithfulness_correlation(model, x, attr, target, samples=samples, subset_size=features // 4),
         q(quantus.FaithfulnessCorrelation(nr_runs=samples, subset_size=features // 4, perturb_baseline="black",
                                           **quiet)), "forward", samples + 1, "Quantus"),
        (f"pixel_flipping ({steps} steps)",
         lambda: E.pixel_flipping(model, x, attr, target, steps=steps, removal="zeros"),
         q(quantus.PixelFlipping(features_in_step=features // steps, perturb_baseline="black", **quiet)),
         "forward", steps + 1, "Quantus"),
    ]


def map_cases(attr, mask):
    """(name, ours, reference) for the map-only metrics, against Quantus."""
    import quantus

    quiet = dict(disable_warnings=True, display_progressbar=False, normalise=False)
    x = np.zeros((len(attr), 1, *attr.shape[2:]))
    an, sn = attr.numpy(), mask.numpy().astype(float)

    def q(metric, **call):
        return lambda: metric(model=None, x_batch=x, y_batch=np.zeros(len(x), dtype=int), a_batch=an.copy(),
                              device="cpu", batch_size=len(x), **call)

    return [
        ("sparseness", lambda: E.sparseness(attr), q(quantus.Sparseness(abs=True, **quiet))),
        ("complexity (entropy)", lambda: E.entropy(attr), q(quantus.Complexity(abs=True, **quiet))),
        ("pointing_game", lambda: E.pointing_game(attr, mask), q(quantus.PointingGame(abs=False, **quiet), s_batch=sn)),
        ("relevance_mass_accuracy", lambda: E.relevance_mass_accuracy(attr, mask, positive=False),
         q(quantus.RelevanceMassAccuracy(abs=False, **quiet), s_batch=sn)),
        ("relevance_rank_accuracy", lambda: E.relevance_rank_accuracy(attr, mask),
         q(quantus.RelevanceRankAccuracy(abs=False, **quiet), s_batch=sn)),
        ("auc", lambda: E.auc(attr, mask), q(quantus.AUC(abs=False, **quiet), s_batch=sn)),
    ]


def run(quick: bool) -> list[dict]:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    batch, samples, repeats = (16, 4, 1) if quick else (64, 10, 3)
    model = MnistCNN().eval()
    x = torch.rand(batch, 1, 28, 28)
    target = torch.arange(batch) % 10
    label = f"MnistCNN, batch {batch}, 1x28x28"
    for p in model.parameters():
        p.requires_grad_(False)
    floors = {"forward": median_time(lambda: forward_floor(model, x), repeats),
              "gradient": median_time(lambda: gradient_floor(model, x, target), repeats)}
    floors["gradient+forward"] = floors["gradient"] + floors["forward"]  # re-explain, then check the prediction
    for p in model.parameters():
        p.requires_grad_(True)
    print(f"\n{label}: floor forward {floors['forward'] * 1e3:.1f} ms, forward + backward "
          f"{floors['gradient'] * 1e3:.1f} ms", flush=True)
    rows = []
    for name, ours, ref, kind, n, library in model_cases(model, x, target, samples):
        t_ours, t_ref = median_time(ours, repeats), median_time(ref, repeats)
        rows.append({"setup": label, "metric": name, "ours_ms": t_ours * 1e3, "ref_ms": t_ref * 1e3,
                     "library": library, "vs_ref": t_ours / t_ref, "vs_floor": t_ours / (floors[kind] * n),
                     "floor": f"{n} x {kind}"})
        print(f"  {name:44s} {t_ours * 1e3:9.1f} ms  x{t_ours / t_ref:.2f} {library:8s} "
              f"x{rows[-1]['vs_floor']:.2f} of {n} {kind} floor(s)", flush=True)
    size = 64
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(batch, 1, size, size, generator=g, dtype=torch.float64)
    mask = torch.zeros(batch, 1, size, size, dtype=torch.bool)
    mask[:, :, 16:40, 20:44] = True
    maps = f"maps, batch {batch}, 1x{size}x{size}"
    for name, ours, ref in map_cases(attr, mask):
        t_ours, t_ref = median_time(ours, repeats), median_time(ref, repeats)
        rows.append({"setup": maps, "metric": name, "ours_ms": t_ours * 1e3, "ref_ms": t_ref * 1e3,
                     "library": "Quantus", "vs_ref": t_ours / t_ref, "vs_floor": float("nan"), "floor": "none"})
        print(f"  {name:44s} {t_ours * 1e3:9.2f} ms  x{t_ours / t_ref:.2f} Quantus", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| setup | metric | ours (ms) | reference (ms) | ours / reference | ours / floor | floor |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        floor = "" if np.isnan(r["vs_floor"]) else f"{r['vs_floor']:.2f}"
        lines.append(f"| {r['setup']} | {r['metric']} | {r['ours_ms']:.2f} | {r['ref_ms']:.2f} ({r['library']}) | "
                     f"{r['vs_ref']:.2f} | {floor} | {r['floor']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small batch, few samples, one repeat")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/EVALUATION.md")
    args = parser.parse_args()
    table = markdown(run(args.quick))
    print("\n" + table)
    if args.write:
        machine = describe_machine()
        stamp = datetime.date.today().isoformat()
        (HERE / "EVALUATION.md").write_text(f"# Evaluation metrics: speed\n\nMeasured {stamp} on {machine}.\n\n"
                                            f"{table}\n")
