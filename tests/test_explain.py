"""Attribution maps (mednet.explain), their sanity checks, figures, the evaluator handler and explain.json.

The sanity tests use a real trained classifier: the dissertation CNN (``receptive_field_cnn``) trained for a few
seconds on a task whose evidence is localised (the class is the colour of one disc at a random position on colour
noise, :func:`mednet.explain.sanity.blob_task`), so a useful map has something to find. Its images are 32 px, where the
network's default Grad-CAM layer (``convblock10``) gives a 4×4 map; the sanity tests name it explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from _dermoscopy_fixtures import kept_figures

from mednet.errors import OptionError
from mednet.explain import (
    EXPLAIN_METHODS,
    attribution_maps,
    attribution_maps_timed,
    blurred_baseline,
    default_target_layer,
    earlier_target_layer,
    feature_map_size,
    grad_cam_map,
)
from mednet.explain.sanity import (
    BLOB_NORMALIZATION,
    RANDOMISATION_THRESHOLD,
    blob_task,
    deletion_insertion,
    model_randomisation_test,
    randomised_copy,
    rank_correlation,
    train_blob_classifier,
)
from mednet.networks.classifiers import build_classifier

S = 32
CLASSES7 = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
FAST = {"n_steps": 16, "n_samples": 8}  # IG / GradientSHAP settings for speed where the defaults are not tested
N_TEST = 24  # held-out images of the sanity tests
CAM_LAYER = {"layer": "features.convblock10"}  # 4×4 at 32 px (see the module docstring)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(BLOB_NORMALIZATION["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(BLOB_NORMALIZATION["std"]).reshape(1, 3, 1, 1)
    return (images - mean) / std


@pytest.fixture(scope="module")
def trained() -> SimpleNamespace:
    """receptive_field_cnn trained on the 4-class disc task at 32 px (a few seconds on one core)."""
    torch.manual_seed(0)
    images, labels, _ = blob_task(448, S, num_classes=4, seed=0)
    # 30 epochs at lr 1e-3: the result depends on the thread count (CPU kernels); measured on 24 / 96 / 96 held-out
    # images, 20 epochs gave 0.875 / 0.96 / 0.95 on one thread (below this check) and 0.92 / 0.99 / 0.98 on two;
    # 30 epochs 0.96 / 0.96 / 0.95 and 1.00 / 0.99 / 0.99
    net = train_blob_classifier(build_classifier("receptive_field_cnn", 4, S), images, labels, epochs=30, seed=0,
                                learning_rate=1e-3)
    test_images, test_labels, masks = blob_task(N_TEST, S, num_classes=4, seed=1)
    x = _normalise(test_images)
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == test_labels).float().mean())
    assert accuracy >= 0.9, f"the fixture classifier did not learn the task (accuracy {accuracy:.2f})"
    return SimpleNamespace(net=net, x=x, labels=test_labels, masks=masks, accuracy=accuracy)


# ---------------------------------------------------------------------------------------------------------------
# maps
# ---------------------------------------------------------------------------------------------------------------
def test_every_method_gives_input_sized_maps_in_unit_range(trained: SimpleNamespace) -> None:
    x = trained.x[:4]
    maps, seconds = attribution_maps_timed(trained.net, x, normalization=BLOB_NORMALIZATION)  # default settings
    assert tuple(maps) == EXPLAIN_METHODS and set(seconds) == set(EXPLAIN_METHODS)
    for method, m in maps.items():
        assert m.shape == (4, S, S) and m.dtype == torch.float32, method
        assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, method
        peaks = m.flatten(1).max(1).values  # min-max per image: 1, or 0 for a constant map (no positive evidence)
        assert ((peaks == 1) | (m.flatten(1).amin(1) == peaks)).all() and (peaks == 1).any(), method
        assert seconds[method] > 0
    # one image as (3, S, S) works too, and the web demo's call gives the same Grad-CAM
    single = grad_cam_map(trained.net, x[1])
    assert single.shape == (S, S) and single.dtype == np.float32
    np.testing.assert_allclose(single, maps["gradcam"][1].numpy(), atol=1e-5)
    # blurred baseline: same shape, less detail
    blurred = blurred_baseline(x)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    ig_blur = attribution_maps(trained.net, x, ("integrated_gradients",), ig_baseline="blur", n_steps=16)
    assert ig_blur["integrated_gradients"].shape == (4, S, S)


def test_maps_are_not_inverted(trained: SimpleNamespace) -> None:
    """MONAI's default CAM post-processing maps max → 0; ours keeps high = important: the disc is hot."""
    maps = attribution_maps(trained.net, trained.x, ("gradcam", "integrated_gradients"), **CAM_LAYER, **FAST)
    for method, m in maps.items():
        inside = np.mean([float(m[i][trained.masks[i]].mean()) for i in range(len(m))])
        outside = np.mean([float(m[i][~trained.masks[i]].mean()) for i in range(len(m))])
        assert inside > outside, (method, inside, outside)


