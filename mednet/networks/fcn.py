"""2D fully-convolutional networks for brain tissue segmentation (CSF / GM / WM).

The four variants of the course exercise (SegNet-like baseline and three modifications), built from one
encoder-decoder skeleton with three downsamplings (factor 8):

=============  ===============================  ===================================  ==================
variant        downsampling                     upsampling                           skip connections
=============  ===============================  ===================================  ==================
``unpool``     2x2 max-pooling (with indices)   ``MaxUnpool2d`` with those indices   none
``transposed`` 2x2 max-pooling                  ``ConvTranspose2d`` (kernel 2, s 2)  none
``strided``    3x3 convolution, stride 2        ``ConvTranspose2d`` (kernel 2, s 2)  none
``skip``       2x2 max-pooling                  ``ConvTranspose2d`` (kernel 2, s 2)  concat at 1/1, 1/2
=============  ===============================  ===================================  ==================

Layout for ``base_channels = c`` (every "conv" is 3x3 Conv-BatchNorm-ReLU; max-pooling follows encoder
convolutions 1, 3 and 5 as in the exercise; the decoder mirrors the encoder)::

    1/1  conv(in→c)                          ──skip──►  conv(c[+c]→c) → 1x1 conv(c→out)  (logits)
    1/2  conv(c→2c)  conv(2c→2c)             ──skip──►  conv(2c[+2c]→2c) conv(2c→c)
    1/4  conv(2c→4c) conv(4c→4c)                        conv(4c→4c) conv(4c→2c)
    1/8            bottleneck: conv(4c→8c) conv(8c→4c)

The module returns logits (no softmax): losses and metrics apply it. It is fully convolutional: trained on
16x16 patches, the same weights segment whole slices of any size, because ``forward`` zero-pads H and W up
to a multiple of :attr:`TissueFCN.downsample_factor` and crops the output back to the input size.
All variants work with ``torch.jit.script`` (MONAI's ``ckpt_export``) and ``torch.jit.trace`` (any input size).

Speed: whole-volume inference of a 197x233x189 MNI volume, 189 slices in batches of 16, float32 CPU,
``torch.inference_mode()``: ``skip`` with the default ``base_channels=8`` takes about 2.6 s with one thread,
``base_channels=16`` about 8.5 s. The weights are kept channels-last (1.6x faster than NCHW here).
"""

from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["FCN_VARIANTS", "TissueFCN", "count_parameters"]

FCN_VARIANTS = ("unpool", "transposed", "strided", "skip")


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> Convolution:
    """3x3 Conv-BatchNorm-ReLU (MONAI ``Convolution``): ``(B, in, H, W) -> (B, out, H/stride, W/stride)``.

    The convolution has no bias: the batch norm that follows would cancel it.
    """
    return Convolution(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=stride,
        kernel_size=3,
        act=("RELU", {"inplace": True}),
        norm="BATCH",
        bias=False,
    )


class PoolDown(nn.Module):
    """2x2 max-pooling: ``(B, C, H, W) -> ((B, C, H/2, W/2), indices or None)``.

    The argmax indices (needed by :class:`UnpoolUp`) are returned only if ``return_indices``: computing them
    makes the pooling several times slower on CPU.
    """

    def __init__(self, channels: int, return_indices: bool = False) -> None:
        super().__init__()
        self.return_indices = return_indices

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.return_indices:
            y, indices = F.max_pool2d_with_indices(x, 2, 2)
            return y, indices
        return F.max_pool2d(x, 2, 2), None


