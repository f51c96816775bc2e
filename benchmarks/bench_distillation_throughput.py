"""Knowledge distillation: throughput of :class:`mednet.engines.distillation.DistillationTrainer` against a plain
PyTorch KD loop, with 1 and with 5 teachers.

    python benchmarks/bench_distillation_throughput.py [--image_size 32] [--batch_size 64] [--iterations 30]
        [--warmup 3] [--student receptive_field_cnn] [--teacher shufflenet_v2_x0_5] [--teacher_counts 1,5]
        [--repeats 3] [--threads 2] [--device auto|cpu|cuda] [--out kd.json]

What is measured: training images per second of one KD step — the teachers' forward (no gradient, eval mode),
the student's forward, :class:`mednet.losses.distillation.DistillationLoss` (``avg_loss``, T = 4), backward and an
SGD step — over ``--iterations`` batches of ``--batch_size`` images, after ``--warmup`` untimed batches. Both
sides use the same student and teachers (``mednet.networks.build_classifier(name, 7, image_size)``; each side
starts from the same initial student weights), the same loss, optimiser settings and batches. The data are random
images and labels in an in-memory ``TensorDataset`` read by a ``DataLoader`` (``num_workers`` 0), so image
decoding and augmentation are *not* measured: the ratio is the cost of the MONAI/Ignite engine around the step.
Both sides run on ``--device`` (``auto``: CUDA when present) with the bundles' AMP rule, as ``distill.json``: on
CUDA, teachers, student and loss under ``torch.autocast`` and the backward through a ``GradScaler``.

- **plain**: a hand-written loop over the DataLoader (the baseline).
- **trainer**: ``DistillationTrainer`` on the same DataLoader with ``epoch_length = iterations``, ``decollate``
  off, ``optim_set_to_none`` and ``amp`` as in the bundle, a ``train_loss`` ``Average`` metric (what the bundle
  attaches), no other handlers.

The two are measured alternately (plain first in odd repeats, trainer first in even ones); each rate is the median
over ``--repeats``, and the headline is the median of the paired trainer / plain ratios (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

from _common import (
    add_device_argument,
    cli_path,
    device_overrides,
    int_list,
    paired_rounds,
    positive_int,
    resolve_device,
    synchronize,
)


def _loader(args, n_batches: int):
    import torch

    g = torch.Generator().manual_seed(0)
    n = n_batches * args.batch_size
    images = torch.randn(n, 3, args.image_size, args.image_size, generator=g)
    labels = torch.randint(0, 7, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=args.batch_size,
                                       shuffle=False, num_workers=0, drop_last=True)


def _optimizer(student):
    import torch

    return torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def plain_rate(student, teachers, loader, args, device) -> float:
    """Images/s of the hand-written KD loop (the first ``warmup`` batches untimed), AMP on CUDA as the trainer."""
    import torch

    from mednet.losses.distillation import DistillationLoss

    amp = device_overrides(device)["amp"]
    loss_function = DistillationLoss(mode="avg_loss")
    optimizer = _optimizer(student)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    student.train()
    n, t0 = 0, None
    for i, (images, labels) in enumerate(loader):
        if i == args.warmup:
            synchronize(device)
            t0, n = time.perf_counter(), 0
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)  # before the forward pass, as MONAI's trainers (same peak memory)
        with torch.autocast(device.type, enabled=amp):  # teachers too, as DistillationTrainer
            with torch.no_grad():
                teacher_logits = torch.stack([t(images) for t in teachers])
            loss = loss_function(student(images), teacher_logits, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n += len(labels)
    synchronize(device)
    return n / (time.perf_counter() - t0)


def trainer_rate(student, teachers, loader, args, device) -> float:
    """Images/s of :class:`DistillationTrainer` (timed from the end of batch ``warmup`` to the end of the run)."""
    from ignite.engine import Events
    from ignite.metrics import Average

    from mednet.engines.distillation import DistillationTrainer
    from mednet.losses.distillation import DistillationLoss

    def prepare_batch(batch, device=None, non_blocking=False, **kwargs):
        return batch[0].to(device, non_blocking=non_blocking), batch[1].to(device, non_blocking=non_blocking)

    trainer = DistillationTrainer(
        teachers=teachers, device=device, max_epochs=1, train_data_loader=loader,
        epoch_length=args.warmup + args.iterations, network=student, optimizer=_optimizer(student),
        loss_function=DistillationLoss(mode="avg_loss"), prepare_batch=prepare_batch,
        additional_metrics={"train_loss": Average(output_transform=lambda out: out["loss"])},
        decollate=False, optim_set_to_none=True, amp=device_overrides(device)["amp"])
    marks: dict[str, float] = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=args.warmup))
    def _start(engine):
        synchronize(device)
        marks["t0"] = time.perf_counter()

    trainer.run()
    synchronize(device)
    return args.iterations * args.batch_size / (time.perf_counter() - marks["t0"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image_size", type=positive_int, default=32)
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--iterations", type=positive_int, default=30)
    p.add_argument("--warmup", type=positive_int, default=3, help="untimed batches at the start of each run")
    p.add_argument("--student", default="receptive_field_cnn")
    p.add_argument("--teacher", default="shufflenet_v2_x0_5")
    p.add_argument("--teacher_counts", type=int_list(minimum=1), default="1,5",
                   help="numbers of teachers to measure, comma-separated")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=2)
    add_device_argument(p)
    p.add_argument("--out", type=cli_path, default=None, help="optional JSON file for the numbers (not overwritten)")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """The arguments, checked before minutes of measurement: ``--teacher_counts`` as a list of integers >= 1, and
    an existing ``--out`` refused (a run's numbers are not replaced by another's)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.out is not None and args.out.exists():
        p.error(f"--out {args.out}: exists; choose another file")
    return args, p


