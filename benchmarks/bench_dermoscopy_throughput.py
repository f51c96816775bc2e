"""Dermoscopy bundle: data-loader vs training-step throughput, Ignite vs plain PyTorch, peak memory of one epoch.

    python benchmarks/bench_dermoscopy_throughput.py [--images 2000] [--source_size 256] [--image_size 64]
        [--models receptive_field_cnn,resnet18] [--engine_models receptive_field_cnn] [--rounds 3] [--rss_images 10015]

1. **Loader vs training step** (target: the loader delivers ≥ 3× the images/s the training step consumes). The
   synthetic set is written at ``--source_size`` px (JPEG) so decoding costs what it costs for real photographs;
   the bundle's training dataset (decode once + resize, then per-image augmentation and normalisation) is read
   through a ``DataLoader`` (batch 64, ``num_workers`` 0 — the bundle default) for a first epoch (decoding) and a
   second one (decoded images cached); the naive baseline decodes and resizes every image at every access
   (``cache=False``). The training step is forward + backward + SGD step of each model on batches already in
   memory, on the CPU (where the loader runs: the comparison is for a CPU workstation).
2. **Bundle vs plain PyTorch** (target ≥ 0.9): ``train#trainer`` from ``train.json`` with every handler of a real
   run (progress bar, stats, TensorBoard, per-epoch CSV + plot, checkpoint) against a plain loop with the same
   network, initial weights, DataLoader, loss (CE), optimiser (SGD 0.05, momentum 0.9, wd 5e-4) for one epoch;
   validation off on both sides, both on ``--device`` (``auto``: CUDA when present, with AMP, as the bundles).
   One untimed warm-up of each side (its first ``WARMUP_STEPS`` batches) comes first, so that the process's
   one-off costs fall on no timed round; rounds alternate the order; the median of the paired ratios is the
   headline.
   ``--engine_models`` (default the demo's CNN: a ResNet-18 epoch at 64 px takes ≈ 3 min on 2 cores).
3. **Peak RSS of one training epoch** at ``--image_size`` (target ≤ 3 GiB): ``train.json`` run for one epoch in a
   fresh process on a HAM10000-sized synthetic set (``--rss_images``), for each model; ``ru_maxrss`` of that
   process (``VmHWM``). Before training, the normalisation statistics decode every training image into the in-memory cache,
   so the cache is at its full size from the first iteration; for models slower than ``--rss_full_epoch_below``
   parameters the epoch is cut to ``--rss_iterations`` iterations (``train#trainer#epoch_length``) — the peak
   is the full cache plus one batch's activations either way.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    REPO,
    add_device_argument,
    cli_path,
    device_overrides,
    int_list,
    non_negative_int,
    paired_rounds,
    positive_int,
    resolve_device,
    synchronize,
)

#: batches of each side's untimed warm-up run (part 2)
WARMUP_STEPS = 3


def ensure_set(folder: Path, n: int, size: int) -> Path:
    """A synthetic set and its split in ``folder`` (built once); returns the split folder."""
    from mednet.data.lesion_split import prepare_dermoscopy_split
    from mednet.data.synthetic_dermoscopy import generate_synthetic_dermoscopy

    split = folder / "split"
    if not (split / "split.csv").is_file():
        t0 = time.perf_counter()
        metadata = generate_synthetic_dermoscopy(folder / "synthetic", n_images=n, size=size, seed=11)
        prepare_dermoscopy_split(metadata, split, images=str(folder / "synthetic" / "images"), seed=0)
        print(f"built {n} synthetic images at {size} px in {time.perf_counter() - t0:.0f} s: {split}")
    return split


def parser_for(config: str, **overrides):
    from monai.bundle import ConfigParser

    os.chdir(REPO)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "dermoscopy_classification" / "configs" / f"{config}.json"))
    parser.update(overrides)
    return parser


def loader_rate(dataset, epochs: int = 1, batch_size: int = 64) -> float:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for batch in loader:
            n += len(batch["label"])
    return n / (time.perf_counter() - t0)


def step_rate(model: str, image_size: int, batches: int = 6, batch_size: int = 64) -> float:
    import torch

    from mednet.networks import build_classifier

    net = build_classifier(model, 7, image_size)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, 7, (batch_size,))
    for i in range(batches + 1):
        if i == 1:
            t0 = time.perf_counter()  # the first step warms up allocators
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return batches * batch_size / (time.perf_counter() - t0)


def compare_engines(split: Path, model: str, image_size: int, rounds: int, device) -> float:
    """Median paired ratio bundle/plain images per second, both sides on ``device`` with the bundles' AMP rule."""
    import torch

    amp = device.type == "cuda"

    with tempfile.TemporaryDirectory() as runs:
        base = parser_for("train", dataset_dir=str(split), model=model, image_size=image_size, epochs=1,
                          val_interval=10**6, runs_root=runs, **device_overrides(device))
        dataset = base.get_parsed_content("train#dataset")
        for i in range(len(dataset)):  # decode once, like the bundle's second epoch
            dataset.raw_image(i)
        init = copy.deepcopy(base.get_parsed_content("network_def").state_dict())
        n = len(dataset) // 64 * 64
        if n == 0:
            raise SystemExit(f"part 2 needs at least one batch of 64 training images, the split has {len(dataset)}: "
                             f"raise --images")
        warmup_steps = min(WARMUP_STEPS, n // 64)

        def plain(steps: int | None = None) -> float:
            """Images/s of one epoch (``steps``: only the first batches, for the warm-up)."""
            torch.manual_seed(0)
            net = base.get_parsed_content("network_def", lazy=False)
            net.load_state_dict(init)
            net.to(device).train()
            loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, drop_last=True)
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            scaler = torch.amp.GradScaler(device.type, enabled=amp)
            synchronize(device)
            t0 = time.perf_counter()
            for step, batch in enumerate(loader):
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                image, label = batch["image"].to(device), batch["label"].to(device)
                with torch.autocast(device.type, enabled=amp):
                    loss = torch.nn.functional.cross_entropy(net(image), label)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            synchronize(device)
            return n / (time.perf_counter() - t0)

        def bundle(steps: int | None = None) -> float:
            """Images/s of ``trainer.run()`` (``steps``: an epoch of only that many batches, for the warm-up)."""
            torch.manual_seed(0)
            parser = parser_for("train", dataset_dir=str(split), model=model, image_size=image_size, epochs=1,
                                val_interval=10**6, runs_root=runs, **device_overrides(device))
            parser["train"]["images"] = base.get_parsed_content("train#images")  # same decoded images
            parser["normalization"] = base.get_parsed_content("normalization")
            if steps is not None:
                parser["train"]["trainer"]["epoch_length"] = steps
            parser.parse()
            parser.get_parsed_content("network").load_state_dict(init)
            trainer = parser.get_parsed_content("train#trainer")
            synchronize(device)
            t0 = time.perf_counter()
            trainer.run()
            synchronize(device)
            return n / (time.perf_counter() - t0)

        return paired_rounds(plain, bundle, rounds, unit="img/s", indent="  ",
                             warmup=(lambda: plain(warmup_steps), lambda: bundle(warmup_steps))).median_ratio