@pytest.mark.parametrize("name, size, layer, resolution, earlier, earlier_resolution", [
    ("receptive_field_cnn", 32, "features.convblock10", (4, 4), "features.convblock8", (8, 8)),
    ("receptive_field_cnn", 64, "features.convblock10", (8, 8), "features.convblock8", (16, 16)),  # 1x1 blocks skipped
    ("resnet18", 64, "layer4", (8, 8), "layer3", (16, 16)),  # CIFAR stem below 128 px
    ("wrn_40_2", 64, "block3", (16, 16), "block2", (32, 32)),
    ("shufflenet_v2_x0_5", 64, "conv5", (2, 2), "stage3", (4, 4)),
    ("mobilenet_v3_small", 64, "features.12", (2, 2), "features.8", (4, 4)),
])
def test_default_layers_exist_and_give_the_documented_resolution(name: str, size: int, layer: str, resolution: tuple,
                                                                 earlier: str, earlier_resolution: tuple) -> None:
    torch.manual_seed(0)
    net = build_classifier(name, 7, size).eval()
    assert default_target_layer(net) == layer and layer in dict(net.named_modules())
    assert feature_map_size(net, None, size) == resolution
    assert earlier_target_layer(net, size) == earlier and feature_map_size(net, earlier, size) == earlier_resolution
    heat = grad_cam_map(net, torch.randn(3, size, size))
    assert heat.shape == (size, size) and 0 <= heat.min() and heat.max() <= 1


def test_imagenet_stem_resnet_map_is_2x2_at_64px() -> None:
    net = build_classifier("resnet18", 7, 64, cifar_stem=False).eval()
    assert feature_map_size(net, None, 64) == (2, 2)


def test_target_class_on_request_changes_the_map(trained: SimpleNamespace) -> None:
    x = trained.x[:4]  # several images: a confident model's Grad-CAM can be all zero for one image and both classes
    with torch.no_grad():
        pred = trained.net(x).argmax(1).tolist()
    other = [(p + 1) % 4 for p in pred]
    default = grad_cam_map(trained.net, x[:1])
    np.testing.assert_allclose(default, grad_cam_map(trained.net, x[:1], target=pred[0]), atol=1e-6)
    for method in ("gradcam", "integrated_gradients"):
        a = attribution_maps(trained.net, x, (method,), targets=pred, **FAST)[method]
        b = attribution_maps(trained.net, x, (method,), targets=other, **FAST)[method]
        assert (a - b).abs().max() > 0.05, method


def test_explaining_leaves_the_network_unchanged(trained: SimpleNamespace) -> None:
    net = trained.net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    net.features.convblock1[0].weight.grad = torch.ones_like(net.features.convblock1[0].weight)
    modes = [m.training for m in net.modules()]
    inplace = [m.inplace for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        attribution_maps(net, trained.x[:3], **FAST)
        grad_cam_map(net, trained.x[0], layer="features.convblock12.1")  # an in-place ReLU as the target layer
        assert [m.training for m in net.modules()] == modes
        assert [m.inplace for m in net.modules() if isinstance(m, torch.nn.ReLU)] == inplace
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        assert torch.equal(net.features.convblock1[0].weight.grad, torch.ones_like(net.features.convblock1[0].weight))
        assert all(p.requires_grad for p in net.parameters())
        assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())  # MONAI's hooks removed
    finally:
        net.features.convblock1[0].weight.grad = None
        net.eval()


