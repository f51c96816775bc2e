"""Every bundle config meets MONAI's bundle contract: ``ConfigWorkflow.check_properties()`` finds nothing missing.

MONAI's check resolves each required property (``hasattr(workflow, "dataset")`` instantiates the dataset, i.e.
reads every volume or extracts patches). Here the resolution is replaced by an existence check of the property's
config id — what the contract is about — so the test needs no data and instantiates nothing; MONAI's own logic
still decides which properties are required and whether optional ones are referenced by the expected ids.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from monai.bundle import ConfigWorkflow
from monai.bundle.properties import InferProperties, TrainProperties
from monai.utils import BundlePropertyConfig

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_TYPES = {"train": "train", "distill": "train", "evaluate": "infer", "calibrate": "infer", "inference": "infer",
                  "ensemble": "infer", "explain": "infer"}
CONFIGS = sorted(p for p in (REPO / "bundles").glob("*/configs/*.json") if p.stem in WORKFLOW_TYPES)
# overrides (model-zoo style), merged after their base: evaluate/calibrate override inference, distill overrides train
BASES = {"evaluate": "inference", "calibrate": "inference", "distill": "train"}


def _config_id_only(self: ConfigWorkflow, name: str, property: dict) -> str:
    """``_get_property`` without instantiation: the property's id, or AttributeError (so ``hasattr`` is False)."""
    prop_id = property[BundlePropertyConfig.ID]
    if prop_id not in self.parser:
        raise AttributeError(name)
    return prop_id


def test_bundle_json_files_are_ascii() -> None:
    """MONAI opens config and metadata files without an encoding, i.e. with the locale's: under a C/POSIX locale
    (CI, containers) a single "≈" in a changelog makes every run of the bundle fail with UnicodeDecodeError."""
    files = sorted((REPO / "bundles").glob("*/configs/*.json")) + sorted((REPO / "bundles").glob("common/*.json"))
    assert files
    for path in files:
        text = path.read_bytes()
        bad = next((i for i, b in enumerate(text) if b > 127), None)
        assert bad is None, f"{path}: non-ASCII byte at offset {bad}: {text[max(0, bad - 40):bad + 10]!r}"


def test_every_bundle_has_configs_to_check() -> None:
    bundles = {p.parent.parent.name for p in CONFIGS}
    assert "brain_tissue_fcn" in bundles
    for bundle in bundles:
        assert {p.stem for p in CONFIGS if p.parent.parent.name == bundle} >= {"train", "inference"}, bundle


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_monai_property_check_passes(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # % macros are relative to the checkout root
    workflow_type = WORKFLOW_TYPES[config.stem]
    files = [str(config.parent / f"{BASES[config.stem]}.json")] if config.stem in BASES else []
    files.append(str(config))
    wf = ConfigWorkflow(config_file=files, meta_file=str(config.parent / "metadata.json"), logging_file=False,
                        workflow_type=workflow_type)
    wf.parser.parse(reset=True)  # what initialize() does before running its expressions: resolve the % macros
    with mock.patch.object(ConfigWorkflow, "_get_property", _config_id_only):
        assert wf.check_properties() == []
    # and the optional properties the configs define are there under MONAI's ids (not only absent-and-unchecked)
    expected = {"train": ["train_handlers", "train_key_metric", "evaluator", "val_interval", "val_handlers",
                          "val_key_metric", "network_def"],
                "infer": ["handlers", "postprocessing", "network_def", "dataset_dir"]}[workflow_type]
    properties = TrainProperties if workflow_type == "train" else InferProperties
    for name in expected:
        assert properties[name][BundlePropertyConfig.ID] in wf.parser, name