RSS_CHILD = """
import json, sys
sys.path.insert(0, {repo!r})
from mednet.app.bundles import run_bundle
extra = {{"train#trainer#epoch_length": {iterations}}} if {iterations} else {{}}
run_bundle("dermoscopy_classification", "train", dataset_dir={split!r}, model={model!r}, image_size={size},
           epochs=1, runs_root={runs!r}, **extra)
# VmHWM, not getrusage's ru_maxrss: ru_maxrss survives fork + exec, so a child started by a large parent
# reports the parent's peak (measured: 2.5 GiB for any model, the benchmark's own footprint)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(json.dumps({{"peak_rss_mib": int(hwm) / 1024}}))
"""


def peak_rss(split: Path, model: str, image_size: int, iterations: int | None = None) -> float:
    with tempfile.TemporaryDirectory() as runs:
        code = RSS_CHILD.format(repo=str(REPO), split=str(split), model=model, size=image_size, runs=runs,
                                iterations=iterations or 0)
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=positive_int, default=2000)
    ap.add_argument("--source_size", type=positive_int, default=256, help="size of the synthetic JPEGs (decoding cost)")
    ap.add_argument("--image_size", type=positive_int, default=64)
    ap.add_argument("--models", default="receptive_field_cnn,resnet18")
    ap.add_argument("--engine_models", default="receptive_field_cnn")
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--rss_iterations", type=positive_int, default=20)
    ap.add_argument("--rss_full_epoch_below", type=positive_int, default=1_000_000, help="parameters")
    ap.add_argument("--rss_images", type=non_negative_int, default=10015, help="0 skips the memory measurement")
    ap.add_argument("--work", type=cli_path, default=REPO / "demo" / "bench_dermoscopy",
                    help="where the synthetic sets are built (default: demo/bench_dermoscopy in the repository)")
    ap.add_argument("--parts", type=int_list(allowed=(1, 2, 3)), default="1,2,3",
                    help="which measurements to run (comma-separated, of 1,2,3)")
    ap.add_argument("--threads", type=positive_int, default=2)
    add_device_argument(ap)
    return ap


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """The arguments, checked: the synthetic generator's limits are refused here, not after minutes of work."""
    ap = build_parser()
    args = ap.parse_args(argv)
    from mednet.data.synthetic_dermoscopy import HAM10000_CLASSES, MIN_LESIONS_PER_CLASS

    minimum = MIN_LESIONS_PER_CLASS * len(HAM10000_CLASSES)  # the generator's smallest set
    if args.images < minimum or 0 < args.rss_images < minimum:
        ap.error(f"--images and --rss_images (unless 0) must be >= {minimum}")
    if not 16 <= args.source_size <= 1024 or not 16 <= args.image_size <= 1024:
        ap.error("--source_size and --image_size must be from 16 to 1024 pixels")
    args.parts = set(args.parts)
    return args, ap