def test_bad_options_and_ensembles() -> None:
    from mednet.networks.ensemble import EnsembleClassifier

    torch.manual_seed(0)
    a, b = (build_classifier("receptive_field_cnn", 7, S).eval() for _ in range(2))
    x = torch.randn(2, 3, S, S)
    with pytest.raises(OptionError, match="--layer.*no module 'nope'"):
        attribution_maps(a, x, ("gradcam",), layer="nope")
    with pytest.raises(OptionError, match="--methods.*'lime'"):
        attribution_maps(a, x, ("gradcam", "lime"))
    with pytest.raises(OptionError, match="--layer.*not a \\(B, C, h, w\\)"):
        feature_map_size(a, "head", S)  # Identity after the flatten: (B, K)
    ensemble = EnsembleClassifier([a, b])
    with pytest.raises(OptionError, match="--layer.*member run"):
        default_target_layer(ensemble)
    with pytest.raises(OptionError, match="--layer.*member run"):
        attribution_maps(ensemble, x, ("gradcam",))
    maps = attribution_maps(ensemble, x, ("integrated_gradients", "gradient_shap"), **FAST)  # input gradients only
    assert all(m.shape == (2, S, S) for m in maps.values())
    # explain.json checks every option in its initialize, before the output folder exists
    from mednet.engines.explanation_writer import check_explain_options

    assert check_explain_options(a, CLASSES7, ["gradcam"], "mel") == (("gradcam",), 4, "features.convblock10")
    with pytest.raises(OptionError, match="--layer.*member run"):
        check_explain_options(ensemble, CLASSES7)
    with pytest.raises(OptionError, match="--ig_baseline.*--n_steps|--n_steps.*--ig_baseline"):
        check_explain_options(a, CLASSES7, ig_baseline="white", n_steps=0)
    with pytest.raises(OptionError, match="--layer.*not a \\(B, C, h, w\\)"):  # found in initialize, not at run
        check_explain_options(a, CLASSES7, ["gradcam"], layer="head", image_size=S)
    # a module run twice per forward (a ResNet block's relu): its map would mix two calls, so it is refused
    resnet = build_classifier("resnet18", 7, S).eval()
    with pytest.raises(OptionError, match="--layer: 'layer4.1.relu' runs 2 times in one forward pass.*'layer4.1'"):
        check_explain_options(resnet, CLASSES7, ["gradcam"], layer="layer4.1.relu", image_size=S)
    assert feature_map_size(resnet, "layer4.1", S) == feature_map_size(resnet, "layer4", S)
    # a caller inside torch.inference_mode (e.g. a web demo) still gets gradients
    with torch.inference_mode():
        heat = grad_cam_map(a, torch.randn(3, S, S))
    assert heat.shape == (S, S)


def test_a_layer_whose_output_is_modified_in_place_is_refused_when_options_are_checked() -> None:
    """torchvision's ResNet adds the shortcut in place right after ``bn2`` (``out += identity``): the forward check
    passes, but MONAI's backward hook makes autograd refuse the first batch. The option check runs Grad-CAM once."""
    from mednet.engines.explanation_writer import check_explain_options

    torch.manual_seed(0)
    resnet = build_classifier("resnet18", 7, S).eval()
    assert feature_map_size(resnet, "layer4.1.bn2", S) == (4, 4)  # what the check ran before: it passes
    problem = r"^--layer: .*'layer4\.1\.bn2'.*modified in place by the next operation.*e\.g\. 'layer4\.1'$"
    for methods in (["gradcam"], ["gradcampp", "integrated_gradients"]):
        with pytest.raises(OptionError, match=problem):
            check_explain_options(resnet, CLASSES7, methods, layer="layer4.1.bn2", image_size=S)
    with pytest.raises(OptionError, match=problem):  # and from the library call, not autograd's RuntimeError
        attribution_maps(resnet, torch.randn(2, 3, S, S), ("gradcam",), layer="layer4.1.bn2")
    assert not any(m._forward_hooks or m._backward_hooks for m in resnet.modules())  # hooks removed after the error
    assert all(p.requires_grad for p in resnet.parameters())
    assert check_explain_options(resnet, CLASSES7, ["gradcam"], layer="layer4.1", image_size=S)[2] == "layer4.1"


