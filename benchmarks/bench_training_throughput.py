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
does not augment; its own cost is ≈ 1.4 ms per batch of 16, see ``mednet.data.augment``). Each round runs both, back to back, in alternating order (plain first in odd
rounds, bundle first in even ones) so that drift in machine load hits both sides alike. Reported: the median of
the per-round ratios (the headline figure: paired, robust to a disturbed round) and the ratio of the best
rounds. The bundle's time is ``trainer.run()`` whole, so it also pays the work a real run does once (engine and
handler start-up, the end-of-run handlers) on this one epoch; a run of many epochs spreads that over all of them,
so the ratio is a lower bound of a real run's.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

from _common import add_device_argument, brain_parser, device_overrides, ensure_cohort, resolve_device, synchronize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset_dir", default="demo/bench_cohort")
    ap.add_argument("--patches", type=int, default=20000, help="patches per epoch (subset of the training patches)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch_size", type=int, default=None, help="batch size of both sides (default: the bundle's, 256)")
    add_device_argument(ap)
    args = ap.parse_args()

    import torch

    from mednet.data.datasets import PatchDataset

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = device.type == "cuda"  # the bundles' rule (bundles/common/runtime.json)
    cohort = ensure_cohort(args.dataset_dir, subjects=5, zoom=0.5)
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

        def plain() -> float:
            torch.manual_seed(0)
            net = base.get_parsed_content("network_def", lazy=False)
            net.load_state_dict(init)
            net.to(device).train()
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
            opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
            loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)  # background pixels in patches carry -1
            scaler = torch.amp.GradScaler("cuda") if amp else None
            t0 = time.perf_counter()
            for batch in loader:
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

        def bundle() -> float:
            torch.manual_seed(0)
            parser = brain_parser("train", **common, augmentation=False)  # the plain loop does not augment either
            parser["train"]["dataset"] = dataset  # the same patches, already extracted
            parser.parse()
            parser.get_parsed_content("network").load_state_dict(init)
            trainer = parser.get_parsed_content("train#trainer")
            t0 = time.perf_counter()
            trainer.run()
            synchronize(device)
            return n / (time.perf_counter() - t0)

        results = {"plain": [], "bundle": []}
        for r in range(args.rounds):
            order = ("plain", "bundle") if r % 2 == 0 else ("bundle", "plain")
            for side in order:
                results[side].append(plain() if side == "plain" else bundle())
            ratio = results["bundle"][-1] / results["plain"][-1]
            print(f"round {r + 1} ({' then '.join(order)}): plain {results['plain'][-1]:.0f} patches/s, "
                  f"bundle {results['bundle'][-1]:.0f} patches/s, ratio {ratio:.3f}")
        ratios = sorted(b / p for b, p in zip(results["bundle"], results["plain"]))
        median = ratios[len(ratios) // 2] if len(ratios) % 2 else 0.5 * (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
        p, b = max(results["plain"]), max(results["bundle"])
        print(f"plain PyTorch loop: best {p:.0f} patches/s")
        print(f"bundle (Ignite SupervisedTrainer + handlers): best {b:.0f} patches/s (best/best ratio {b / p:.3f})")
        print(f"throughput ratio bundle/plain, median of {len(ratios)} paired rounds = {median:.3f} "
              f"(target >= 0.9: {'MET' if median >= 0.9 else 'NOT MET'})")


if __name__ == "__main__":
    main()