def main(argv: list[str] | None = None) -> None:
    args, p = parse_args(argv)

    import torch

    from mednet.networks import build_classifier

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, p)
    amp = device_overrides(device)["amp"]
    print(f"device {device}{' (AMP)' if amp else ''}, torch threads {torch.get_num_threads()}, student {args.student}, "
          f"teacher {args.teacher}, {args.image_size} px, batch {args.batch_size}, {args.iterations} timed iterations "
          f"(+{args.warmup} warm-up), {args.repeats} repeats; in-memory random data (loading not measured)")
    loader = _loader(args, args.warmup + args.iterations)
    torch.manual_seed(0)
    initial_student = build_classifier(args.student, 7, args.image_size)

    def run(rate, teachers):
        """One measurement of ``rate`` (``plain_rate`` or ``trainer_rate``), from the same initial student."""
        return lambda: rate(copy.deepcopy(initial_student).to(device), teachers, loader, args, device)

    rows = []
    for n_teachers in args.teacher_counts:
        teachers = []
        for m in range(n_teachers):
            torch.manual_seed(100 + m)
            teachers.append(build_classifier(args.teacher, 7, args.image_size).to(device).eval().requires_grad_(False))
        # the untimed batches of every run (--warmup) absorb the one-off costs: no separate warm-up run
        rounds = paired_rounds(run(plain_rate, teachers), run(trainer_rate, teachers), args.repeats, log=None)
        plain, engine = rounds.baseline, rounds.measured
        row = {"teachers": n_teachers, "plain_img_s": statistics.median(plain),
               "trainer_img_s": statistics.median(engine), "ratio": rounds.median_ratio,
               "plain_runs": plain, "trainer_runs": engine}
        rows.append(row)
        print(f"  {n_teachers} teacher(s): plain {', '.join(f'{x:.0f}' for x in plain)} img/s; "
              f"trainer {', '.join(f'{x:.0f}' for x in engine)} img/s")

    print(f"\n{'teachers':>8}  {'plain img/s':>11}  {'trainer img/s':>13}  {'ratio':>5}")
    for row in rows:
        print(f"{row['teachers']:>8}  {row['plain_img_s']:>11.1f}  {row['trainer_img_s']:>13.1f}  {row['ratio']:>5.2f}")
    print("target: ratio (trainer / plain, median of paired repeats) >= 0.9")
    if args.out:
        options = {k: v for k, v in vars(args).items() if k not in ("out", "device")}
        result = {**options, "device": str(device), "amp": amp, "threads": torch.get_num_threads(), "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "x", encoding="utf-8") as f:  # "x": never replaces a file made meanwhile
            json.dump(result, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