@pytest.mark.parametrize("layer", [None, "null", "none", "None", ""], ids=["None", "null", "none", "text-None", "empty"])
def test_layer_null_means_the_default_layer(layer: str | None) -> None:
    """``--layer null`` as documented (python-fire passes ``null`` and ``none`` as text)."""
    from mednet.engines.explanation_writer import check_explain_options
    from mednet.explain import check_layer

    torch.manual_seed(0)
    net = build_classifier("receptive_field_cnn", 7, S).eval()
    assert check_layer(net, layer) == "features.convblock10"
    assert check_explain_options(net, CLASSES7, ["gradcam"], layer=layer, image_size=S)[2] == "features.convblock10"
    heat = attribution_maps(net, torch.randn(1, 3, S, S), ("gradcam",), layer=layer)["gradcam"]
    assert heat.shape == (1, S, S)


# ---------------------------------------------------------------------------------------------------------------
# sanity checks on the trained classifier
# ---------------------------------------------------------------------------------------------------------------
def test_randomised_copy_and_rank_correlation(trained: SimpleNamespace) -> None:
    copy = randomised_copy(trained.net, seed=1)
    assert not torch.equal(copy.features.convblock1[0].weight, trained.net.features.convblock1[0].weight)
    cascading = randomised_copy(trained.net, seed=1, mode="cascading", n_layers=1)
    changed = [n for n, p in cascading.state_dict().items() if not torch.equal(p, trained.net.state_dict()[n])]
    # the top layer: the last convolution and its batch norm, together (the BN alone would leave the conv trained)
    assert {n.rsplit(".", 1)[0] for n in changed} == {"features.convblock13.0", "features.convblock13.2"}, changed
    two = randomised_copy(trained.net, seed=1, mode="cascading", n_layers=2)
    changed = {n.rsplit(".", 1)[0] for n, p in two.state_dict().items() if not torch.equal(p, trained.net.state_dict()[n])}
    assert changed == {"features.convblock12.0", "features.convblock12.2", "features.convblock13.0",
                       "features.convblock13.2"}, changed
    m = torch.rand(S, S)
    assert rank_correlation(m, m) == pytest.approx(1.0)
    assert rank_correlation(m, -m) == pytest.approx(-1.0)
    assert rank_correlation(m, torch.zeros(S, S)) == 0.0


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_maps_fail_to_survive_model_randomisation(trained: SimpleNamespace, method: str) -> None:
    """Adebayo et al. 2018: maps of the trained and the fully randomised network share little rank order."""
    result = model_randomisation_test(trained.net, trained.x, method, seed=0, normalization=BLOB_NORMALIZATION,
                                      n_steps=16, **CAM_LAYER)
    assert result["correlations"].shape == (N_TEST,) and result["mode"] == "full"
    assert N_TEST - result["n_constant"] >= 6, result  # enough images whose randomised map is not empty
    assert result["mean"] < RANDOMISATION_THRESHOLD and result["passed"], result["mean"]
    # the same test on a network that is *not* randomised fails, as it must
    same = model_randomisation_test(trained.net, trained.x, method, mode="cascading", n_layers=0,
                                    normalization=BLOB_NORMALIZATION, n_steps=16, **CAM_LAYER)
    assert same["mean"] > 0.99 and not same["passed"]


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_deleting_top_attributed_pixels_lowers_the_class_probability_faster_than_random(
        trained: SimpleNamespace, method: str) -> None:
    # IG from the blurred image: on this 32 px fixture the black baseline's map is at chance (deletion AUC 0.467
    # against 0.450 for random order, measured; 0.445 with 50 steps) and passed or failed with the library
    # versions; blurred: 0.273. The default (black) is checked at 64 px by benchmarks/bench_explain.py.
    maps = attribution_maps(trained.net, trained.x, (method,), normalization=BLOB_NORMALIZATION, n_steps=16,
                            ig_baseline="blur", **CAM_LAYER)[method]
    result = deletion_insertion(trained.net, trained.x, maps, steps=20, baseline=0.0, seed=0)
    assert result["deletion"].shape == (N_TEST, 21) and result["fractions"][-1] == 1.0
    np.testing.assert_allclose(result["deletion"][:, 0], result["insertion"][:, -1], atol=1e-5)  # both = full image
    assert result["deletion_auc"] < result["deletion_auc_random"], result
    assert result["insertion_auc"] > result["insertion_auc_random"], result


