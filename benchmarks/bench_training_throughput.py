"""Throughput of the brain bundle's Ignite training vs a plain PyTorch loop (target ratio ≥ 0.9).

    python benchmarks/bench_training_throughput.py [--dataset_dir demo/bench_cohort] [--patches 20000] [--rounds 5]
        [--batch_size 256] [--device auto|cpu|cuda]

Both train the same network (same initial weights) on the same balanced 16×16 patches with the same
DataLoader, loss (CE), optimiser (Adam at the bundle's learning rate) and batch size (the bundle's, 256;
``--batch_size`` for both) for one
epoch, on the same device (``--device``; ``auto`` = the bundles' rule: CUDA when present), with the bundle's AMP rule
on both sides (on CUDA: ``torch.autocast`` + ``GradScaler``, as MONAI's ``SupervisedTrainer(amp=True)``). The bundle side is
``train#trainer`` instantiated from ``train.json`` with every handler of a real run (progress bar, stats,
TensorBoard, per-epoch CSV + plot, checkpoints, train metrics); validation is switched off on both sides
(it is not training throughput), and so is the bundle's patch augmentation (`--augmentation`: the plain loop
does not augment; its own cost is ≈ 1.4 ms per batch of 16, see ``mednet.data.augment``). Before the timed
rounds, each side runs once untimed on its first ``WARMUP_STEPS`` batches (the bundle through the same
``train#trainer`` with ``epoch_length`` cut, its end-of-run handlers included), so that the process's one-off costs
(lazy imports, allocator growth, kernel selection) fall on no timed round. Each round runs both, back to back, in
alternating order (plain first in odd rounds, bundle first in even ones) so that drift in machine load hits both
sides alike. Reported: the median of
the per-round ratios (the headline figure: paired, robust to a disturbed round) and the ratio of the best
rounds. The bundle's time is ``trainer.run()`` whole, so it also pays the work a real run does once (engine and
handler start-up, the end-of-run handlers) on this one epoch; a run of many epochs spreads that over all of them,
so the ratio is a lower bound of a real run's.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time

from _common import (
    REPO,
    add_device_argument,
    brain_parser,
    cli_path,
    device_overrides,
    ensure_cohort,
    paired_rounds,
    positive_int,
    resolve_device,
    synchronize,
)

#: batches of each side's untimed warm-up run
WARMUP_STEPS = 3


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset_dir", type=cli_path, default=REPO / "demo" / "bench_cohort",
                    help="demo cohort, built there when absent (default: demo/bench_cohort in the repository)")
    ap.add_argument("--patches", type=positive_int, default=20000, help="patches per epoch (subset of the training patches)")
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--batch_size", type=positive_int, default=None,
                    help="batch size of both sides (default: the bundle's, 256)")
    add_device_argument(ap)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)

    import torch

    from mednet.data.datasets import PatchDataset

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, ap)
    amp = device.type == "cuda"  # the bundles' rule (bundles/common/runtime.json)
    cohort = ensure_cohort(str(args.dataset_dir), subjects=5, zoom=0.5)
    with tempfile.TemporaryDirectory() as runs:
        common = dict(dataset_dir=str(cohort), epochs=1, val_interval=10**6, runs_root=runs, **device_overrides(device))
        if args.batch_size is not None:
            common["batch_size"] = args.batch_size
        base = brain_parser("train", **common)
        batch_size, learning_rate = int(base.get_parsed_content("batch_size")), float(base.get_parsed_content("learning_rate"))
        patches = base.get_parsed_content("train#patches")
        n = min(args.patches, len(patches))
        patches.images, patches.labels = patches.images[:n], patches.labels[:n]
        dataset = PatchDataset(patches)
        init = copy.deepcopy(base.get_parsed_content("network_def").state_dict())
        print(f"{n} patches of 16x16, batch {batch_size}, {torch.get_num_threads()} threads, device {device}"
              f"{' (AMP)' if amp else ''}")

        warmup_steps = min(WARMUP_STEPS, math.ceil(n / batch_size))

        def plain(steps: int | None = None) -> float:
            """Patches/s of one epoch (``steps``: only the first batches, for the warm-up)."""
            torch.manual_seed(0)
            net = base.get_parsed_content("network_def", lazy=False)
            net.load_state_dict(init)
            net.to(device).train()
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
            opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
            loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)  # background pixels in patches carry -1
            scaler = torch.amp.GradScaler("cuda") if amp else None
            synchronize(device)
            t0 = time.perf_counter()
            for step, batch in enumerate(loader):
                if step == steps:
                    break
                image, label = batch["image"].to(device), batch["label"][:, 0].to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, enabled=amp):
                    loss = loss_fn(net(image), label)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
            synchronize(device)
            return n / (time.perf_counter() - t0)

        def bundle(steps: int | None = None) -> float:
            """Patches/s of ``trainer.run()`` (``steps``: an epoch of only that many batches, for the warm-up)."""
            torch.manual_seed(0)
            parser = brain_parser("train", **common, augmentation=False)  # the plain loop does not augment either
            parser["train"]["dataset"] = dataset  # the same patches, already extracted
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

        rounds = paired_rounds(plain, bundle, args.rounds, unit="patches/s",
                               warmup=(lambda: plain(warmup_steps), lambda: bundle(warmup_steps)))
        median = rounds.median_ratio
        p, b = max(rounds.baseline), max(rounds.measured)
        print(f"plain PyTorch loop: best {p:.0f} patches/s")
        print(f"bundle (Ignite SupervisedTrainer + handlers): best {b:.0f} patches/s (best/best ratio {b / p:.3f})")
        print(f"throughput ratio bundle/plain, median of {args.rounds} paired rounds = {median:.3f} "
              f"(target >= 0.9: {'MET' if median >= 0.9 else 'NOT MET'})")


if __name__ == "__main__":
    main()
