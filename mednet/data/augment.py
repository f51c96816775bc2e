"""On-the-fly intensity and resolution augmentation of training patch batches.

Real scans differ from the training cohort in what preprocessing cannot remove: noise (Rician, a few percent of
the brain's intensity), blur and partial volume from thick slices or resampling along one axis, and a residual
intensity non-uniformity after bias-field correction. :class:`TissuePatchAugmentation` corrupts each training
batch with exactly these — Rician or Gaussian noise, a Gaussian blur with independent sigmas per axis
(anisotropic, like a thick-slice acquisition seen in a coronal or sagittal plane) and a mild smooth
multiplicative field — with parameters drawn per patch, and keeps background pixels at 0, as in a
skull-stripped scan.

Left out on purpose: gamma/contrast and histogram-shift augmentation. Intensities are histogram-equalised per
volume (each brain voxel becomes its rank), which removes any monotonic intensity change exactly; distorting the
ranks instead moves the tissue boundaries the network has to learn (an earlier gamma augmentation dropped
validation Dice to 0.77). Gamma variation belongs in the *volumes* (``data_prep.demo_cohort``), before
normalisation, where it is.

Why not MONAI's ``RandRicianNoise`` / ``RandGaussianSmooth`` / ``RandBiasField``: they draw one set of
parameters per call and are built for one volume at a time. Measured on 2 CPU cores for one batch of 16 patches
of 16×16 (seen as 16 channels): smoothing 87 ms, Rician noise 4.4 ms, bias field 3.4 ms — per patch 0.2–2.3 ms —
against ≈ 11 ms for the whole training step. The same operations written on the batch tensor (grouped
convolution for per-patch blur kernels, a per-patch polynomial field) cost well under a millisecond per batch and
run on the training device. Nothing in it waits for the GPU (no ``nonzero`` or ``.item()`` on a CUDA batch), so
the CPU keeps queueing work ahead of it. :class:`AugmentingPrepareBatch` applies it in MONAI's ``SupervisedTrainer`` (its
``prepare_batch`` hook).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch, default_prepare_batch

__all__ = ["TissuePatchAugmentation", "AugmentingPrepareBatch"]


class TissuePatchAugmentation:
    """Random noise, anisotropic blur and residual bias for a batch of brain patches; background stays 0.

    Args:
        noise_prob: probability that a patch gets noise (Rician or Gaussian, chosen with equal odds).
        noise_std: range of the noise standard deviation, in normalised intensity units (brain intensities are
            in [0, 1] after histogram equalisation); drawn uniformly per patch.
        blur_prob: probability that a patch is blurred, with independent sigmas along its two axes.
        blur_sigma: range of each sigma, in pixels.
        bias_prob: probability of a smooth multiplicative field ``exp(p(u, v))``, ``p`` a random quadratic
            polynomial over the patch (``u, v`` in [-1, 1]).
        bias_coeff: each coefficient of ``p`` is uniform in ``[-c, c]``.
        seed: seed of the random draws (reproducible runs; the generator lives on the batch's device).

    Call with ``image`` ``(B, 1, P, P)`` and ``label`` ``(B, 1, P, P)`` (pixels with label < 0 are background);
    returns the augmented ``(B, 1, P, P)`` image.
    """

    def __init__(
        self,
        noise_prob: float = 0.5,
        noise_std: Sequence[float] = (0.0, 0.05),
        blur_prob: float = 0.3,
        blur_sigma: Sequence[float] = (0.3, 1.0),
        bias_prob: float = 0.3,
        bias_coeff: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.noise_prob, self.noise_std = float(noise_prob), (float(noise_std[0]), float(noise_std[1]))
        self.blur_prob, self.blur_sigma = float(blur_prob), (float(blur_sigma[0]), float(blur_sigma[1]))
        self.bias_prob, self.bias_coeff = float(bias_prob), float(bias_coeff)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    #: a resumed run whose checkpoint has no state for this object (written before mednet 0.3.6 saved it) is not
    #: refused: the augmentation then starts again from ``seed``, as every resumed run did before
    resume_optional = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The random state of each device's generator (``{device: uint8 tensor}``), saved with every epoch of a
        resumable run (``resume_objects``): a resumed run then draws the augmentation an uninterrupted run would,
        instead of starting again from ``seed``. Tensors only, so the checkpoint loads with ``weights_only=True``."""
        return {key: g.get_state() for key, g in self._generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`. A device this machine does not have (a CUDA state resumed on a CPU-only
        machine, or ``cuda:1`` on a one-GPU machine) is skipped: its generator starts again from ``seed``, as the
        draws on another device would differ anyway."""
        for key, value in state.items():
            device = torch.device(key)
            if device.type == "cuda" and not (torch.cuda.is_available()
                                              and (device.index or 0) < torch.cuda.device_count()):
                continue
            self._generator(device).set_state(torch.as_tensor(value, dtype=torch.uint8).cpu())

    def _uniform(self, n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, device=device)

    def _blur(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        radius = math.ceil(3 * self.blur_sigma[1])
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        out = x
        for dim in (2, 3):  # separable: one 1D kernel per patch and axis, as a grouped convolution
            sigma = self._uniform(b, *self.blur_sigma, g, x.device).to(x.dtype)
            kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
            kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
            shape = (b, 1, -1, 1) if dim == 2 else (b, 1, 1, -1)
            pad = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
            out = F.conv2d(F.pad(out.reshape(1, b, h, w), pad, mode="replicate"), kernel.reshape(shape), groups=b)
            out = out.reshape(b, 1, h, w)
        return out

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, P, P) batch of patches, got shape {tuple(image.shape)}")
        b, dev = image.shape[0], image.device
        g = self._generator(dev)
        tissue = (label >= 0) if label is not None else (image != 0)
        x = image.float()
        if self.blur_prob > 0:
            blurred = torch.rand(b, generator=g, device=dev) < self.blur_prob
            if dev.type == "cpu":  # blur only the chosen patches (on the CPU the convolution is the costly step)
                chosen = torch.nonzero(blurred).flatten()
                if chosen.numel():
                    x = x.index_copy(0, chosen, self._blur(x.index_select(0, chosen), g))
            else:  # on a GPU, selecting first would wait for it (nonzero); blurring every patch costs less
                x = torch.where(blurred[:, None, None, None], self._blur(x, g), x)
        if self.bias_prob > 0 and self.bias_coeff > 0:
            h, w = x.shape[2:]
            u = torch.linspace(-1, 1, h, device=dev)[:, None].expand(h, w)
            v = torch.linspace(-1, 1, w, device=dev)[None, :].expand(h, w)
            basis = torch.stack([u, v, u * v, u * u, v * v])  # (5, P, P)
            coeff = self._uniform(b * 5, -self.bias_coeff, self.bias_coeff, g, dev).reshape(b, 5)
            chosen = (torch.rand(b, generator=g, device=dev) < self.bias_prob).float()[:, None]
            x = x * torch.exp(torch.einsum("bk,khw->bhw", coeff * chosen, basis))[:, None]
        if self.noise_prob > 0 and self.noise_std[1] > 0:
            std = self._uniform(b, *self.noise_std, g, dev)[:, None, None, None]
            std = std * (torch.rand(b, generator=g, device=dev) < self.noise_prob)[:, None, None, None]
            n1 = torch.randn(x.shape, generator=g, device=dev) * std
            n2 = torch.randn(x.shape, generator=g, device=dev) * std
            rician = (torch.rand(b, generator=g, device=dev) < 0.5)[:, None, None, None]
            # Rician: the magnitude of a complex signal with Gaussian noise in both channels (MR magnitude images)
            x = torch.where(rician, torch.sqrt((x + n1) ** 2 + n2**2), x + n1)
        return (x * tissue).to(image.dtype)


class AugmentingPrepareBatch(PrepareBatch):
    """MONAI ``prepare_batch`` that applies ``augmentation(image, label)`` after moving the batch to the device.

    Pass it as ``SupervisedTrainer(prepare_batch=...)`` (training only; evaluators keep the default).
    """

    def __init__(self, augmentation: TissuePatchAugmentation) -> None:
        self.augmentation = augmentation

    def __call__(self, batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None,
                 non_blocking: bool = False, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        return self.augmentation(image, label), label