# ---------------------------------------------------------------------------------------------------------------
# figures and the evaluator handler
# ---------------------------------------------------------------------------------------------------------------
def _hot_corner_maps() -> dict[str, np.ndarray]:
    """Maps of a 40×60 (H × W) image, each 0 but for one hot corner cell: Grad-CAM's coarse 4×6 map hot at the
    top right, a full-resolution 40×60 map hot at the bottom left — a transposed or flipped overlay moves them."""
    coarse = np.zeros((4, 6))
    coarse[0, -1] = 1.0
    fine = np.zeros((40, 60))
    fine[-10:, :10] = 1.0
    return {"gradcam": coarse, "integrated_gradients": fine}


def _assert_hot_at(overlay: np.ndarray, hot: tuple[int, int], cold: tuple[int, int]) -> None:
    """``overlay`` of a grey 40×60 image: red (jet's top) at pixel ``hot``, blue (jet's bottom) at ``cold``."""
    assert overlay.shape == (40, 60, 3) and overlay.dtype == np.uint8
    r, _, b = (int(v) for v in overlay[hot])
    assert r > b + 40, (hot, overlay[hot])
    r, _, b = (int(v) for v in overlay[cold])
    assert b > r + 40, (cold, overlay[cold])


# (row, column) of the hot and of the opposite corner of each map of _hot_corner_maps
_CORNERS = {"gradcam": ((2, 57), (37, 2)), "integrated_gradients": ((37, 2), (2, 57))}


def test_overlay_and_explanation_figure(tmp_path: Path) -> None:
    """The overlay keeps the map's orientation on a non-square image (rows = height, columns = width)."""
    from mednet.reports.explanation_figure import overlay_heatmap, plot_explanation

    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    maps = _hot_corner_maps()
    for method, heat in maps.items():
        _assert_hot_at(overlay_heatmap(image, heat, alpha=0.45), *_CORNERS[method])
    np.testing.assert_array_equal(overlay_heatmap(image, maps["gradcam"], alpha=0.0), image)
    png = plot_explanation(image, maps, tmp_path / "x.png", "pred mel p=0.83, true nv")
    assert png.is_file() and png.stat().st_size > 1000


def test_explanation_figure_shows_the_image_and_each_overlay(monkeypatch) -> None:
    import mednet.reports.explanation_figure as explanation_figure
    from mednet.reports.explanation_figure import plot_explanation

    figures = kept_figures(monkeypatch, explanation_figure)
    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    image[0, 0] = (255, 0, 0)  # a marked pixel: the image panel shows the image as it is, not transposed
    maps = _hot_corner_maps()
    plot_explanation(image, maps, "unused.png", "pred mel p=0.83, true nv", resolutions={"gradcam": (4, 6)})
    ((fig, axes),) = [(f, f.axes) for f in figures]
    assert fig.get_suptitle() == "pred mel p=0.83, true nv"
    assert [ax.get_title() for ax in axes] == ["image", "Grad-CAM\n(4×6 map)", "Integrated Gradients\n(40×60 map)"]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), image)  # the image as it is, no overlay
    for ax, method in zip(axes[1:], maps):  # each panel: its map's overlay, hot where the map is
        _assert_hot_at(np.asarray(ax.images[0].get_array()), *_CORNERS[method])


