"""TissueFCN: shapes on patches and whole slices, training, TorchScript, variant structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mednet.networks import FCN_VARIANTS, TissueFCN, count_parameters


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Tiny tensors: one thread is faster, and with busy cores two OpenMP threads can make every op ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("variant", FCN_VARIANTS)
@pytest.mark.parametrize("shape", [(16, 1, 16, 16), (2, 1, 37, 53), (1, 1, 197, 233), (1, 1, 1, 1)])
def test_output_shape_any_size(variant: str, shape: tuple[int, ...]) -> None:
    net = TissueFCN(variant).eval()
    with torch.inference_mode():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:])
    assert out.dtype == torch.float32 and out.is_contiguous() and torch.isfinite(out).all()


def test_patch_and_slice_agree_inside_the_valid_region() -> None:
    """Fully convolutional: the same weights apply to any size; padding only changes the border."""
    net = TissueFCN("skip").eval()
    x = torch.randn(1, 1, 48, 48)
    with torch.inference_mode():
        whole = net(x)
        cropped = net(x[..., :45, :41])  # padded back to 48x48 with zeros at the bottom/right
    assert cropped.shape == (1, 3, 45, 41)
    assert torch.allclose(whole[..., :16, :16], cropped[..., :16, :16], atol=1e-5)


def test_default_and_attributes() -> None:
    net = TissueFCN()
    assert net.variant == "skip" and net.downsample_factor == 8
    assert net.in_channels == 1 and net.out_channels == 3
    assert TissueFCN("skip", in_channels=2, out_channels=4, base_channels=4)(torch.randn(2, 2, 16, 16)).shape == (2, 4, 16, 16)


def test_unknown_variant_names_it_and_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="segnet") as err:
        TissueFCN("segnet")
    assert all(v in str(err.value) for v in FCN_VARIANTS)


@pytest.mark.parametrize("variant", FCN_VARIANTS)
def test_training_steps_reduce_loss(variant: str) -> None:
    net = TissueFCN(variant).train()
    x = nn.functional.interpolate(torch.randn(8, 1, 4, 4), size=(16, 16), mode="bilinear")  # smooth "tissue"
    y = (x[:, 0] > 0.3).long() + (x[:, 0] > -0.3).long()  # 3 classes from intensity
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("variant", FCN_VARIANTS)
def test_torchscript_matches_eager(variant: str) -> None:
    net = TissueFCN(variant).eval()
    scripted = torch.jit.script(net)
    with torch.inference_mode():
        for shape in [(4, 1, 16, 16), (2, 1, 37, 53)]:
            x = torch.randn(shape)
            torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", FCN_VARIANTS)
def test_trace_generalises_to_other_sizes(variant: str) -> None:
    net = TissueFCN(variant).eval()
    traced = torch.jit.trace(net, torch.randn(2, 1, 16, 16))
    x = torch.randn(1, 1, 37, 53)
    with torch.inference_mode():
        torch.testing.assert_close(traced(x), net(x), atol=1e-5, rtol=0)


def _types(net: nn.Module) -> set[type]:
    return {type(m) for m in net.modules()}


def test_variant_structure() -> None:
    nets = {v: TissueFCN(v) for v in FCN_VARIANTS}
    unpool = [m for m in nets["unpool"].modules() if isinstance(m, nn.MaxUnpool2d)]
    assert len(unpool) == 3 and nn.ConvTranspose2d not in _types(nets["unpool"])
    assert nets["unpool"].down1.return_indices
    for v in ("transposed", "strided", "skip"):
        assert sum(isinstance(m, nn.ConvTranspose2d) for m in nets[v].modules()) == 3
        assert not any(isinstance(m, nn.MaxUnpool2d) for m in nets[v].modules())
    # strided: downsampling by stride-2 3x3 convolutions, no pooling modules
    strided_convs = [m for m in nets["strided"].modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided_convs) == 3 and all(m.kernel_size == (3, 3) for m in strided_convs)
    # skip: concatenation at 1/1 and 1/2, so those decoder convs see twice the channels
    skip, plain = nets["skip"], nets["transposed"]
    assert (skip.dec1.skip, skip.dec2.skip, skip.dec4.skip) == (True, True, False)
    assert not any(getattr(plain, d).skip for d in ("dec1", "dec2", "dec4"))
    assert skip.dec1.convs[0].conv.in_channels == 2 * plain.dec1.convs[0].conv.in_channels
    assert skip.dec2.convs[0].conv.in_channels == 2 * plain.dec2.convs[0].conv.in_channels


def test_skip_connection_concatenates_encoder_features() -> None:
    """The full-resolution decoder conv receives [upsampled, encoder] features: 2c channels."""
    net = TissueFCN("skip", base_channels=4).eval()
    seen: list[torch.Size] = []
    net.dec1.convs.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    with torch.inference_mode():
        net(torch.randn(1, 1, 16, 16))
    assert seen == [torch.Size([1, 8, 16, 16])]


def test_parameter_counts() -> None:
    counts = {v: count_parameters(TissueFCN(v)) for v in FCN_VARIANTS}
    assert counts["unpool"] < counts["transposed"] < counts["skip"] < counts["strided"]
    assert 50_000 < counts["skip"] < 150_000  # default base_channels=8
    assert count_parameters(TissueFCN("skip", base_channels=16)) > 3 * counts["skip"]


def test_train_and_eval_still_switch_every_submodule() -> None:
    """TissueFCN.train() skips the walk when nothing changes; the result must equal nn.Module.train's."""
    net = TissueFCN("skip")
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.eval()  # one submodule in the other mode: train() must still reach it
    assert net.train() is net and bn.training
