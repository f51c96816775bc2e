"""Whole-volume inference time of the brain bundle on a 197×233×189 volume (target ≤ 5 s on 2 CPU cores).

    python benchmarks/bench_inference.py [--variant skip] [--repeats 3] [--threads 2] [--device auto|cpu|cuda]

Times the bundle's own inferer (``mednet.inference.ViewAggregationInferer``: one MONAI ``SliceInferer`` over the
brain's bounding box per view — axial, coronal, sagittal by default — softmax averaged, as configured in
``configs/common.json``) against two plain PyTorch baselines in the same run: the same network applied to
batches of slices along the same views in a Python loop, softmax averaged — over whole slices (what a plain
script does), and over the same brain bounding box as the bundle (like-for-like work: the ratio then measures
the engine, not the crop). Also times a single (axial) view and
the whole ``inference.json`` path (load, normalise, infer, mask, write NIfTI) once. Random weights: speed does
not depend on them. ``--device`` (``auto`` = the bundles' rule: CUDA when present) runs both sides there, with
the bundles' AMP rule (autocast on CUDA); GPU work is synchronised before each clock reading.

Scaling: the bundle inferer's time per voxel on the template at 1 mm and on the template resampled to 0.7 mm
(torch trilinear interpolation by 1/0.7 per axis: 281×332×270, 2.9× the voxels), in µs per voxel of the volume
and in µs per voxel the inferer processes (the brain's bounding box plus its fixed 16-voxel margin:
``mednet.inference.foreground_box``, 81 % of the 1 mm volume but 70 % of the 0.7 mm one), and the ratios
0.7 mm / 1 mm (≈ 1 when inference time is linear in the number of voxels). The per-processed-voxel ratio is
the one that tests linearity; the per-volume-voxel ratio is what a user sees.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

from _common import add_device_argument, brain_parser, positive_int, resolve_device, synchronize


def best_of(fn, repeats: int, device=None) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device is not None:
            synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="skip")
    ap.add_argument("--repeats", type=positive_int, default=3, help="timed runs of each (best reported)")
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--slice_batch_size", type=positive_int, default=16)
    ap.add_argument("--views", type=int, nargs="+", default=None, choices=(0, 1, 2),
                    help="slicing axes (default: the bundle's)")
    add_device_argument(ap)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)

    import nibabel as nib
    import torch

    from mednet.data.mni import load_mni152_template

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, ap)
    amp = device.type == "cuda"  # the bundles' rule (bundles/common/runtime.json)
    overrides = {} if args.views is None else {"views": args.views}
    parser = brain_parser("train", variant=args.variant, slice_batch_size=args.slice_batch_size, **overrides)
    net = parser.get_parsed_content("network_def").to(device).eval()
    inferer = parser.get_parsed_content("validate#inferer")
    views = list(inferer.views)
    from mednet.inference import ViewAggregationInferer, foreground_box

    axial = ViewAggregationInferer(views=(2,), sw_batch_size=args.slice_batch_size)
    tpl = load_mni152_template()
    vol = torch.from_numpy(tpl.t1)[None, None].to(device)  # (1, 1, 197, 233, 189)
    print(f"volume {tuple(vol.shape[2:])}, variant {args.variant}, device {device}{' (AMP)' if amp else ''}, "
          f"{torch.get_num_threads()} threads, "
          f"{args.slice_batch_size} slices per batch, views {views}")

    def bundle_inferer():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            return inferer(vol, net)

    def plain_loop():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            total = 0
            for view in views:
                slices = vol[0].movedim(view + 1, 0)  # (S, 1, H, W)
                out = [net(slices[i : i + args.slice_batch_size]) for i in range(0, slices.shape[0], args.slice_batch_size)]
                total = total + torch.softmax(torch.cat(out).float(), 1).movedim(0, view + 1)  # (3, X, Y, Z)
            return (total / len(views))[None]

    box = foreground_box(vol, inferer.inferers[0].margin)  # the bundle's crop: (x, y, z) slices

    def plain_loop_box():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            cropped, total = vol[(0, slice(None), *box)], 0  # (1, x, y, z)
            for view in views:
                slices = cropped.movedim(view + 1, 0)  # (S, 1, H, W)
                out = [net(slices[i : i + args.slice_batch_size]) for i in range(0, slices.shape[0], args.slice_batch_size)]
                total = total + torch.softmax(torch.cat(out).float(), 1).movedim(0, view + 1)
            return total / len(views)  # (3, x, y, z): the box only (background outside it is the mask rule's)

    def axial_only():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            return axial(vol, net)

    a, b = bundle_inferer(), plain_loop()
    brain = vol[0, 0] != 0
    agree = (a[0].argmax(0)[brain] == b[0].argmax(0)[brain]).float().mean().item()
    print(f"labels inside the brain agree with full-slice inference on {agree:.2%} of voxels")
    t_plain = best_of(plain_loop, args.repeats, device)
    t_plain_box = best_of(plain_loop_box, args.repeats, device)
    t_bundle = best_of(bundle_inferer, args.repeats, device)
    t_axial = best_of(axial_only, args.repeats, device)
    print(f"plain PyTorch loop over slice batches ({len(views)} views): {t_plain:.2f} s")
    print(f"plain PyTorch loop over the bundle's brain box:  {t_plain_box:.2f} s")
    print(f"bundle ViewAggregationInferer ({len(views)} views):        {t_bundle:.2f} s   "
          f"(ratio plain/bundle = {t_plain / t_bundle:.2f}x whole slices, {t_plain_box / t_bundle:.2f}x same box)")
    print(f"bundle inferer, axial view only:                 {t_axial:.2f} s")

    # linear scaling: time per voxel at 1 mm and at 0.7 mm (trilinear resampling; background stays 0 away from
    # the brain, so the brain's bounding box scales with the volume)
    fine = torch.nn.functional.interpolate(vol, scale_factor=1 / 0.7, mode="trilinear", align_corners=False)

    def bundle_inferer_fine():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            return inferer(fine, net)

    # interleaved (1 mm, 0.7 mm, 1 mm, ...), best of each: a shared machine's load hits both sizes alike
    t_1mm, t_fine = math.inf, math.inf
    for _ in range(args.repeats):
        t_1mm = min(t_1mm, best_of(bundle_inferer, 1, device))
        t_fine = min(t_fine, best_of(bundle_inferer_fine, 1, device))
    us_1mm, us_fine = t_1mm / vol[0, 0].numel() * 1e6, t_fine / fine[0, 0].numel() * 1e6
    # what the inferer actually processes: the bounding box with its margin (fixed in voxels, so a smaller share
    # of the finer volume); time per processed voxel is the test of linear scaling
    n_box_1mm, n_box_fine = (math.prod(s.stop - s.start for s in foreground_box(v, inferer.inferers[0].margin))
                             for v in (vol, fine))
    box_1mm, box_fine = t_1mm / n_box_1mm * 1e6, t_fine / n_box_fine * 1e6
    print(f"time per voxel ({len(views)} views): 1 mm {tuple(vol.shape[2:])} {us_1mm:.3f} µs/voxel ({t_1mm:.2f} s); "
          f"0.7 mm {tuple(fine.shape[2:])} {us_fine:.3f} µs/voxel ({t_fine:.2f} s, {fine[0, 0].numel() / vol[0, 0].numel():.2f}x "
          f"the voxels); ratio 0.7 mm / 1 mm = {us_fine / us_1mm:.2f} per volume voxel")
    print(f"time per processed voxel (bounding box + margin: {n_box_1mm / vol[0, 0].numel():.0%} of the 1 mm volume, "
          f"{n_box_fine / fine[0, 0].numel():.0%} of the 0.7 mm one): 1 mm {box_1mm:.3f} µs, 0.7 mm {box_fine:.3f} µs; "
          f"ratio 0.7 mm / 1 mm = {box_fine / box_1mm:.2f} (1.00 = linear in the number of processed voxels)")
    del fine

    # the full path a user runs: load + normalise + infer + mask + write, via inference.json's pieces
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/mni.nii.gz"
        nib.save(nib.Nifti1Image(tpl.t1, tpl.affine), path)
        from mednet.data.transforms import LoadLabelledVolumed, SaveLabelVolumed, TissueLabelsd

        t0 = time.perf_counter()
        d = LoadLabelledVolumed()({"image": path})
        t_load = time.perf_counter() - t0
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            d["pred"] = inferer(d["image"][None].to(device), net)[0].float().cpu()
        d = TissueLabelsd()(d)
        SaveLabelVolumed(output_dir=tmp)(d)
        t_total = time.perf_counter() - t0
    print(f"end to end (load {t_load:.2f} s + infer + mask + write NIfTI): {t_total:.2f} s")
    print(f"target: network inference <= 5 s -> {'MET' if t_bundle <= 5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
