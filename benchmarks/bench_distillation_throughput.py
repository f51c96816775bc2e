"""Knowledge distillation: throughput of :class:`mednet.engines.distillation.DistillationTrainer` against a plain
PyTorch KD loop, with 1 and with 5 teachers.

    python benchmarks/bench_distillation_throughput.py [--image_size 32] [--batch_size 64] [--iterations 30]
        [--warmup 3] [--student receptive_field_cnn] [--teacher shufflenet_v2_x0_5] [--repeats 3] [--out kd.json]

What is measured: training images per second of one KD step — the teachers' forward (no gradient, eval mode),
the student's forward, :class:`mednet.losses.distillation.DistillationLoss` (``avg_loss``, T = 4), backward and an
SGD step — over ``--iterations`` batches of ``--batch_size`` images, after ``--warmup`` untimed batches. Both
sides use the same student and teachers (``mednet.networks.build_classifier(name, 7, image_size)``; each side
starts from the same initial student weights), the same loss, optimiser settings and batches. The data are random
images and labels in an in-memory ``TensorDataset`` read by a ``DataLoader`` (``num_workers`` 0), so image
decoding and augmentation are *not* measured: the ratio is the cost of the MONAI/Ignite engine around the step.

- **plain**: a hand-written loop over the DataLoader (the baseline).
- **trainer**: ``DistillationTrainer`` on the same DataLoader with ``epoch_length = iterations``, ``decollate``
  off and ``optim_set_to_none`` as in the bundle, a ``train_loss`` ``Average`` metric (what the bundle attaches),
  no other handlers.

The two are measured alternately (plain first in odd repeats, trainer first in even ones); each rate is the median
over ``--repeats``, and the headline is the median of the paired trainer / plain ratios (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from _common import REPO  # noqa: F401  (puts the repository on sys.path)


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
    """Images/s of the hand-written KD loop (the first ``warmup`` batches untimed)."""
    import torch

    from mednet.losses.distillation import DistillationLoss

    loss_function = DistillationLoss(mode="avg_loss")
    optimizer = _optimizer(student)
    student.train()
    n, t0 = 0, None
    for i, (images, labels) in enumerate(loader):
        if i == args.warmup:
            _sync(device)
            t0, n = time.perf_counter(), 0
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)  # before the forward pass, as MONAI's trainers (same peak memory)
        with torch.no_grad():
            teacher_logits = torch.stack([t(images) for t in teachers])
        loss = loss_function(student(images), teacher_logits, labels)
        loss.backward()
        optimizer.step()
        n += len(labels)
    _sync(device)
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
        decollate=False, optim_set_to_none=True)
    marks: dict[str, float] = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=args.warmup))
    def _start(engine):
        _sync(device)
        marks["t0"] = time.perf_counter()

    trainer.run()
    _sync(device)
    return args.iterations * args.batch_size / (time.perf_counter() - marks["t0"])


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--student", default="receptive_field_cnn")
    p.add_argument("--teacher", default="shufflenet_v2_x0_5")
    p.add_argument("--teacher_counts", default="1,5", help="numbers of teachers to measure, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="optional JSON file for the numbers")
    args = p.parse_args()
    if args.warmup < 1 or args.iterations < 1:
        p.error("--warmup and --iterations must be >= 1")

    import torch

    from mednet.networks import build_classifier

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}, student {args.student}, teacher "
          f"{args.teacher}, {args.image_size} px, batch {args.batch_size}, {args.iterations} timed iterations "
          f"(+{args.warmup} warm-up), {args.repeats} repeats; in-memory random data (loading not measured)")
    loader = _loader(args, args.warmup + args.iterations)
    torch.manual_seed(0)
    initial_student = build_classifier(args.student, 7, args.image_size)
    rows = []
    for n_teachers in (int(x) for x in args.teacher_counts.split(",")):
        teachers = []
        for m in range(n_teachers):
            torch.manual_seed(100 + m)
            teachers.append(build_classifier(args.teacher, 7, args.image_size).to(device).eval().requires_grad_(False))
        plain, engine, ratios = [], [], []
        for r in range(args.repeats):
            order = ("plain", "trainer") if r % 2 == 0 else ("trainer", "plain")
            rates = {}
            for side in order:
                student = copy.deepcopy(initial_student).to(device)
                fn = plain_rate if side == "plain" else trainer_rate
                rates[side] = fn(student, teachers, loader, args, device)
            plain.append(rates["plain"])
            engine.append(rates["trainer"])
            ratios.append(rates["trainer"] / rates["plain"])
        row = {"teachers": n_teachers, "plain_img_s": statistics.median(plain),
               "trainer_img_s": statistics.median(engine), "ratio": statistics.median(ratios),
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
        result = {**options, "device": str(device), "threads": torch.get_num_threads(), "rows": rows}
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