def _drawn_explanations(trained: SimpleNamespace, images: torch.Tensor, out: Path, monkeypatch,
                        **options: object) -> tuple[pd.DataFrame, dict[str, tuple[str, dict]]]:
    """An ExplanationWriter (Grad-CAM and IG, classes red/green/blue/yellow, T = 1.5) over ``images``: its table and
    ``{image_id: (figure title, maps)}`` as handed to the figure (not written: the maps are what is compared)."""
    import mednet.reports.explanation_figure as explanation_figure
    from monai.engines import SupervisedEvaluator

    from mednet.data.lesion_images import MixingPrepareBatch
    from mednet.engines.explanation_writer import ExplanationWriter

    drawn: dict[str, tuple[str, dict]] = {}

    def keep(image, maps, png, title="", **kwargs):
        drawn[Path(png).stem] = (title, {m: np.array(v) for m, v in maps.items()})
        return Path(png)

    monkeypatch.setattr(explanation_figure, "plot_explanation", keep)
    items = [{"image": x, "label": torch.tensor(-1), "image_id": f"img{i}", "path": ""} for i, x in enumerate(images)]
    writer = ExplanationWriter(out, ["red", "green", "blue", "yellow"], methods=["gradcam", "integrated_gradients"],
                               temperature=1.5, normalization=BLOB_NORMALIZATION, n_steps=8, **options)
    SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=torch.utils.data.DataLoader(items, batch_size=3),
                        network=trained.net, decollate=False, prepare_batch=MixingPrepareBatch(),
                        val_handlers=[writer]).run()
    return pd.read_csv(out / "explanations.csv", keep_default_na=False), drawn


def test_explanation_writer_explains_the_requested_target_class_in_every_image(trained: SimpleNamespace,
                                                                             tmp_path: Path, monkeypatch) -> None:
    with torch.no_grad():
        logits = trained.net(trained.x)
    pred = logits.argmax(1)
    chosen = np.flatnonzero(pred == 1)[:2].tolist() + np.flatnonzero(pred != 1)[:4].tolist()
    assert len(chosen) == 6  # images predicted green and images predicted otherwise
    images = trained.x[chosen]
    default, default_maps = _drawn_explanations(trained, images, tmp_path / "predicted", monkeypatch)
    table, maps = _drawn_explanations(trained, images, tmp_path / "green", monkeypatch, target_class="green")
    assert list(table["target"]) == ["green"] * 6 and list(table["prediction"]) == list(default["prediction"])
    expected = (logits[chosen] / 1.5).softmax(1)[:, 1].numpy()
    np.testing.assert_allclose(table["target_probability"], expected, atol=1e-6)
    for i, (image_id, prediction) in enumerate(zip(table["image_id"], table["prediction"])):
        title, green = maps[image_id]
        assert title.endswith("; maps for green") == (prediction != "green"), title
        difference = max(float(np.abs(green[m] - default_maps[image_id][1][m]).max()) for m in green)
        if prediction == "green":  # the same class explained: the same maps
            assert difference < 1e-6, image_id
        else:
            assert difference > 0.05, image_id


