"""Export: MONAI's ``ckpt_export`` (TorchScript) and ``verify_net_in_out`` work for every FCN variant, and the
exported model computes what the eager model computes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out

from mednet.networks import FCN_VARIANTS, TissueFCN

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "brain_tissue_fcn" / "configs"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # bundle configs reference shared fragments relative to the repository root


@pytest.mark.parametrize("variant", FCN_VARIANTS)
def test_ckpt_export_matches_eager(variant: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TissueFCN(variant=variant, base_channels=8)
    # non-trivial batch-norm statistics, so eval mode is really exercised
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 1, 16, 16))
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts = tmp_path / f"{variant}.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(ckpt), meta_file=str(CONFIGS / "metadata.json"),
                config_file=str(CONFIGS / "train.json"), variant=variant, base_channels=8)
    assert ts.is_file()
    exported = torch.jit.load(str(ts), map_location="cpu").eval()
    net.eval()
    for shape in ((4, 1, 16, 16), (2, 1, 197, 233)):
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), net(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", FCN_VARIANTS)
def test_verify_net_in_out(variant: str) -> None:
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "train.json"), variant=variant, n=2)
