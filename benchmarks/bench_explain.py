"""Attribution maps: time per image per method on CPU, and the sanity figures of the classification bundle's docs.

    OMP_NUM_THREADS=2 python benchmarks/bench_explain.py [--images 8] [--size 64]
        [--models receptive_field_cnn,resnet18]
        [--sanity_size 64] [--sanity_images 16] [--epochs 6] [--seed 0]
        [--out DIR | --docs bundles/dermoscopy_classification/docs] [--json results.json]
        [--skip_timing] [--skip_sanity]

1. **Time per image** of each method (Grad-CAM, Grad-CAM++, Integrated Gradients n_steps 50, GradientSHAP
   n_samples 20, internal_batch_size 16 — the explain.json defaults) for 7-class untrained networks at ``--size``
   px on random normalised images (the cost does not depend on the weights), ``--images`` images per call after
   one warm-up call; wall clock, the threads torch gets (``OMP_NUM_THREADS``). Baselines in the same run, on the
   same images: the libraries called directly, one batch call each (MONAI ``GradCAM`` at the same layer, captum
   ``IntegratedGradients`` with the same steps, black baseline and internal batch size) — the ratio is what the
   product's wrapping costs (per-image target grouping, hooks removed, maps normalised) — and a plain input
   gradient (one forward + backward), the cheapest gradient map, as the unit of cost.
2. **Sanity** on a trained classifier: ``receptive_field_cnn`` trained (MONAI SupervisedTrainer, ``--epochs``) on
   the disc task of :func:`mednet.explain.sanity.blob_task` at ``--sanity_size`` px (class = colour of one disc at
   a random position on colour noise: the evidence is localised and known). For every method: the model
   randomisation test (full re-initialisation, Spearman ρ between the trained and randomised maps, threshold 0.5)
   and deletion/insertion curves (20 steps, baseline 0 = the mean colour) against random pixel order, on
   ``--sanity_images`` held-out images, and the same for Grad-CAM at the network's last 3×3 block
   (``convblock12``, coarser than the default ``convblock10``: the comparison behind that default). Writes ``explanation_sanity.png`` and ``explanations.png`` (four
   example images, every method) into ``--out`` (default ``runs/bench_explain/<time>/``; figures already there
   are never replaced), or, to refresh the bundle's docs, into the folder given with ``--docs``
   (``bundles/dermoscopy_classification/docs``), replacing its figures: only on request, since those are tracked
   files.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _common import REPO, cli_path, default_output, positive_int

METHODS = ("gradcam", "gradcampp", "integrated_gradients", "gradient_shap")
#: what :func:`sanity` writes into its folder
FIGURES = ("explanation_sanity.png", "explanations.png")


def timing(models: list[str], size: int, n_images: int) -> dict:
    import torch

    from mednet.explain import attribution_maps_timed, feature_map_size
    from mednet.networks.classifiers import build_classifier

    out = {}
    for name in models:
        torch.manual_seed(0)
        net = build_classifier(name, 7, size).eval()
        x = torch.randn(n_images, 3, size, size)
        attribution_maps_timed(net, x[:1], METHODS)  # warm-up
        _, seconds = attribution_maps_timed(net, x, METHODS)
        res = feature_map_size(net, None, size)
        direct = _direct_library_seconds(net, x)
        out[name] = {"seconds_per_image": seconds, "gradcam_map": f"{res[0]}x{res[1]}", "size": size,
                     "images": n_images, "threads": torch.get_num_threads(), "baselines_seconds_per_image": direct,
                     "ratio_to_direct": {"gradcam": seconds["gradcam"] / direct["monai_gradcam"],
                                         "integrated_gradients": seconds["integrated_gradients"]
                                         / direct["captum_integrated_gradients"]}}
        print(f"{name} @ {size} px (Grad-CAM map {res[0]}×{res[1]}), {n_images} images, "
              f"{torch.get_num_threads()} threads: " + ", ".join(f"{m} {s:.4f} s" for m, s in seconds.items()),
              flush=True)
        print(f"  baselines (library called directly, one batch): " + ", ".join(
            f"{m} {s:.4f} s" for m, s in direct.items()) + f"; product / direct: Grad-CAM "
              f"{out[name]['ratio_to_direct']['gradcam']:.2f}, IG {out[name]['ratio_to_direct']['integrated_gradients']:.2f}; "
              f"in input gradients: " + ", ".join(f"{m} {s / direct['input_gradient']:.0f}×" for m, s in seconds.items()),
              flush=True)
    return out


def _direct_library_seconds(net, x) -> dict[str, float]:
    """Seconds per image of the baselines (see the module docstring) on ``x`` ``(B, 3, S, S)``, after a warm-up."""
    import torch
    from captum.attr import IntegratedGradients
    from monai.visualize import GradCAM

    from mednet.explain import default_target_layer

    with torch.no_grad():
        targets = net(x).argmax(1)
    cam = GradCAM(nn_module=net, target_layers=default_target_layer(net))
    ig = IntegratedGradients(net)

    def input_gradient():
        inputs = x.clone().requires_grad_(True)
        net(inputs).gather(1, targets[:, None]).sum().backward()
        return inputs.grad

    calls = {"input_gradient": input_gradient,
             "monai_gradcam": lambda: cam(x.clone(), class_idx=None),  # its own argmax per image
             "captum_integrated_gradients": lambda: ig.attribute(x.clone(), baselines=torch.zeros_like(x),
                                                                 target=targets, n_steps=50, internal_batch_size=16)}
    seconds = {}
    for name, call in calls.items():
        call()  # warm-up
        start = time.perf_counter()
        call()
        seconds[name] = (time.perf_counter() - start) / x.shape[0]
        net.zero_grad(set_to_none=True)
    return seconds


def sanity(size: int, n_images: int, epochs: int, folder: Path, seed: int = 0) -> dict:
    """Train the disc-task classifier, run the sanity checks and write :data:`FIGURES` into ``folder``."""
    import numpy as np
    import torch

    from mednet.engines.explanation_writer import denormalize
    from mednet.explain import attribution_maps, default_target_layer, feature_map_size
    from mednet.explain.attribution import METHOD_TITLES
    from mednet.explain.sanity import (
        BLOB_NORMALIZATION,
        blob_task,
        deletion_insertion,
        model_randomisation_test,
        train_blob_classifier,
    )
    from mednet.networks.classifiers import build_classifier, receptive_field
    from mednet.reports.explanation_figure import plot_explanation_grid, plot_sanity

    colours = ["red", "green", "blue", "yellow"]
    torch.manual_seed(seed)
    images, labels, _ = blob_task(448, size, 4, seed=2 * seed)
    start = time.perf_counter()
    net = train_blob_classifier(build_classifier("receptive_field_cnn", 4, size), images, labels, epochs=epochs,
                                seed=seed)
    train_s = time.perf_counter() - start
    test, test_labels, masks = blob_task(n_images, size, 4, seed=2 * seed + 1)
    mean = torch.tensor(BLOB_NORMALIZATION["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(BLOB_NORMALIZATION["std"]).reshape(1, 3, 1, 1)
    x = (test - mean) / std
    with torch.no_grad():
        probs = net(x).softmax(1)
    accuracy = float((probs.argmax(1) == test_labels).float().mean())
    print(f"receptive_field_cnn trained on the disc task at {size} px: {epochs} epochs in {train_s:.1f} s, "
          f"held-out accuracy {accuracy:.3f}", flush=True)

    maps = attribution_maps(net, x, METHODS, normalization=BLOB_NORMALIZATION)
    # the default layer (convblock10) against the network's last 3x3 block (convblock12), the textbook choice
    default, earlier = default_target_layer(net), "features.convblock12"
    blocks = [n for n, _ in net.features.named_children()]

    def field(layer: str) -> int:  # receptive field of a block of the chain network, in input pixels
        chain = list(net.features.children())[: blocks.index(layer.split(".")[1]) + 1]
        return receptive_field(torch.nn.Sequential(*chain))

    res, res_early = feature_map_size(net, None, size), feature_map_size(net, earlier, size)
    # every method with its default settings, plus Grad-CAM at the last 3x3 block (coarser)
    early_key = f"Grad-CAM @ {earlier.split('.')[-1]}"
    runs = {m: {} for m in METHODS}
    runs[early_key] = {"layer": earlier}
    maps[early_key] = attribution_maps(net, x, ("gradcam",), layer=earlier)["gradcam"]
    randomisation, deletion, summary = {}, {}, {}
    for key, kw in runs.items():
        method = key if key in METHODS else "gradcam"
        randomisation[key] = model_randomisation_test(net, x, method, seed=0, normalization=BLOB_NORMALIZATION, **kw)
        deletion[key] = deletion_insertion(net, x, maps[key], steps=20, baseline=0.0, seed=0)
        inside = float(np.mean([float(maps[key][i][masks[i]].mean()) / max(float(maps[key][i].mean()), 1e-8)
                                for i in range(n_images)]))
        r = randomisation[key]
        summary[key] = {"randomisation_rho_mean": r["mean"], "randomisation_rho_min": r["min"],
                        "randomisation_rho_max": r["max"], "randomisation_informative": int(n_images - r["n_constant"]),
                        **{k: deletion[key][k] for k in ("deletion_auc", "deletion_auc_random", "insertion_auc",
                                                         "insertion_auc_random")},
                        "map_in_disc_vs_mean": inside}
        print(f"{key}: randomisation rho mean {r['mean']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}, "
              f"{n_images - r['n_constant']} of {n_images} images with non-constant maps); deletion AUC "
              f"{deletion[key]['deletion_auc']:.3f} vs random {deletion[key]['deletion_auc_random']:.3f}; insertion "
              f"AUC {deletion[key]['insertion_auc']:.3f} vs random {deletion[key]['insertion_auc_random']:.3f}; map "
              f"inside the disc / map mean {inside:.2f}", flush=True)
    print(f"receptive field: {default} {field(default)} px ({res[0]}×{res[1]} map), {earlier} {field(earlier)} px "
          f"({res_early[0]}×{res_early[1]} map)", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    task = (f"receptive_field_cnn trained {epochs} epochs on the synthetic disc task at {size} px "
            f"(class = disc colour; "
            f"held-out accuracy {accuracy:.2f}), {n_images} held-out images")
    titled = {METHOD_TITLES.get(k, k): v for k, v in randomisation.items()}
    plot_sanity(titled, {METHOD_TITLES.get(k, k): v for k, v in deletion.items()}, folder / "explanation_sanity.png",
                title=f"Sanity of the attribution maps — {task}")
    rows = [0, 1, 2, 3]
    raw = denormalize(x[rows], BLOB_NORMALIZATION)
    titles = [f"pred {colours[int(probs[i].argmax())]} p={float(probs[i].max()):.2f}, "
              f"true {colours[int(test_labels[i])]}"
              for i in rows]
    shown = {k: maps[k][rows].numpy() for k in (*METHODS, early_key)}
    plot_explanation_grid(raw, shown, folder / "explanations.png", titles,
                          title=f"Attribution maps — receptive_field_cnn on the synthetic disc task ({size} px); "
                                f"Grad-CAM at the default layer {default.split('.')[-1]} and at the "
                                f"last 3×3 block {earlier.split('.')[-1]}",
                          resolutions={"gradcam": res, "gradcampp": res, early_key: res_early})
    print(f"figures written to {folder / 'explanation_sanity.png'} and {folder / 'explanations.png'}", flush=True)
    return {"size": size, "epochs": epochs, "train_seconds": train_s, "accuracy": accuracy, "images": n_images,
            "gradcam_map": f"{res[0]}x{res[1]}", "earlier_layer": earlier, "gradcam_map_earlier":
            f"{res_early[0]}x{res_early[1]}", "receptive_field": {default: field(default), earlier: field(earlier)},
            "methods": summary}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=8)
    parser.add_argument("--size", type=positive_int, default=64)
    parser.add_argument("--models", default="receptive_field_cnn,resnet18")
    parser.add_argument("--sanity_size", type=positive_int, default=64)
    parser.add_argument("--sanity_images", type=positive_int, default=16)
    parser.add_argument("--epochs", type=positive_int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="network, training and held-out images (0: the docs' "
                        "figures; another seed checks the layer choice on images it was not made on)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=cli_path, default=None,
                       help="folder for the sanity figures (default runs/bench_explain/<time>; never overwritten)")
    where.add_argument("--docs", type=cli_path, default=None,
                       help="write the sanity figures into this docs folder instead, replacing them (to refresh "
                            "bundles/dermoscopy_classification/docs)")
    parser.add_argument("--json", type=cli_path, default=None, help="file for the numbers (not overwritten)")
    parser.add_argument("--skip_timing", action="store_true")
    parser.add_argument("--skip_sanity", action="store_true")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with ``args.figures`` the folder the figures go to; files a run would replace are refused
    before any work, except the figures of an explicit ``--docs``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.figures = args.docs or args.out or default_output("bench_explain")
    if not args.skip_sanity and args.docs is None:
        existing = [name for name in FIGURES if (args.figures / name).exists()]
        if existing:
            parser.error(f"--out {args.figures}: {', '.join(existing)} exist; choose another folder")
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json}: exists; choose another file")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)  # paths made absolute here, before the change of directory
    os.chdir(REPO)
    results = {}
    if not args.skip_timing:
        results["timing"] = timing(args.models.split(","), args.size, args.images)
    if not args.skip_sanity:
        results["sanity"] = sanity(args.sanity_size, args.sanity_images, args.epochs, args.figures, args.seed)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "x", encoding="utf-8") as f:  # "x": never replaces a file made meanwhile
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