def test_explanation_writer_on_an_evaluator(trained: SimpleNamespace, tmp_path: Path) -> None:
    from monai.engines import SupervisedEvaluator

    from mednet.data.lesion_images import MixingPrepareBatch
    from mednet.engines.explanation_writer import ExplanationWriter

    classes = ["red", "green", "blue", "yellow"]
    items = [{"image": trained.x[i], "label": trained.labels[i] if i % 2 else torch.tensor(-1),
              "image_id": f"img{i}", "path": f"/data/img{i}.png"} for i in range(7)]
    loader = torch.utils.data.DataLoader(items, batch_size=3, shuffle=False)
    writer = ExplanationWriter(tmp_path / "explain", classes, methods=["gradcam", "integrated_gradients"],
                               max_images=5, temperature=1.5, normalization=BLOB_NORMALIZATION, n_steps=8)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=trained.net,
                                    decollate=False, prepare_batch=MixingPrepareBatch(), val_handlers=[writer])
    evaluator.run()
    out = tmp_path / "explain"
    assert sorted(p.name for p in out.glob("*.png")) == [f"img{i}.png" for i in range(5)]  # stopped at max_images
    table = pd.read_csv(out / "explanations.csv", keep_default_na=False)
    assert list(table["image_id"]) == [f"img{i}" for i in range(5)]
    assert set(table["prediction"]) <= set(classes) and (table["target"] == table["prediction"]).all()
    assert ((table["probability"] > 0) & (table["probability"] <= 1)).all()
    assert table.loc[0, "label"] == "" and table.loc[1, "label"] == classes[int(trained.labels[1])]
    assert set(table["resolution_gradcam"]) == {"4x4"} and set(table["resolution_integrated_gradients"]) == {"32x32"}
    with torch.no_grad():  # calibrated: softmax(logits / T)
        p = (trained.net(trained.x[:1]) / 1.5).softmax(1).max().item()
    assert table.loc[0, "probability"] == pytest.approx(p, abs=1e-5)
    timing = pd.read_csv(out / "timing.csv")
    assert list(timing["method"]) == ["gradcam", "integrated_gradients"] and (timing["n_images"] == 5).all()
    assert (timing["seconds_per_image"] > 0).all()
    with pytest.raises(Exception, match="already exists"):  # never overwritten
        ExplanationWriter(out, classes)
    with pytest.raises(OptionError, match="--target_class.*'purple'"):
        ExplanationWriter(tmp_path / "other", classes, target_class="purple")


def _explain(out: Path, ids: list[str], **options: object) -> pd.DataFrame:
    """Run an ExplanationWriter on an untrained network over images named ``ids`` (batches of 2); its table."""
    from monai.engines import SupervisedEvaluator

    from mednet.data.lesion_images import MixingPrepareBatch
    from mednet.engines.explanation_writer import ExplanationWriter

    torch.manual_seed(0)
    net = build_classifier("receptive_field_cnn", 4, S).eval()
    items = [{"image": torch.randn(3, S, S), "label": torch.tensor(-1), "image_id": i, "path": f"/d/{i}.jpg"}
             for i in ids]
    writer = ExplanationWriter(out, ["a", "b", "c", "d"], methods=["gradcam"], **options)
    SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=torch.utils.data.DataLoader(items, batch_size=2),
                        network=net, decollate=False, prepare_batch=MixingPrepareBatch(),
                        val_handlers=[writer]).run()
    return pd.read_csv(out / "explanations.csv", keep_default_na=False)


def test_explanation_pngs_of_ids_that_sanitise_alike_are_distinct(tmp_path: Path) -> None:
    """``IMG 1.jpg`` and ``IMG_1.jpg`` of one folder: one figure each (``-2`` in input order), each row its own."""
    ids = ["lesion a", "lesion_a", "Lesion_A", "x"]
    table = _explain(tmp_path / "explain", ids)
    assert list(table["image_id"]) == ids
    assert list(table["png"]) == ["lesion_a.png", "lesion_a-2.png", "Lesion_A-3.png", "x.png"]
    assert sorted(p.name for p in (tmp_path / "explain").glob("*.png")) == sorted(table["png"])
    again = _explain(tmp_path / "explain", ids, overwrite=True)  # the same names again
    assert list(again["png"]) == list(table["png"])


def test_explanation_writer_refuses_an_existing_png_before_writing_anything(tmp_path: Path) -> None:
    """A figure of a later batch that exists already stops the run before the first figure is written."""
    out = tmp_path / "explain"
    out.mkdir()
    (out / "d.png").write_bytes(b"earlier")
    with pytest.raises(Exception, match="already exists"):
        _explain(out, ["a", "b", "c", "d"])
    assert [p.name for p in out.iterdir()] == ["d.png"] and (out / "d.png").read_bytes() == b"earlier"


def test_explanation_writer_creates_its_folder_only_with_the_first_figure(tmp_path: Path, monkeypatch) -> None:
    """A run failing before its first figure (here: in the attribution of the first batch) leaves no folder."""
    import mednet.engines.explanation_writer as explanation_writer

    def fail(*args, **kwargs):
        raise RuntimeError("attribution failed")

    monkeypatch.setattr(explanation_writer, "attribution_maps_timed", fail)
    with pytest.raises(RuntimeError, match="attribution failed"):
        _explain(tmp_path / "explain", ["a", "b"])
    assert not (tmp_path / "explain").exists()