def main(argv: list[str] | None = None) -> None:
    args, ap = parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, ap)
    models = [m for m in args.models.split(",") if m]
    split = ensure_set(args.work / f"n{args.images}_s{args.source_size}", args.images, args.source_size)
    base = parser_for("train", dataset_dir=str(split), image_size=args.image_size, runs_root=tempfile.mkdtemp())
    cached = base.get_parsed_content("train#dataset")
    images = base.get_parsed_content("train#images")
    naive = images.with_transform(cached.transform)
    naive.cache, naive._images = False, {}

    parts = args.parts
    if 1 in parts:
        measure_loader(cached, images, naive, models, args)
    if 2 in parts:
        print(f"\n2. bundle (Ignite SupervisedTrainer + handlers) vs plain PyTorch loop, one epoch, {args.rounds} rounds, "
              f"device {device}{' (AMP)' if device.type == 'cuda' else ''}")
        for model in [m for m in args.engine_models.split(",") if m]:
            print(f" {model}:")
            median = compare_engines(split, model, args.image_size, args.rounds, device)
            print(f"  throughput ratio bundle/plain, median of {args.rounds} paired rounds = {median:.3f} "
                  f"(target >= 0.9: {'MET' if median >= 0.9 else 'NOT MET'})")
    if 3 in parts and args.rss_images:
        measure_rss(models, args)


def measure_loader(cached, images, naive, models, args) -> None:
    import torch

    print(f"\n1. data loader vs training step at {args.image_size} px ({len(cached)} training images from "
          f"{args.source_size} px JPEGs, batch 64, {torch.get_num_threads()} threads)")
    cold = images.with_transform(cached.transform)
    cold._images = {}  # an empty cache: this epoch decodes every image once
    first = loader_rate(cold)
    cached_rate = loader_rate(cached)  # the bundle's dataset: decoded for the normalisation statistics already
    naive_rate = loader_rate(naive)
    print(f"  loader, decoded-image cache: {cached_rate:.0f} img/s (cold, incl. decoding: {first:.0f} img/s); "
          f"naive decode+resize every access: {naive_rate:.0f} img/s (cache/naive {cached_rate / naive_rate:.1f}x)")
    for model in models:
        consume = step_rate(model, args.image_size)
        print(f"  {model}: training step consumes {consume:.0f} img/s -> loader/step = {cached_rate / consume:.1f}x "
              f"(target >= 3: {'MET' if cached_rate >= 3 * consume else 'NOT MET'}); naive loader/step "
              f"{naive_rate / consume:.1f}x")



def measure_rss(models, args) -> None:
    big = ensure_set(args.work / f"n{args.rss_images}_s{args.image_size}", args.rss_images, args.image_size)
    print(f"\n3. peak RSS of one training epoch through train.json ({args.rss_images} images, HAM10000-sized, "
          f"{args.image_size} px)")
    from mednet.networks import build_classifier, count_parameters

    for model in models:
        full = count_parameters(build_classifier(model, 7, args.image_size)) < args.rss_full_epoch_below
        rss = peak_rss(big, model, args.image_size, None if full else args.rss_iterations)
        what = "full epoch" if full else f"first {args.rss_iterations} iterations, full image cache"
        print(f"  {model} ({what}): peak RSS {rss:.0f} MiB ({rss / 1024:.2f} GiB; target <= 3 GiB: "
              f"{'MET' if rss <= 3072 else 'NOT MET'})")


if __name__ == "__main__":
    main()