class StridedDown(nn.Module):
    """Learned downsampling, a 3x3 stride-2 Conv-BN-ReLU: ``(B, C, H, W) -> ((B, C, H/2, W/2), None)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv_block(channels, channels, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.conv(x), None


class UnpoolUp(nn.MaxUnpool2d):
    """2x2 max-unpooling with the encoder's pooling indices: ``(B, C, H, W) -> (B, C, 2H, 2W)`` (sparse).

    An ``nn.MaxUnpool2d`` whose ``forward`` calls the ATen op with the output size directly: the stock
    ``forward`` fails under ``torch.jit.script`` ("isIntList() INTERNAL ASSERT FAILED", pytorch/pytorch#86113)
    and ``F.max_unpool2d`` fails under ``torch.jit.trace`` (its size check gets traced tensors).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, indices: Optional[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        assert indices is not None, "UnpoolUp needs the indices of a PoolDown"
        # the op F.max_unpool2d ends in; torch.ops.aten.max_unpool2d would freeze the size under tracing
        return torch._C._nn.max_unpool2d(x, indices, [2 * x.shape[-2], 2 * x.shape[-1]])


class TransposedUp(nn.Module):
    """Learned upsampling, ``ConvTranspose2d(kernel 2, stride 2)``: ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, indices: Optional[torch.Tensor]) -> torch.Tensor:
        return self.conv(x)


class DecoderStage(nn.Module):
    """Upsample, optionally concatenate the encoder features of that scale (skip connection), then convolve.

    ``channels = (c_0, c_1, ..., c_k)``: ``up`` keeps ``c_0`` channels, then ``k`` Conv-BN-ReLU blocks go
    ``c_0 + skip_channels -> c_1 -> ... -> c_k``. Shapes: ``x`` ``(B, c_0, H, W)``, ``indices`` (unpooling only),
    ``encoder_features`` ``(B, skip_channels, 2H, 2W)`` (ignored when ``skip_channels == 0``) ->
    ``(B, c_k, 2H, 2W)``.
    """

    def __init__(self, up: nn.Module, channels: Sequence[int], skip_channels: int = 0) -> None:
        super().__init__()
        self.up = up
        self.skip = skip_channels > 0
        ins = [channels[0] + skip_channels, *channels[1:-1]]
        self.convs = nn.Sequential(*(conv_block(i, o) for i, o in zip(ins, channels[1:])))

    def forward(self, x: torch.Tensor, indices: Optional[torch.Tensor], encoder_features: torch.Tensor) -> torch.Tensor:
        x = self.up(x, indices)
        if self.skip:
            x = torch.cat([x, encoder_features], dim=1)
        return self.convs(x)


class TissueFCN(nn.Module):
    """Fully-convolutional 2D tissue segmenter: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` logits.

    Args:
        variant: one of :data:`FCN_VARIANTS` (see the module docstring).
        in_channels: input channels (1: a T1 MR slice).
        out_channels: classes (3: CSF, GM, WM; background is handled outside the network).
        base_channels: width ``c`` at full resolution; it doubles at each of the 1/2, 1/4 and 1/8 scales.
            The default 8 (81 k parameters for ``skip``) keeps whole-volume CPU inference well under 5 s; the
            course's 16 (322 k) costs about 3.3x as much for a Dice gain under 0.01 in a quick MNI check.

    Any H, W >= 1 is accepted: the input is zero-padded to a multiple of :attr:`downsample_factor` (8) and the
    output cropped back.

    Example::

        net = TissueFCN("skip")                    # (B, 1, H, W) -> (B, 3, H, W) logits
        probs = net(torch.rand(4, 1, 197, 233)).softmax(dim=1)
    """

    def __init__(
        self, variant: str = "skip", in_channels: int = 1, out_channels: int = 3, base_channels: int = 8
    ) -> None:
        super().__init__()
        if variant not in FCN_VARIANTS:
            raise ValueError(f"unknown FCN variant {variant!r}; choose one of {FCN_VARIANTS}")
        self.variant = variant
        self.downsample_factor = 8  # three 2x downsamplings; forward pads H, W to a multiple of this
        self.in_channels = in_channels
        self.out_channels = out_channels
        c = base_channels
        down = StridedDown if variant == "strided" else partial(PoolDown, return_indices=variant == "unpool")
        up = UnpoolUp if variant == "unpool" else TransposedUp
        skip = variant == "skip"  # the exercise's "2 skip connections": at 1/1 and 1/2

        self.enc1 = nn.Sequential(conv_block(in_channels, c))  # 1/1
        self.down1 = down(c)
        self.enc2 = nn.Sequential(conv_block(c, 2 * c), conv_block(2 * c, 2 * c))  # 1/2
        self.down2 = down(2 * c)
        self.enc4 = nn.Sequential(conv_block(2 * c, 4 * c), conv_block(4 * c, 4 * c))  # 1/4
        self.down4 = down(4 * c)
        self.bottleneck = nn.Sequential(conv_block(4 * c, 8 * c), conv_block(8 * c, 4 * c))  # 1/8
        self.dec4 = DecoderStage(up(4 * c), (4 * c, 4 * c, 2 * c))  # -> 1/4
        self.dec2 = DecoderStage(up(2 * c), (2 * c, 2 * c, c), skip_channels=2 * c if skip else 0)  # -> 1/2
        self.dec1 = DecoderStage(up(c), (c, c), skip_channels=c if skip else 0)  # -> 1/1
        self.head = nn.Conv2d(c, out_channels, kernel_size=1)
        # NHWC weights make oneDNN run every convolution channels-last (the input may stay NCHW): about 1.6x
        # faster whole-slice inference on CPU. load_state_dict / .to(device) keep this layout.
        self.to(memory_format=torch.channels_last)

    @torch.jit.unused
    def train(self, mode: bool = True) -> TissueFCN:
        """As :meth:`torch.nn.Module.train`, but a no-op when every submodule is already in ``mode``.

        MONAI's ``SupervisedTrainer`` calls ``network.train()`` at every iteration; ``nn.Module.train`` sets the
        flag through ``__setattr__`` on all ~80 submodules, which measured ≈ 6 % of a CPU training step of this
        small network. Reading the flags is far cheaper; any submodule in the other mode triggers the full call.
        """
        if all(m.training == mode for m in self.modules()):
            return self
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` logits, for any H, W >= 1."""
        h, w = x.shape[-2], x.shape[-1]
        f = self.downsample_factor
        pad_h, pad_w = (f - h % f) % f, (f - w % f) % f
        x = F.pad(x, [0, pad_w, 0, pad_h])  # zeros (background) at the bottom/right; unconditional: traceable
        e1 = self.enc1(x)  # (B, c, H, W)
        d, i1 = self.down1(e1)
        e2 = self.enc2(d)  # (B, 2c, H/2, W/2)
        d, i2 = self.down2(e2)
        e4 = self.enc4(d)  # (B, 4c, H/4, W/4)
        d, i4 = self.down4(e4)
        y = self.bottleneck(d)  # (B, 4c, H/8, W/8)
        y = self.dec4(y, i4, e4)  # (B, 2c, H/4, W/4)
        y = self.dec2(y, i2, e2)  # (B, c, H/2, W/2)
        y = self.dec1(y, i1, e1)  # (B, c, H, W)
        return self.head(y)[..., :h, :w].contiguous()


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
