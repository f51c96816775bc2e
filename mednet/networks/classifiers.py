"""Image classification networks for dermoscopy: ``(B, 3, H, W)`` float images → ``(B, num_classes)`` logits.

Selected by name (``--model``) through :func:`build_classifier`; all are built from scratch
(``weights=None``: nothing is ever downloaded), optionally loading a local state dict.

=================== ================================================ ============ =========================
name                what                                             total stride parameters at 7 classes
=================== ================================================ ============ =========================
receptive_field_cnn the explainability dissertation's CNN (002)      32           51,221
resnet18            torchvision; CIFAR stem (3x3 conv, no max-pool)  8 / 32       11,172,423 / 11,180,103
                    below 128 px / ImageNet stem
resnet34            torchvision, same stems                          8 / 32       21,280,583 / 21,288,263
resnet50            torchvision, same stems (grading slides, 003)    8 / 32       23,514,695 / 23,522,375
wide_resnet50_2     torchvision, same stems (grading slides, 003)    8 / 32       66,840,903 / 66,848,583
wrn_40_2            CIFAR WRN-40-2, the calibration study's teacher  4            2,243,159
shufflenet_v1       ShuffleNet V1 g=3, CIFAR-style, its student      8            859,885
shufflenet_v2_x0_5  torchvision                                      32           348,967
mobilenet_v3_small  torchvision                                      32           1,525,031
=================== ================================================ ============ =========================

:class:`NormedLinear` is the cosine-normalised head of LDAM (Cao et al. 2019); ``cosine_head=True`` swaps a
model's last ``nn.Linear`` for it. :func:`receptive_field` computes the theoretical receptive field of a chain
of convolutions and poolings (168 px for :class:`ReceptiveFieldCNN`).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from mednet.errors import OptionError
from mednet.networks.fcn import count_parameters  # one helper for all networks, re-exported here

__all__ = [
    "LDAM_SCALE",
    "CLASSIFIER_NAMES",
    "RESNET_NAMES",
    "NormedLinear",
    "ReceptiveFieldCNN",
    "ShuffleNetV1",
    "ShuffleNetV1Unit",
    "WideBasicBlock",
    "WideResNet",
    "build_classifier",
    "check_image_size",
    "count_parameters",
    "min_image_size",
    "receptive_field",
    "resolve_cifar_stem",
    "total_stride",
    "use_cosine_head",
]

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "wide_resnet50_2")
CLASSIFIER_NAMES = (
    "receptive_field_cnn",
    "receptive_field_cnn_x2",
    *RESNET_NAMES,
    "wrn_40_2",
    "shufflenet_v1",
    "shufflenet_v2_x0_5",
    "mobilenet_v3_small",
)

# Below this input size ResNets get the CIFAR stem when ``cifar_stem`` is automatic (None): the ImageNet stem
# (7x7 conv stride 2 + max-pool) makes the total stride 32, so 64 px images end as a 2x2 map (4x4 at 128 px);
# the CIFAR stem keeps the total stride at 8 (8x8 at 64 px), as in the seeds' ResNet-18.
CIFAR_STEM_BELOW = 128

# Total stride (product of all strides) of each network; the smallest input that still gives a last feature map
# of at least 1x1 without relying on zero padding. A table, not a walk over a built network: building
# wide_resnet50_2 (67 M parameters) only to read its strides would be wasteful.
_TOTAL_STRIDE = {
    "receptive_field_cnn": 32,  # five 2x2 max-pools without padding: smaller inputs fail
    "receptive_field_cnn_x2": 32,
    "wrn_40_2": 4,
    "shufflenet_v1": 8,
    "shufflenet_v2_x0_5": 32,
    "mobilenet_v3_small": 32,
}
_RESNET_STRIDE = {True: 8, False: 32}  # cifar_stem → total stride


# ---------------------------------------------------------------------------------------------------------------
# receptive field
# ---------------------------------------------------------------------------------------------------------------
def _square(value: int | Sequence[int], what: str) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"receptive_field needs square {what}s, got {tuple(value)}")
    return int(value[0])


def _walk(layers: nn.Module | Iterable[nn.Module]) -> tuple[int, int]:
    """``(receptive field, total stride)`` of the Conv2d / MaxPool2d / AvgPool2d layers, in order."""
    modules = layers.modules() if isinstance(layers, nn.Module) else layers
    field, jump = 1, 1
    for m in modules:
        if isinstance(m, nn.Conv2d):
            kernel, stride, dilation = m.kernel_size, m.stride, m.dilation
        elif isinstance(m, nn.MaxPool2d):
            kernel, stride, dilation = m.kernel_size, m.stride, m.dilation
        elif isinstance(m, nn.AvgPool2d):
            kernel, stride, dilation = m.kernel_size, (m.stride or m.kernel_size), 1
        else:
            continue  # activations, norms, dropout; adaptive (global) pooling sees the whole map anyway
        k, s, d = _square(kernel, "kernel"), _square(stride, "stride"), _square(dilation, "dilation")
        field += (k - 1) * d * jump
        jump *= s
    return field, jump


def receptive_field(layers: nn.Module | Iterable[nn.Module]) -> int:
    """Theoretical receptive field, in input pixels, of one position of the network's last feature map.

    Walks the ``Conv2d`` / ``MaxPool2d`` / ``AvgPool2d`` layers in order (``network.modules()`` order for a
    module, or the given sequence) with the usual recurrence (Araujo et al., "Computing receptive fields of
    convolutional neural networks", Distill 2019)::

        r_0 = 1, j_0 = 1;   r_l = r_{l-1} + (k_l - 1) * d_l * j_{l-1};   j_l = j_{l-1} * s_l

    (k kernel, s stride, d dilation, j the distance in input pixels between neighbouring outputs). Padding
    does not change it. Adaptive (global) pooling is skipped: a global average sees the whole map, and what
    the dissertation's design rule asks is that each position before it already sees the whole image.
    Valid for chain networks (each layer feeds the next); for branching networks (ResNet shortcuts) the
    registration order is not a path and the result is meaningless. Hand-written: neither MONAI nor torchvision
    computes receptive fields.

    Example: two 3x3 convolutions → 5; 3x3 conv, 2x2 max-pool, 3x3 conv → 8;
    :class:`ReceptiveFieldCNN` → 168 (the dissertation's comment "232" adds the final 1x1 convolution as if
    it were 3x3).
    """
    return _walk(layers)[0]


def total_stride(layers: nn.Module | Iterable[nn.Module]) -> int:
    """Product of the strides of the ``Conv2d`` / ``MaxPool2d`` / ``AvgPool2d`` layers of a chain network
    (input pixels between neighbouring positions of the last feature map); see :func:`receptive_field`."""
    return _walk(layers)[1]


# ---------------------------------------------------------------------------------------------------------------
# the dissertation's CNN
# ---------------------------------------------------------------------------------------------------------------
class ReceptiveFieldCNN(nn.Module):
    """The explainability dissertation's custom CNN (002, Table 2 and Appendix B.1), exactly.

    Every block is Conv2d (padding "same") → ReLU → BatchNorm2d → Dropout(0.01), in that order (BN after the
    ReLU, so the convolutions keep their bias: it is not cancelled by the batch norm). Channels, with ``|``
    for a 2x2 max-pool::

        3→8→16, 1x1 16→8 | 8→16→16→32, 1x1 32→8 | 8→8→16→32, 1x1 32→8 | 8→16→32 | 32→32→64 | 1x1 64→C

    then global average pooling; no dense head. ``(B, in_channels, H, W) → (B, num_classes)`` with H, W ≥ 32
    (five unpadded max-pools). 51,221 parameters for 7 classes with ``batch_norm=True`` — the dissertation's
    count: conv weights + biases and the BN scales and shifts, the literal reading of its layer table.
    Receptive field 168 px (:func:`receptive_field`), so at 224 px a position of the last map does not see
    the whole image; at 64 px it does.

    Args:
        num_classes: output logits.
        in_channels: image channels.
        batch_norm: ``False`` drops the BN layers (the dissertation's "base model").
        dropout: dropout rate of every block.
        width: channel multiplier of every block but the last (``receptive_field_cnn_x2``: 2, ≈ 4× the
            parameters and FLOPs, same receptive field) — a wider teacher for the dissertation network as a
            student in the calibration study's CPU preset.
    """

    # (name, in, out, kernel) per block; "pool" for a 2x2 max-pool. Names follow the dissertation's code
    # (convblock21 etc.) so Grad-CAM layer names read like its figures.
    _LAYOUT: tuple[tuple[str, int, int, int] | str, ...] = (
        ("convblock1", 0, 8, 3), ("convblock2", 8, 16, 3), ("convblock21", 16, 8, 1), "pool1",
        ("convblock3", 8, 16, 3), ("convblock4", 16, 16, 3), ("convblock5", 16, 32, 3), ("convblock51", 32, 8, 1),
        "pool2",
        ("convblock6", 8, 8, 3), ("convblock7", 8, 16, 3), ("convblock8", 16, 32, 3), ("convblock81", 32, 8, 1),
        "pool3",
        ("convblock9", 8, 16, 3), ("convblock10", 16, 32, 3), "pool4",
        ("convblock11", 32, 32, 3), ("convblock12", 32, 64, 3), "pool5",
        ("convblock13", 64, -1, 1),
    )

    def __init__(self, num_classes: int = 7, in_channels: int = 3, batch_norm: bool = True,
                 dropout: float = 0.01, width: int = 1) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for entry in self._LAYOUT:
            if isinstance(entry, str):
                layers[entry] = nn.MaxPool2d(2, 2)
                continue
            name, cin, cout, kernel = entry
            cin = in_channels if cin == 0 else cin * width
            cout = num_classes if cout == -1 else cout * width
            block: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding="same"), nn.ReLU(inplace=True)]
            if batch_norm:
                block.append(nn.BatchNorm2d(cout))
            block.append(nn.Dropout(dropout))
            layers[name] = nn.Sequential(*block)
        self.features = nn.Sequential(layers)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head: nn.Module = nn.Identity()  # the classes come from convblock13; see use_cosine_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, num_classes)`` logits."""
        return self.head(torch.flatten(self.gap(self.features(x)), 1))


# ---------------------------------------------------------------------------------------------------------------
# WRN-40-2
# ---------------------------------------------------------------------------------------------------------------
class WideBasicBlock(nn.Module):
    """Pre-activation basic block of a wide ResNet: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 + shortcut.

    ``(B, in, H, W) → (B, out, H/stride, W/stride)``. When the width or stride changes, the shortcut is a
    1x1 convolution applied to the pre-activated input (as in Zagoruyko & Komodakis' code and RepDistiller).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.identity_shortcut = in_channels == out_channels and stride == 1
        self.shortcut = (nn.Identity() if self.identity_shortcut
                         else nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        return out + (x if self.identity_shortcut else self.shortcut(pre))


class WideResNet(nn.Module):
    """CIFAR-style wide ResNet WRN-depth-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

    3x3 stem conv (16 channels, stride 1), three groups of ``(depth - 4) / 6`` :class:`WideBasicBlock` of
    widths 16k, 32k, 64k (strides 1, 2, 2), BN-ReLU, global average pooling, ``fc``.
    ``(B, 3, H, W) → (B, num_classes)``, total stride 4. The default WRN-40-2 is the calibration study's
    teacher (RepDistiller ``wrn_40_2``): 2,255,156 parameters at 100 classes, 2,243,159 at 7. Hand-written:
    torchvision's ``wide_resnet50_2`` is the ImageNet bottleneck design and MONAI has no WRN. Pooling is
    adaptive (RepDistiller's fixed 8x8 average equals it at 32 px) so any input ≥ 4 px works.

    Args:
        depth: 6n + 4.
        widen_factor: k.
        num_classes: output logits.
        dropout: dropout between the two convolutions of each block.
    """

    def __init__(self, depth: int = 40, widen_factor: int = 2, num_classes: int = 100, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, 40, …), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [WideBasicBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1,
                                     dropout) for i in range(n)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, num_classes)`` logits."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(self.relu(self.bn1(out))), 1))


# ---------------------------------------------------------------------------------------------------------------
# ShuffleNet V1
# ---------------------------------------------------------------------------------------------------------------
class ShuffleNetV1Unit(nn.Module):
    """ShuffleNet V1 unit (Zhang et al., CVPR 2018, Fig. 2b/c): grouped 1x1 conv-BN-ReLU, channel shuffle,
    depthwise 3x3 conv (stride s)-BN, grouped 1x1 conv-BN, then add the input (s = 1) or concatenate its 3x3
    stride-2 average (s = 2), and ReLU.

    ``(B, in, H, W) → (B, in + branch, H/2, W/2)`` for stride 2, ``(B, branch, H, W)`` (branch == in) for
    stride 1. The bottleneck is ``branch / 4`` channels as in RepDistiller; the first 1x1 of the network's
    first unit is not grouped (too few input channels; the paper's rule). The shuffle is torch's
    ``nn.ChannelShuffle``.
    """

    def __init__(self, in_channels: int, branch_channels: int, stride: int, groups: int,
                 group_first_conv: bool = True) -> None:
        super().__init__()
        mid = branch_channels // 4
        first_groups = groups if group_first_conv else 1
        if branch_channels % 4 or mid % groups or branch_channels % groups or in_channels % first_groups:
            raise ValueError(f"ShuffleNetV1 unit {in_channels}→{branch_channels} channels does not split into "
                             f"{groups} groups")
        self.concat = stride != 1
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = nn.ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_channels)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if self.concat else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.concat else out + res)


class ShuffleNetV1(nn.Module):
    """CIFAR-style ShuffleNet V1 (Zhang et al., "ShuffleNet", CVPR 2018), the calibration study's student.

    As RepDistiller's ``ShuffleV1`` (what the study trained): a 24-channel stem conv with stride 1 and no
    max-pool, three stages of [4, 8, 4] :class:`ShuffleNetV1Unit` (the first of each with stride 2), global
    average pooling, ``linear``. ``(B, 3, H, W) → (B, num_classes)``, total stride 8. Stage widths are the
    paper's for ``groups`` 1/2/3 (144/288/576, 200/400/800, 240/480/960) times ``width_mult``, rounded to a
    multiple of 4·groups. Hand-written: torchvision only has ShuffleNet V2.

    RepDistiller's stem is a 1x1 convolution (``stem_kernel_size=1``, the default, so parameter counts and
    results compare with the study); 3 gives a 3x3 stem (padding 1), which sees spatial context from the first
    layer. 949,258 parameters at 100 classes (RepDistiller's count; 859,885 at 7) with the defaults.

    Args:
        groups: groups of the 1x1 convolutions (1, 2 or 3).
        num_classes: output logits.
        width_mult: channel multiplier of the three stages.
        stem_kernel_size: 1 (RepDistiller) or 3.
    """

    STAGE_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960)}
    STAGE_UNITS = (4, 8, 4)
    STEM_CHANNELS = 24

    def __init__(self, groups: int = 3, num_classes: int = 100, width_mult: float = 1.0,
                 stem_kernel_size: int = 1) -> None:
        super().__init__()
        if groups not in self.STAGE_WIDTHS:
            raise ValueError(f"ShuffleNetV1 groups must be one of {sorted(self.STAGE_WIDTHS)}, got {groups}")
        if stem_kernel_size not in (1, 3):
            raise ValueError(f"ShuffleNetV1 stem_kernel_size must be 1 or 3, got {stem_kernel_size}")
        step = 4 * groups
        widths = [max(step, round(w * width_mult / step) * step) for w in self.STAGE_WIDTHS[groups]]
        if widths[0] <= self.STEM_CHANNELS:
            raise ValueError(f"ShuffleNetV1 width_mult {width_mult} is too small (first stage {widths[0]} channels)")
        self.conv1 = nn.Conv2d(3, self.STEM_CHANNELS, stem_kernel_size, padding=stem_kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(self.STEM_CHANNELS)
        in_ch = self.STEM_CHANNELS
        stages = []
        for s, (width, units) in enumerate(zip(widths, self.STAGE_UNITS)):
            blocks = []
            for i in range(units):
                branch = width - in_ch if i == 0 else width
                blocks.append(ShuffleNetV1Unit(in_ch, branch, 2 if i == 0 else 1, groups,
                                               group_first_conv=not (s == 0 and i == 0)))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, num_classes)`` logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.pool(out), 1))


# ---------------------------------------------------------------------------------------------------------------
# LDAM's cosine head
# ---------------------------------------------------------------------------------------------------------------
#: LDAM's logit scale s (Cao et al. 2019), applied by the cosine head of :func:`build_classifier`
LDAM_SCALE = 30.0


class NormedLinear(nn.Module):
    """Cosine-normalised linear layer of LDAM (Cao et al., "Learning Imbalanced Datasets with Label-Distribution-
    Aware Margin Loss", NeurIPS 2019): ``normalize(x) @ normalize(W)^T``, no bias.

    ``(B, in_features) → (B, out_features)``: ``scale`` × the cosine between a feature vector and a class weight,
    so in ``[-scale, scale]``. LDAM trains on ``s · (cos − margin)`` with s = 30; the head multiplies by s itself
    (``scale``, :data:`LDAM_SCALE` in :func:`build_classifier`) so that the logits a run *evaluates* are the ones
    it was trained on — the LDAM code leaves s to the loss, and a softmax of bare cosines at test time is nearly
    uniform (measured: ECE 0.52 on the synthetic demo set, against 0.27 for cross-entropy). The weight is stored
    ``(out_features, in_features)`` like ``nn.Linear`` (the LDAM code stores the transpose). Hand-written:
    neither torch nor MONAI has a cosine classifier.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # only the direction matters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"


def use_cosine_head(network: nn.Module, name: str = "", scale: float = 1.0) -> nn.Module:
    """Replace the last ``nn.Linear`` of ``network`` (``fc``, ``classifier[-1]``, ``linear``) by a
    :class:`NormedLinear` of the same shape, in place; returns ``network``.

    :class:`ReceptiveFieldCNN` has no linear head (its 1×1 ``convblock13`` makes the class maps, then global
    pooling): for it the last block is dropped and a :class:`NormedLinear` 64 → classes follows the pooling —
    a cosine classifier on the same features (LDAM's s = 30 assumes logits in [−1, 1]; the exact dissertation
    network, whose logits pass through ReLU and BN, is kept for every other loss).

    Raises:
        OptionError: the network has no linear head.
    """
    if isinstance(network, ReceptiveFieldCNN):
        last = network.features.convblock13[0]
        network.features.convblock13 = nn.Identity()
        network.head = NormedLinear(last.in_channels, last.out_channels, scale)
        return network
    linears = [n for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise OptionError({"--model": f"{name or type(network).__name__} has no linear head, and LDAM's cosine "
                                      "head needs a model with a linear head (choose another --model or --loss)"})
    old = network.get_submodule(linears[-1])
    network.set_submodule(linears[-1], NormedLinear(old.in_features, old.out_features, scale))
    return network


# ---------------------------------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name not in CLASSIFIER_NAMES:
        raise OptionError({"--model": f"unknown model {name!r}; choose one of: {', '.join(CLASSIFIER_NAMES)}"})


def resolve_cifar_stem(name: str, image_size: int, cifar_stem: bool | None = None) -> bool | None:
    """Whether a ResNet gets the CIFAR stem: ``cifar_stem`` if given, else ``image_size < 128``.

    ``None`` for non-ResNets (their stems are fixed); passing ``True``/``False`` for one is an
    :class:`OptionError`. Why automatic: with the ImageNet stem (total stride 32) a 64 px image ends as a
    2x2 map; with the CIFAR stem (total stride 8) as 8x8.
    """
    _check_name(name)
    if name not in RESNET_NAMES:
        if cifar_stem is not None:
            raise OptionError({"--cifar_stem": f"only for {', '.join(RESNET_NAMES)}; {name} has a fixed stem"})
        return None
    return bool(cifar_stem) if cifar_stem is not None else image_size < CIFAR_STEM_BELOW


def min_image_size(name: str, cifar_stem: bool | None = None) -> int:
    """Smallest input side (pixels) for network ``name``: its total stride, i.e. the size whose last feature map
    is 1x1 without relying on zero padding (below it :class:`ReceptiveFieldCNN` fails outright).

    For ResNets ``cifar_stem=None`` (automatic) means the CIFAR stem, which small images get: 8; the ImageNet
    stem needs 32.
    """
    _check_name(name)
    if name in RESNET_NAMES:
        return _RESNET_STRIDE[cifar_stem is None or bool(cifar_stem)]
    return _TOTAL_STRIDE[name]


def check_image_size(name: str, image_size: int, cifar_stem: bool | None = None) -> None:
    """Raise :class:`OptionError` (``--image_size``) if ``image_size`` is below :func:`min_image_size`."""
    needed = min_image_size(name, resolve_cifar_stem(name, image_size, cifar_stem))
    if image_size < needed:
        raise OptionError({"--image_size": f"image_size {image_size} is too small for {name} (needs ≥ {needed})"})


def _cifar_stem(net: tvm.ResNet) -> tvm.ResNet:
    """3x3 stride-1 stem conv without bias and no max-pool (the seeds' CIFAR ResNet)."""
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    net.maxpool = nn.Identity()
    return net


def build_classifier(name: str, num_classes: int = 7, image_size: int = 64, cifar_stem: bool | None = None,
                     cosine_head: bool = False, weights_path: str | os.PathLike | None = None,
                     batch_norm: bool = True) -> nn.Module:
    """Build classification network ``name`` (one of :data:`CLASSIFIER_NAMES`): ``(B, 3, H, W) → (B, num_classes)``.

    Args:
        name: the ``--model`` option.
        num_classes: output logits.
        image_size: input side the model will see; checked against :func:`min_image_size` and used for the
            automatic stem choice.
        cifar_stem: ResNets only; ``None`` = CIFAR stem below 128 px (:func:`resolve_cifar_stem`).
        cosine_head: swap the last linear layer for :class:`NormedLinear` (LDAM).
        weights_path: optional local state dict (``torch.load(weights_only=True)``), loaded after the head swap.
        batch_norm: ``receptive_field_cnn`` only (``False`` = the dissertation's base model).

    Raises:
        OptionError: unknown name, image too small, ``cifar_stem`` for a non-ResNet, cosine head without a
            linear head, ``batch_norm=False`` for another model.
        DataError: ``weights_path`` missing, unreadable, or not matching the network (names the file).
    """
    stem = resolve_cifar_stem(name, image_size, cifar_stem)
    check_image_size(name, image_size, stem)
    if not batch_norm and not name.startswith("receptive_field_cnn"):
        raise OptionError({"--batch_norm": f"only receptive_field_cnn can be built without batch norm, not {name}"})
    if name.startswith("receptive_field_cnn"):
        net: nn.Module = ReceptiveFieldCNN(num_classes=num_classes, batch_norm=batch_norm,
                                           width=2 if name.endswith("_x2") else 1)
    elif name in RESNET_NAMES:
        net = getattr(tvm, name)(weights=None, num_classes=num_classes)
        if stem:
            net = _cifar_stem(net)
    elif name == "wrn_40_2":
        net = WideResNet(depth=40, widen_factor=2, num_classes=num_classes)
    elif name == "shufflenet_v1":
        net = ShuffleNetV1(groups=3, num_classes=num_classes)
    else:  # shufflenet_v2_x0_5, mobilenet_v3_small
        net = getattr(tvm, name)(weights=None, num_classes=num_classes)
    if cosine_head:
        use_cosine_head(net, name, LDAM_SCALE)
    if weights_path is not None:
        # imported here: mednet.engines (Ignite handlers) sits above mednet.networks and may import it
        from mednet.engines.checkpoints import load_weights

        load_weights(net, weights_path, hint=f"Was it saved from --model {name} with {num_classes} classes"
                                             + (", cosine head" if cosine_head else "")
                                             + (f", cifar_stem={stem}" if stem is not None else "") + "?")
    return net
