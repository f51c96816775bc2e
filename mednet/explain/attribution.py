"""Attribution maps of a trained classifier: where in the image the evidence for a class lies.

Four methods, all returning one ``(S, S)`` map per image, float in [0, 1] (min-max per image):

==================== ============================================================================================
``gradcam``          Grad-CAM (Selvaraju et al. 2017), MONAI ``monai.visualize.GradCAM``: the target layer's
                     activations weighted by the spatial mean of the class score's gradient, ReLU, upsampled
                     bilinearly from the layer's resolution to the input (MONAI's upsampler).
``gradcampp``        Grad-CAM++ (Chattopadhyay et al. 2018), MONAI ``GradCAMpp``: pixel-wise weighted gradients.
``integrated_gradients`` Integrated Gradients (Sundararajan et al. 2017), captum: the gradient integrated along the
                     straight path from a baseline (``ig_baseline``: ``black`` image, or the image ``blur``-red —
                     :func:`blurred_baseline`) to the image, ``n_steps`` = 50 Gauss–Legendre points, evaluated
                     ``internal_batch_size`` path points at a time (bounded memory).
``gradient_shap``    GradientSHAP (Lundberg & Lee 2017), captum: expected gradients × (input − baseline) over
                     ``n_samples`` = 20 draws of a baseline from {black image, blurred image} and of Gaussian input
                     noise with ``stdevs`` = 0.1 (in normalised input units); captum's ``GradientShap`` has no
                     ``internal_batch_size``, so the draws are made ``internal_batch_size`` at a time by hand and
                     averaged.
==================== ============================================================================================

Integrated Gradients and GradientSHAP maps are the absolute attributions summed over the three colour channels,
at full input resolution; the Grad-CAM maps have the resolution of the target layer (:func:`feature_map_size`).
The target is the predicted class unless another is given.

Default target layer (:func:`default_target_layer`: the last convolutional stage, whose units see the most
context but whose map is coarse — except for the dissertation CNN, see below) and a finer one
(:func:`earlier_target_layer`), map size at 64 px:

=========================== ========================== ===================== ====================================
network                     default layer              map at 64 px          earlier layer (map at 64 px)
=========================== ========================== ===================== ====================================
receptive_field_cnn(_x2)    ``features.convblock10``   8×8 (4×4 at 32 px)    ``features.convblock8`` (16×16)
resnet* (CIFAR stem, <128)  ``layer4``                 8×8                   ``layer3`` (16×16)
resnet* (ImageNet stem)     ``layer4``                 2×2 (7×7 at 224 px)   ``layer3`` (4×4)
wrn_40_2                    ``block3``                 16×16                 ``block2`` (32×32)
shufflenet_v1               ``layer3``                 8×8                   ``layer2`` (16×16)
shufflenet_v2_x0_5          ``conv5``                  2×2                   ``stage3`` (4×4)
mobilenet_v3_small          ``features.12``            2×2                   ``features.8`` (4×4)
=========================== ========================== ===================== ====================================

For ``receptive_field_cnn`` the default is ``convblock10``, not its last 3×3 block ``convblock12``: a position of
``convblock12`` sees 152 px — the whole image at the bundle's 64 px — and its maps do not find the evidence
(``OMP_NUM_THREADS=2 python benchmarks/bench_explain.py --skip_timing``, seed 0: deletion AUC 0.54 against 0.51
for random order, failing the deletion check; ``convblock10``, 80 px: 0.28). The numbers depend on the thread
count (training ends at other weights): with 1 thread ``convblock12`` narrowly passes (0.47 against 0.50;
``convblock10`` 0.25). Over six draws of images and training (``--seed 0`` … ``5``) at both thread counts,
``convblock10`` beat random order every time, by 0.18–0.31; ``convblock12`` beat it on 4 of the 12 runs, by at most
0.09, and its deletion AUC was 0.15–0.39 above ``convblock10``'s in every run (the bundle's docs list them).

An ensemble (:class:`mednet.networks.ensemble.EnsembleClassifier`) has no single last layer: Grad-CAM needs one
network (explain a member run); Integrated Gradients and GradientSHAP need only gradients with respect to the
input and work on ensembles too.

Explaining never changes the network: it runs in eval mode with the parameters' ``requires_grad`` switched off
(only the input needs gradients), and the training flags, ``requires_grad`` flags, existing ``.grad`` tensors and
the module hooks MONAI registers are all put back afterwards.

Two MONAI details this module works around (MONAI 1.6.1, ``monai/visualize/class_activation_maps.py``): its
default post-processing ``ScaleIntensity(minv=1, maxv=0)`` *inverts* the map (replaced by a plain per-image
min-max), and its class score ``logits[:, class_idx]`` takes one class for the whole batch (with ``None``, a
batch of mixed predictions would be explained by the sum over all of their classes) — so images are grouped by
target class, and Grad-CAM++ (whose ``exp(score)`` factor broadcasts wrongly for batches > 1) runs image by image
on logits shifted by the detached target score (``exp`` of 0: no overflow for confident networks; the factor is a
positive per-image constant that the min-max removes anyway).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mednet.errors import OptionError

__all__ = [
    "EXPLAIN_METHODS", "CAM_METHODS", "METHOD_TITLES", "IG_BASELINES", "attribution_maps", "attribution_maps_timed",
    "grad_cam_map", "default_target_layer", "earlier_target_layer", "check_methods", "check_layer",
    "feature_map_size", "check_cam_layer", "map_resolution", "blurred_baseline", "blur_sigma", "black_baseline",
    "explaining",
]

#: the ``--methods`` of explain.json, in display order
EXPLAIN_METHODS = ("gradcam", "gradcampp", "integrated_gradients", "gradient_shap")
#: methods that need a target layer (one network)
CAM_METHODS = ("gradcam", "gradcampp")
#: names used in figures
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "integrated_gradients": "Integrated Gradients",
                 "gradient_shap": "GradientSHAP"}
#: ``--ig_baseline`` choices
IG_BASELINES = ("black", "blur")
#: the blurred baseline's Gaussian sigma, as a fraction of the image side (8 px at 64 px, 4 px at 32 px)
BLUR_SIGMA_FRACTION = 1 / 8


# ---------------------------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------------------------
def check_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """``methods`` as a tuple without repeats (a single name is accepted as a one-item list).

    Raises:
        OptionError: ``--methods`` empty or naming an unknown method.
    """
    names = [methods] if isinstance(methods, str) else list(methods or [])
    unknown = [m for m in names if m not in EXPLAIN_METHODS]
    if not names or unknown:
        what = f"unknown method(s) {', '.join(map(repr, unknown))}" if unknown else "no method given"
        raise OptionError({"--methods": f"{what}; choose from {', '.join(EXPLAIN_METHODS)}"})
    return tuple(dict.fromkeys(names))


def _unwrap(network: nn.Module) -> nn.Module:
    """The model inside ``DataParallel`` / ``DistributedDataParallel``."""
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return network.module
    return network


def _is_ensemble(network: nn.Module) -> bool:
    from mednet.networks.ensemble import EnsembleClassifier

    return isinstance(_unwrap(network), EnsembleClassifier)


def _ensemble_error() -> OptionError:
    return OptionError({"--layer": "Grad-CAM needs one network with a last convolutional layer, and an ensemble "
                                   "combines several: explain a member run instead (--ckpt_path of one member), or "
                                   "use --methods \"['integrated_gradients','gradient_shap']\", which need only "
                                   "gradients with respect to the input and work on ensembles"})


def _candidate_stages(net: nn.Module) -> list[str]:
    """Names of the stage-like modules of ``net``, input to output (the default layer is the last one)."""
    import torchvision.models as tvm

    from mednet.networks.classifiers import ReceptiveFieldCNN, ShuffleNetV1, WideResNet

    if isinstance(net, ReceptiveFieldCNN):
        return [f"features.{n}" for n, m in net.features.named_children()  # 3x3 blocks: the 1x1 ones only
                if isinstance(m, nn.Sequential) and m[0].kernel_size != (1, 1)]  # mix channels (and make classes)
    if isinstance(net, tvm.ResNet):
        return ["layer1", "layer2", "layer3", "layer4"]
    if isinstance(net, WideResNet):
        return ["block1", "block2", "block3"]
    if isinstance(net, ShuffleNetV1):
        return ["layer1", "layer2", "layer3"]
    if isinstance(net, tvm.ShuffleNetV2):
        return ["stage2", "stage3", "stage4", "conv5"]
    if isinstance(net, tvm.MobileNetV3):
        return [f"features.{i}" for i in range(len(net.features))]
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    return convs


def default_target_layer(network: nn.Module) -> str:
    """The Grad-CAM target layer of ``network``: its last convolutional stage (see the module docstring's table).

    Any other network: its last ``nn.Conv2d``.

    Raises:
        OptionError: ``--layer``: an ensemble (Grad-CAM needs one network), or a network without convolutions.
    """
    if _is_ensemble(network):
        raise _ensemble_error()
    from mednet.networks.classifiers import ReceptiveFieldCNN

    if isinstance(_unwrap(network), ReceptiveFieldCNN):
        return "features.convblock10"  # convblock12 sees the whole 64 px image (module docstring)
    stages = _candidate_stages(_unwrap(network))
    if not stages:
        raise OptionError({"--layer": f"{type(network).__name__} has no convolutional layer for Grad-CAM"})
    return stages[-1]


def earlier_target_layer(network: nn.Module, image_size: int = 64) -> str:
    """A finer Grad-CAM layer: the last stage whose map at ``image_size`` is larger than the default layer's
    (e.g. ``layer3`` of a ResNet, 16×16 instead of 8×8 at 64 px with the CIFAR stem); the default layer if none."""
    default = default_target_layer(network)
    net = _unwrap(network)
    stages = _candidate_stages(net)
    sizes = _stage_sizes(net, stages, image_size)
    finest = sizes.get(default)
    earlier = [s for s in stages[: stages.index(default)] if finest and sizes.get(s) and sizes[s][0] > finest[0]]
    return earlier[-1] if earlier else default


#: ``--layer`` values meaning "the default layer": python-fire reads only ``None`` as no value, so the documented
#: ``--layer null`` (and ``none``) arrives as text, as ``--target_class null`` does
_DEFAULT_LAYER = ("", "null", "none")


def check_layer(network: nn.Module, layer: str | None) -> str:
    """``layer`` (or the default for ``None``, ``"null"``, ``"none"``, ``"None"``) after checking that ``network``
    has a module of that name.

    Raises:
        OptionError: ``--layer`` names no module of the network (the message lists the default and a finer layer),
            or the network is an ensemble.
    """
    if _is_ensemble(network):
        raise _ensemble_error()
    if layer is None or (isinstance(layer, str) and layer.strip().lower() in _DEFAULT_LAYER):
        return default_target_layer(network)
    names = {n for n, _ in _unwrap(network).named_modules()}
    if layer not in names:
        stages = _candidate_stages(_unwrap(network))
        raise OptionError({"--layer": f"{type(_unwrap(network)).__name__} has no module {layer!r}; its stages are "
                                      f"{', '.join(stages[-6:])} (default {default_target_layer(network)})"})
    return str(layer)


def _device(network: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    for p in network.parameters():
        return p.device
    return torch.device(fallback)


def _stage_sizes(net: nn.Module, names: Sequence[str], image_size: int,
                 calls: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """Spatial size of each named module's output for one ``image_size`` input (4-D outputs only); ``calls``, if
    given, receives how many times each module ran in that forward pass."""
    modules = dict(net.named_modules())
    sizes: dict[str, tuple[int, int]] = {}
    handles = []
    for name in names:
        def hook(_m, _i, out, name=name):
            if calls is not None:
                calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                sizes[name] = (int(out.shape[-2]), int(out.shape[-1]))
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with explaining(net, input_grad=False), torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size, device=_device(net)))
    finally:
        for h in handles:
            h.remove()
    return sizes


def feature_map_size(network: nn.Module, layer: str | None, image_size: int) -> tuple[int, int]:
    """``(h, w)`` of the target layer's output for an ``image_size`` input — the Grad-CAM map's true resolution.

    Raises:
        OptionError: ``--layer``: unknown, not a ``(B, C, h, w)`` feature map, or a module that runs more than once
            in a forward pass (torchvision's ResNet blocks call one ``relu`` two or three times): MONAI's Grad-CAM
            keeps the last call's activations but the first call's gradients, and the map silently mixes them.
    """
    layer = check_layer(network, layer)
    calls: dict[str, int] = {}
    sizes = _stage_sizes(_unwrap(network), [layer], image_size, calls)
    if calls.get(layer, 0) > 1:
        parent = layer.rsplit(".", 1)[0] if "." in layer else default_target_layer(network)
        raise OptionError({"--layer": f"{layer!r} runs {calls[layer]} times in one forward pass (a module reused "
                                      "inside a block); Grad-CAM would mix one call's activations with another's "
                                      f"gradients — choose the block that holds it, such as {parent!r}"})
    if layer not in sizes:
        raise OptionError({"--layer": f"the output of {layer!r} is not a (B, C, h, w) feature map; choose a "
                                      f"convolutional stage such as {default_target_layer(network)}"})
    return sizes[layer]


def check_cam_layer(network: nn.Module, layer: str | None, image_size: int) -> tuple[int, int]:
    """:func:`feature_map_size`, then Grad-CAM at ``layer`` once (forward and backward) on a blank ``image_size``
    image: a layer that passes the forward check can still fail only in the backward pass, at the first batch.

    MONAI's backward hook wraps the layer's output in a ``BackwardHookFunction`` view, and a next operation that
    changes that output in place (torchvision's ResNet adds the shortcut with ``out += identity`` right after
    ``bn2``, so ``layer4.1.bn2`` fails) is refused by autograd — after the run folder exists. The trial costs one
    forward and backward pass of one image.

    Returns:
        the map's ``(h, w)``, as :func:`feature_map_size`.

    Raises:
        OptionError: ``--layer``: as :func:`feature_map_size`, or a layer whose output is modified in place.
    """
    size = feature_map_size(network, layer, image_size)
    layer = check_layer(network, layer)
    blank = torch.zeros(1, 3, int(image_size), int(image_size), device=_device(network))
    with explaining(network):
        _cam_maps(network, blank, torch.zeros(1, dtype=torch.long), layer, plus=False)
    return size


def _inplace_error(layer: str) -> OptionError:
    """The user's error for a Grad-CAM layer whose output the next operation modifies in place."""
    parent = layer.rsplit(".", 1)[0] if "." in layer else None
    hint = f"choose the block that holds it, e.g. {parent!r}" if parent else "choose another layer"
    return OptionError({"--layer": f"Grad-CAM cannot hook {layer!r}: its output is modified in place by the next "
                                   f"operation (e.g. a residual 'out += identity'); {hint}"})


def map_resolution(network: nn.Module, method: str, image_size: int, layer: str | None = None) -> tuple[int, int]:
    """Resolution of ``method``'s map before upsampling: the target layer's for Grad-CAM(++), the input's
    otherwise."""
    if method in CAM_METHODS:
        return feature_map_size(network, layer, image_size)
    return (int(image_size), int(image_size))


# ---------------------------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------------------------
def blur_sigma(image_size: int) -> float:
    """Gaussian sigma of :func:`blurred_baseline`: ``image_size / 8`` px (8 px at 64 px)."""
    return max(float(image_size) * BLUR_SIGMA_FRACTION, 0.5)


def blurred_baseline(images: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """``images`` ``(B, C, S, S)`` (or ``(C, S, S)``) blurred by a Gaussian of ``sigma`` px (default
    :func:`blur_sigma`: S/8) — torchvision ``gaussian_blur``, kernel ``2·ceil(3σ)+1``, reflected borders.

    Blurring removes the fine structure (lesion borders, dots, streaks) but keeps the colour layout, so an
    attribution against it asks "which detail mattered" rather than "which colour" (Sturmfels et al., "Visualizing
    the impact of feature attribution baselines", Distill 2020). Blurring commutes with the per-channel
    normalisation, so normalised inputs can be blurred directly.
    """
    from torchvision.transforms.functional import gaussian_blur

    size = int(images.shape[-1])
    sigma = blur_sigma(size) if sigma is None else float(sigma)
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * size - 1)  # reflect padding needs kernel // 2 < size
    return gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def black_baseline(images: torch.Tensor, normalization: Mapping[str, Sequence[float]] | None = None) -> torch.Tensor:
    """A black image in the network's input space: ``(0 − mean) / std`` per channel; zeros (the training mean
    colour) without ``normalization``."""
    if normalization is None:
        return torch.zeros_like(images)
    mean = torch.as_tensor(normalization["mean"], dtype=images.dtype, device=images.device)
    std = torch.as_tensor(normalization["std"], dtype=images.dtype, device=images.device)
    shape = (1,) * (images.ndim - 3) + (-1, 1, 1)
    return ((0.0 - mean) / std).reshape(shape).expand_as(images).clone()


# ---------------------------------------------------------------------------------------------------------------
# leaving the network as it was
# ---------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def explaining(network: nn.Module, input_grad: bool = True) -> Iterator[nn.Module]:
    """Eval mode, parameters without ``requires_grad`` (gradients flow to the input only) and, on exit, every
    module's training flag, every parameter's ``requires_grad`` and ``.grad`` put back."""
    modes = [(m, m.training) for m in network.modules()]
    params = [(p, p.requires_grad, p.grad) for p in network.parameters()]
    network.eval()
    for p, _, _ in params:
        p.requires_grad_(False)
    try:
        with torch.inference_mode(False), (torch.enable_grad() if input_grad else contextlib.nullcontext()):
            yield network
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad


@contextlib.contextmanager
def _hooks_removed_after(module: nn.Module) -> Iterator[None]:
    """Remove the forward/backward hooks registered on ``module`` inside the block (MONAI's CAM classes register
    hooks and never remove them) and restore an ``inplace`` flag MONAI switches off."""
    forward, backward = set(module._forward_hooks), set(module._backward_hooks)
    full = module._is_full_backward_hook
    inplace = module.__dict__.get("inplace", None)
    try:
        yield
    finally:
        for key in set(module._forward_hooks) - forward:
            del module._forward_hooks[key]
            module._forward_hooks_with_kwargs.pop(key, None)
            module._forward_hooks_always_called.pop(key, None)
        for key in set(module._backward_hooks) - backward:
            del module._backward_hooks[key]
        module._is_full_backward_hook = full
        if inplace is not None:
            module.__dict__["inplace"] = inplace


class _TargetShifted(nn.Module):
    """``logits − logits[:, target].detach()``: the same gradients, a class score of exactly 0 (Grad-CAM++'s
    ``exp(score)`` cannot overflow)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.target = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return logits - logits[:, self.target : self.target + 1].detach()


# ---------------------------------------------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------------------------------------------
def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max of ``(B, ...)`` to [0, 1]; a constant map becomes 0 (it ranks nothing)."""
    flat = maps.detach().float().reshape(maps.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.clamp_(0.0, 1.0).reshape(maps.shape)


def _cam_maps(network: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str, plus: bool) -> torch.Tensor:
    from monai.visualize import GradCAM, GradCAMpp

    net = _unwrap(network)
    wrapper = _TargetShifted(net).eval()  # eval: MONAI puts a wrapper that was training back into train mode
    module = dict(net.named_modules())[layer]
    out = torch.empty(images.shape[0], *images.shape[-2:])
    with _hooks_removed_after(module):
        cam = (GradCAMpp if plus else GradCAM)(nn_module=wrapper, target_layers=f"net.{layer}", postprocessing=_minmax)
        # MONAI scores one class per call: group the images by target (Grad-CAM++: one image per call)
        groups = ([[i] for i in range(len(targets))] if plus else
                  [torch.nonzero(targets == c).flatten().tolist() for c in torch.unique(targets)])
        for idx in groups:
            c = int(targets[idx[0]])
            wrapper.target = c
            x = images[idx].detach().clone().requires_grad_(True)
            try:
                maps = cam(x, class_idx=c)
            except RuntimeError as e:  # autograd refuses an in-place change of the hooked output (check_cam_layer)
                if "BackwardHookFunction" in str(e) and "inplace" in str(e):
                    raise _inplace_error(layer) from e
                raise
            out[idx] = torch.as_tensor(maps).as_subclass(torch.Tensor)[:, 0].detach().float().cpu()
    return out


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and NumPy inside the block, leaving the global random states as they were.

    Every CUDA device is forked, not only ``device``: ``torch.manual_seed`` reseeds all of them, also when the
    network runs on the CPU — when CUDA is in use (initialised): forking would otherwise wake every GPU."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _to_map(attributions: torch.Tensor) -> torch.Tensor:
    """``(B, C, S, S)`` attributions → ``(B, S, S)``: |a| summed over channels, min-max per image."""
    return _minmax(attributions.detach().abs().sum(1)).cpu()


def _ig_maps(network: nn.Module, images: torch.Tensor, targets: torch.Tensor, baseline: torch.Tensor,
             n_steps: int, internal_batch_size: int) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(network)
    maps = []
    for i in range(images.shape[0]):  # one image per call: captum then batches ≤ internal_batch_size path points
        attr = ig.attribute(images[i : i + 1], baselines=baseline[i : i + 1], target=int(targets[i]),
                            n_steps=n_steps, internal_batch_size=internal_batch_size)
        maps.append(_to_map(attr))
    return torch.cat(maps)


def _shap_maps(network: nn.Module, images: torch.Tensor, targets: torch.Tensor, black: torch.Tensor,
               blurred: torch.Tensor, n_samples: int, stdevs: float, internal_batch_size: int,
               seed: int) -> torch.Tensor:
    from captum.attr import GradientShap

    shap = GradientShap(network)
    maps = []
    for i in range(images.shape[0]):
        baselines = torch.cat([black[i : i + 1], blurred[i : i + 1]])  # the distribution baselines are drawn from
        total = torch.zeros_like(images[i : i + 1])
        with _seeded(seed + i, images.device):
            done = 0
            while done < n_samples:  # GradientShap has no internal_batch_size: draw in chunks, average
                k = min(internal_batch_size, n_samples - done)
                attr = shap.attribute(images[i : i + 1], baselines=baselines, n_samples=k, stdevs=stdevs,
                                      target=int(targets[i]))
                total += attr.detach() * k
                done += k
        maps.append(_to_map(total / n_samples))
    return torch.cat(maps)


def _as_targets(network: nn.Module, images: torch.Tensor, targets: object) -> torch.Tensor:
    n = images.shape[0]
    if targets is None:
        with torch.no_grad():
            return network(images).argmax(1).long().cpu()
    t = torch.as_tensor(targets).long().reshape(-1).cpu()
    if t.numel() == 1 and n > 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{t.numel()} targets for {n} images")
    return t


def _check_counts(n_steps: int, n_samples: int, stdevs: float, internal_batch_size: int) -> None:
    problems = {}
    for name, value in (("--n_steps", n_steps), ("--n_samples", n_samples),
                        ("--internal_batch_size", internal_batch_size)):
        if int(value) < 1:
            problems[name] = f"must be ≥ 1, got {value}"
    if not float(stdevs) >= 0:
        problems["--stdevs"] = f"must be ≥ 0, got {stdevs}"
    if problems:
        raise OptionError(problems)


def attribution_maps_timed(network: nn.Module, images: torch.Tensor, methods: str | Sequence[str] = EXPLAIN_METHODS,
                           targets: torch.Tensor | Sequence[int] | int | None = None, layer: str | None = None,
                           ig_baseline: str = "black", n_steps: int = 50, n_samples: int = 20, stdevs: float = 0.1,
                           internal_batch_size: int = 16, seed: int = 0,
                           normalization: Mapping[str, Sequence[float]] | None = None,
                           ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """:func:`attribution_maps` and the wall-clock seconds per image each method took."""
    methods = check_methods(methods)
    if ig_baseline not in IG_BASELINES:
        raise OptionError({"--ig_baseline": f"must be one of {', '.join(IG_BASELINES)}, got {ig_baseline!r}"})
    _check_counts(n_steps, n_samples, stdevs, internal_batch_size)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, S, S), got {tuple(images.shape)}")
    cam_layer = check_layer(network, layer) if any(m in CAM_METHODS for m in methods) else None
    device = _device(network, images.device)
    n = images.shape[0]
    maps: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    with explaining(network):
        # cloned inside: a caller's inference-mode tensor cannot take part in autograd
        images = torch.as_tensor(images).as_subclass(torch.Tensor).detach().float().to(device).clone()
        targets_t = _as_targets(network, images, targets)
        black = black_baseline(images, normalization)
        blurred = blurred_baseline(images) if ("gradient_shap" in methods or ig_baseline == "blur") else None
        for method in methods:
            start = time.perf_counter()
            if method in CAM_METHODS:
                maps[method] = _cam_maps(network, images, targets_t, cam_layer, plus=method == "gradcampp")
            elif method == "integrated_gradients":
                maps[method] = _ig_maps(network, images, targets_t, blurred if ig_baseline == "blur" else black,
                                        int(n_steps), int(internal_batch_size))
            else:
                maps[method] = _shap_maps(network, images, targets_t, black, blurred, int(n_samples), float(stdevs),
                                          int(internal_batch_size), int(seed))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[method] = (time.perf_counter() - start) / max(n, 1)
    return maps, seconds


def attribution_maps(network: nn.Module, images: torch.Tensor, methods: str | Sequence[str] = EXPLAIN_METHODS,
                     targets: torch.Tensor | Sequence[int] | int | None = None, layer: str | None = None,
                     ig_baseline: str = "black", n_steps: int = 50, n_samples: int = 20, stdevs: float = 0.1,
                     internal_batch_size: int = 16, seed: int = 0,
                     normalization: Mapping[str, Sequence[float]] | None = None) -> dict[str, torch.Tensor]:
    """Attribution maps of ``network`` for ``images``: ``{method: (B, S, S) float32 CPU tensor in [0, 1]}``.

    Args:
        network: ``(B, 3, S, S) → (B, K)`` logits (an ensemble's log-probabilities work too, except for Grad-CAM).
        images: ``(B, 3, S, S)`` (or one ``(3, S, S)``) normalised network inputs.
        methods: any of :data:`EXPLAIN_METHODS`.
        targets: ``(B,)`` class indices (or one index for all); ``None`` = each image's predicted class.
        layer: Grad-CAM target layer (a ``named_modules()`` name); ``None`` = :func:`default_target_layer`.
        ig_baseline: ``black`` or ``blur`` (:func:`blurred_baseline`) for Integrated Gradients.
        n_steps: Integrated Gradients path points (Gauss–Legendre).
        n_samples: GradientSHAP draws (baseline from {black, blurred}, Gaussian noise of ``stdevs``).
        stdevs: GradientSHAP input noise, in normalised input units.
        internal_batch_size: at most this many path points / draws per forward pass (bounds memory).
        seed: GradientSHAP's draws (image ``i`` uses ``seed + i``); global random states are left untouched.
        normalization: the run's ``{"mean", "std"}``, to place the black baseline at pixel value 0 (without it,
            "black" is the zero input, i.e. the training mean colour).

    The network's weights, gradients, hooks and training flags are left as they were (:func:`explaining`).

    Raises:
        OptionError: unknown method, baseline or layer; Grad-CAM on an ensemble; counts below 1.
    """
    return attribution_maps_timed(network, images, methods, targets, layer, ig_baseline, n_steps, n_samples, stdevs,
                                  internal_batch_size, seed, normalization)[0]


def grad_cam_map(network: nn.Module, image: torch.Tensor, target: int | None = None,
                 layer: str | None = None) -> np.ndarray:
    """Grad-CAM of one normalised image ``(3, S, S)`` or ``(1, 3, S, S)`` → ``(S, S)`` float32 in [0, 1]
    (``target`` None = the predicted class; ``layer`` None = :func:`default_target_layer`)."""
    image = torch.as_tensor(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"one image (3, S, S) or (1, 3, S, S) expected, got {tuple(image.shape)}")
    maps = attribution_maps(network, image, ("gradcam",), None if target is None else [int(target)], layer)
    return maps["gradcam"][0].numpy().astype(np.float32)
