"""Classification networks for dermoscopy (mednet.networks.classifiers): parameter counts of the seeds' and
the study's models, receptive field, minimum input sizes, LDAM's cosine head, weights loading and errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from mednet.errors import DataError, OptionError
from mednet.networks.classifiers import (
    LDAM_SCALE,
    CLASSIFIER_NAMES,
    NormedLinear,
    ReceptiveFieldCNN,
    ShuffleNetV1,
    WideResNet,
    build_classifier,
    check_image_size,
    count_parameters,
    min_image_size,
    receptive_field,
    resolve_cifar_stem,
    total_stride,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _logits(net: nn.Module, size: int) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(torch.rand(2, 3, size, size))


# --- the dissertation's CNN -----------------------------------------------------------------------------------
def test_receptive_field_cnn_has_the_dissertations_51221_parameters():
    assert count_parameters(ReceptiveFieldCNN(num_classes=7)) == 51_221
    # base model: the 16 BN layers (2 x 319 channels) go
    assert count_parameters(ReceptiveFieldCNN(num_classes=7, batch_norm=False)) == 51_221 - 2 * 319


def test_receptive_field_cnn_layout():
    net = ReceptiveFieldCNN()
    assert [type(m) for m in net.features.convblock1] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Dropout]
    assert net.features.convblock1[3].p == 0.01
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 8, 16, 16, 32, 8, 8, 16, 32, 8, 16, 32, 32, 64, 7]
    assert [c.kernel_size[0] for c in convs].count(1) == 4
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 5
    assert all(m.out_features != 7 for m in net.modules() if isinstance(m, nn.Linear))  # only the head swapped
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ReceptiveFieldCNN(batch_norm=False).modules())


# --- receptive field ------------------------------------------------------------------------------------------
def test_receptive_field_of_small_stacks():
    conv3 = lambda **kw: nn.Conv2d(1, 1, 3, **kw)  # noqa: E731
    assert receptive_field([conv3(), conv3()]) == 5
    assert receptive_field(nn.Sequential(conv3(), nn.MaxPool2d(2), conv3())) == 3 + 1 + 2 * 2
    assert receptive_field([conv3(stride=2), conv3()]) == 3 + 2 * 2
    assert receptive_field([conv3(dilation=2)]) == 5
    assert receptive_field([nn.AvgPool2d(2), nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d(1)]) == 2
    assert total_stride([conv3(stride=2), nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1)]) == 4


def test_receptive_field_cnn_sees_168_pixels_not_232():
    net = ReceptiveFieldCNN()
    assert receptive_field(net) == 168
    assert total_stride(net) == 32


def test_double_width_teacher_has_four_times_the_parameters_and_the_same_field():
    wide = build_classifier("receptive_field_cnn_x2", num_classes=7, image_size=32)
    assert count_parameters(wide) == 201_621  # ≈ 4× the 51,221 of the dissertation network
    assert receptive_field(wide) == 168 and total_stride(wide) == 32
    assert wide(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


# --- ResNets --------------------------------------------------------------------------------------------------
def test_resnet18_cifar_stem_matches_the_seeds_11172423_parameters():
    net = build_classifier("resnet18", num_classes=7, image_size=64)  # automatic: CIFAR stem below 128 px
    assert count_parameters(net) == 11_172_423
    stem = net.conv1
    assert (stem.kernel_size, stem.stride, stem.padding, stem.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(net.maxpool, nn.Identity)
    imagenet = build_classifier("resnet18", num_classes=7, image_size=128)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert count_parameters(imagenet) == 11_172_423 + 3 * 64 * (49 - 9)


def test_cifar_stem_choice():
    assert resolve_cifar_stem("resnet50", 127) is True
    assert resolve_cifar_stem("resnet50", 128) is False
    assert resolve_cifar_stem("resnet50", 224, cifar_stem=True) is True
    assert resolve_cifar_stem("mobilenet_v3_small", 64) is None
    with pytest.raises(OptionError, match="--cifar_stem: only for resnet18"):
        resolve_cifar_stem("wrn_40_2", 64, cifar_stem=True)


# --- WRN-40-2 and ShuffleNet V1 (the calibration study's teacher and student) ---------------------------------
def test_wrn_40_2_has_repdistillers_parameter_count():
    net = WideResNet(depth=40, widen_factor=2, num_classes=100)
    assert count_parameters(net) == 2_255_156  # RepDistiller wrn_40_2 at 100 classes
    assert [len(net.block1), len(net.block2), len(net.block3)] == [6, 6, 6]
    assert net.fc.in_features == 128
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=41)


def test_channel_shuffle_interleaves_the_groups():
    unit = ShuffleNetV1(groups=3).layer1[1]  # a unit whose first 1x1 convolution is grouped
    x = torch.arange(6.0).view(1, 6, 1, 1)
    # groups (0 1) (2 3) (4 5) → one channel of each group in turn
    assert unit.shuffle(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_shufflenet_v1_layout_and_parameters():
    net = ShuffleNetV1(groups=3, num_classes=100)
    assert count_parameters(net) == 949_258  # RepDistiller ShuffleV1 (the CRD paper's 0.95 M)
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [4, 8, 4]
    assert [s[-1].conv3.out_channels for s in (net.layer1, net.layer2, net.layer3)] == [240, 480, 960]
    assert net.layer1[0].conv1.groups == 1 and net.layer1[1].conv1.groups == 3 and net.layer2[0].conv1.groups == 3
    assert net.conv1.out_channels == 24 and net.conv1.stride == (1, 1)
    assert _logits(ShuffleNetV1(num_classes=7, width_mult=0.5), 32).shape == (2, 7)


# --- every model through the factory --------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLASSIFIER_NAMES)
def test_every_model_gives_logits_at_32px_and_at_its_min_size(name):
    smallest = min_image_size(name)
    net = build_classifier(name, num_classes=7, image_size=smallest)  # the same network as at 32 px
    assert _logits(net, 32).shape == (2, 7)
    assert _logits(net, smallest).shape == (2, 7)


def test_min_image_sizes_follow_the_total_stride():
    assert min_image_size("receptive_field_cnn") == 32
    assert min_image_size("resnet18", cifar_stem=False) == 32
    assert min_image_size("resnet18", cifar_stem=True) == min_image_size("resnet18") == 8
    assert min_image_size("wrn_40_2") == 4
    assert min_image_size("shufflenet_v1") == 8
    assert min_image_size("mobilenet_v3_small") == min_image_size("shufflenet_v2_x0_5") == 32
    net = build_classifier("resnet34", image_size=224, cifar_stem=False)
    assert _logits(net, 32).shape == (2, 7)
    with pytest.raises(RuntimeError):  # five unpadded max-pools: below 32 px the CNN really cannot run
        _logits(ReceptiveFieldCNN(), 31)


def test_image_too_small_is_an_option_error():
    with pytest.raises(OptionError, match=r"--image_size: image_size 16 is too small for receptive_field_cnn "
                                          r"\(needs ≥ 32\)"):
        build_classifier("receptive_field_cnn", image_size=16)
    with pytest.raises(OptionError, match="too small for resnet50 \\(needs ≥ 32\\)"):
        check_image_size("resnet50", 16, cifar_stem=False)
    check_image_size("resnet50", 16)  # automatic: CIFAR stem, fine


def test_unknown_model_and_bad_options():
    with pytest.raises(OptionError, match="--model: unknown model 'resnet19'; choose one of: receptive_field_cnn, "
                                          "receptive_field_cnn_x2, resnet18.*mobilenet_v3_small"):
        build_classifier("resnet19")
    with pytest.raises(OptionError, match="--batch_norm"):
        build_classifier("resnet18", batch_norm=False)
    assert count_parameters(build_classifier("receptive_field_cnn", batch_norm=False)) == 51_221 - 638


# --- LDAM's cosine head ---------------------------------------------------------------------------------------
def test_normed_linear_is_a_cosine():
    head = NormedLinear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    out = head(torch.tensor([[3.0, 4.0], [-6.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [-1.0, 0.0]]))


@pytest.mark.parametrize("name, attribute", [("resnet18", "fc"), ("wrn_40_2", "fc"), ("shufflenet_v1", "linear"),
                                             ("mobilenet_v3_small", "classifier.3")])
def test_cosine_head_replaces_the_last_linear(name, attribute):
    net = build_classifier(name, num_classes=7, image_size=32, cosine_head=True)
    assert isinstance(net.get_submodule(attribute), NormedLinear)
    assert all(m.out_features != 7 for m in net.modules() if isinstance(m, nn.Linear))  # only the head swapped
    logits = _logits(net, 32)
    assert logits.shape == (2, 7) and logits.abs().max() <= LDAM_SCALE * (1 + 1e-6)  # s · cosine


def test_cosine_head_of_the_dissertation_cnn_follows_the_pooling():
    net = build_classifier("receptive_field_cnn", num_classes=7, image_size=32, cosine_head=True).eval()
    assert isinstance(net.head, NormedLinear) and (net.head.weight.shape[1], net.head.weight.shape[0]) == (64, 7)
    assert isinstance(net.features.convblock13, torch.nn.Identity)  # the 1x1 class-map block is dropped
    logits = net(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 7) and logits.abs().max() <= LDAM_SCALE * (1 + 1e-5)
    # without it the network is the dissertation's exactly
    assert isinstance(build_classifier("receptive_field_cnn").head, torch.nn.Identity)


# --- weights_path ---------------------------------------------------------------------------------------------
def test_weights_path_round_trip(tmp_path):
    trained = build_classifier("shufflenet_v1", num_classes=7, cosine_head=True)
    path = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), path)
    loaded = build_classifier("shufflenet_v1", num_classes=7, cosine_head=True, weights_path=str(path))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(trained.eval()(x), loaded.eval()(x))


def test_weights_path_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(DataError, match=f"^{re.escape(str(missing))}: checkpoint not found"):
        build_classifier("wrn_40_2", weights_path=str(missing))
    other = tmp_path / "cnn.pt"
    torch.save(ReceptiveFieldCNN().state_dict(), other)
    with pytest.raises(DataError, match=f"^{re.escape(str(other))}: checkpoint does not match the network WideResNet.*"
                                        "Was it saved from --model wrn_40_2 with 7 classes"):
        build_classifier("wrn_40_2", weights_path=str(other))
    wrong_classes = tmp_path / "cnn10.pt"
    torch.save(ReceptiveFieldCNN(num_classes=10).state_dict(), wrong_classes)
    with pytest.raises(DataError, match=f"^{re.escape(str(wrong_classes))}: .*shape mismatches"):
        build_classifier("receptive_field_cnn", num_classes=7, weights_path=str(wrong_classes))


# --- export ---------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_hand_written_networks_script_for_ckpt_export():
    x = torch.rand(1, 3, 32, 32)
    for net in (ReceptiveFieldCNN(), WideResNet(depth=10, num_classes=7), ShuffleNetV1(num_classes=7, width_mult=0.25),
                build_classifier("resnet18", cosine_head=True)):
        net.eval()
        with torch.no_grad():
            assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-5)