# ---------------------------------------------------------------------------------------------------------------
# explain.json through python -m monai.bundle run
# ---------------------------------------------------------------------------------------------------------------
def _run_folder(tmp_path: Path, model: str = "receptive_field_cnn") -> tuple[Path, Path]:
    """A trained-run folder (untrained ``model`` at 32 px, 7 classes, T = 1.5) and a folder of three images."""
    from PIL import Image

    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    torch.save(build_classifier(model, 7, S).state_dict(), run / "model.pt")
    settings = {"model": model, "image_size": S, "cifar_stem": None, "cosine_head": False,
                "batch_norm": True, "class_names": CLASSES7,
                "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, "augmentation": "none"}
    (run / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    (run / "calibration.json").write_text(json.dumps({"temperature": 1.5, "referral": {"threshold": 0.5}}),
                                          encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"lesion_{i}.jpg")
    return run, images


def test_explain_bundle_on_a_run_folder(tmp_path: Path) -> None:
    from _bundle_cli import bundle_error_line, run_bundle_cli

    run, images = _run_folder(tmp_path)
    proc = run_bundle_cli("dermoscopy_classification", "explain", "--ckpt_path", str(run), "--input", str(images),
                          "--n_steps", "8", "--n_samples", "4")
    (out,) = [p for p in run.iterdir() if p.name.startswith("explain-")]
    assert str(out) in proc.stdout
    assert sorted(p.name for p in out.glob("*.png")) == [f"lesion_{i}.png" for i in range(3)]
    table = pd.read_csv(out / "explanations.csv")
    assert len(table) == 3 and set(table["prediction"]) <= set(CLASSES7) and (table["temperature"] == 1.5).all()
    assert list(pd.read_csv(out / "timing.csv")["method"]) == list(EXPLAIN_METHODS)
    line = bundle_error_line("dermoscopy_classification", "explain", ckpt_path=str(run), input=str(images),
                             methods=["gradcam", "lime"])  # in-process: the command line was run once above
    assert line.startswith("mednet error: --methods")
    assert len([p for p in run.iterdir() if p.name.startswith("explain-")]) == 1  # refused before any output


def test_explain_bundle_failures_leave_no_folder_and_layer_null_is_the_default(tmp_path: Path) -> None:
    """In-process runs of explain.json on a ResNet run: a layer modified in place is refused in initialize, an
    unreadable first image fails the run — neither leaves an ``explain-*`` folder — and ``--layer null`` (as the
    docs write it) explains at the default layer."""
    from _bundle_cli import bundle_error_line

    from mednet.app.bundles import run_bundle

    run, images = _run_folder(tmp_path, "resnet18")
    fast = {"methods": ["gradcam"], "n_steps": 4, "n_samples": 2}
    line = bundle_error_line("dermoscopy_classification", "explain", ckpt_path=str(run), input=str(images),
                             layer="layer4.1.bn2", **fast)
    assert line.startswith("mednet error: --layer: ") and "modified in place" in line and "'layer4.1'" in line, line
    broken = tmp_path / "broken"
    broken.mkdir()
    for i, path in enumerate(sorted(images.iterdir())):
        (broken / path.name).write_bytes(b"not an image" if i == 0 else path.read_bytes())
    line = bundle_error_line("dermoscopy_classification", "explain", ckpt_path=str(run), input=str(broken), **fast)
    assert line.startswith(f"mednet error: {broken / 'lesion_0.jpg'}: cannot decode image"), line
    assert not [p for p in run.iterdir() if p.name.startswith("explain-")]
    run_bundle("dermoscopy_classification", "explain", ckpt_path=str(run), input=str(images), layer="null", **fast)
    (out,) = [p for p in run.iterdir() if p.name.startswith("explain-")]
    assert set(pd.read_csv(out / "explanations.csv")["resolution_gradcam"]) == {"4x4"}  # layer4 at 32 px
