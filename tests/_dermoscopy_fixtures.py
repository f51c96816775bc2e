"""Fixture files shared by the dermoscopy tests: a DICOM photograph carrying identifiers, a tiny synthetic split,
the probabilities of a run computed without the project's code, and a figure kept for its panels to be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: identifiers written into every fixture DICOM; they must never reach an output
PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-98765"
#: Dermoscopic Photography Image Storage
DERMOSCOPY_SOP = "1.2.840.10008.5.1.4.1.1.77.1.7"


def write_dicom(path: Path, rgb: np.ndarray, photometric: str = "RGB", sop: str = DERMOSCOPY_SOP,
                frames: int = 1) -> Path:
    """A DICOM photograph of ``rgb`` ``(H, W, 3)`` uint8 with :data:`PATIENT_NAME` and :data:`PATIENT_ID`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, PATIENT_ID, "XC"
    if photometric.startswith("MONOCHROME"):
        pixels = rgb[..., 0]
    elif photometric == "RGB":
        pixels = rgb
    else:
        pixels = convert_color_space(rgb, "RGB", "YBR_FULL")
    if frames > 1:
        pixels = np.stack([pixels] * frames)
    ds.set_pixel_data(pixels, photometric, 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def synthetic_split(root: Path, n_images: int, size: int = 32, seed: int = 0) -> Path:
    """A synthetic dermoscopy set under ``root/synthetic`` and its lesion-grouped split folder ``root/split``."""
    from mednet.data.lesion_split import prepare_dermoscopy_split
    from mednet.data.synthetic_dermoscopy import generate_synthetic_dermoscopy

    metadata = generate_synthetic_dermoscopy(root / "synthetic", n_images=n_images, size=size, seed=seed)
    return prepare_dermoscopy_split(metadata, root / "split", images=str(root / "synthetic" / "images"),
                                    seed=0).parent


def independent_probabilities(run: Path, image_path: Path, mean: list[float], std: list[float],
                              temperature: float = 1.0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, softmax(logits / T))`` of ``run``'s receptive_field_cnn (7 classes) without the app's code: PIL
    decode, centre crop, bicubic resize to ``size``, ``(x / 255 − mean) / std``, the network rebuilt from the saved
    state dict."""
    import torch
    from PIL import Image

    from mednet.networks import build_classifier

    with Image.open(image_path) as img:
        img = img.convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    network = build_classifier("receptive_field_cnn", 7, size)
    network.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    network.eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(x).permute(2, 0, 1)[None]).double()[0]
    return logits.numpy(), torch.softmax(logits / temperature, 0).numpy()


def kept_figures(monkeypatch, *modules) -> list:
    """Replace ``save_figure`` in each of ``modules`` by one that keeps the figure (appended to the returned list,
    in drawing order) instead of writing it, so a test reads its bars, lines and titles. The figure is released
    from pyplot as the real writer does; its artists stay readable."""
    import matplotlib.pyplot as plt

    figures: list = []

    def keep(fig, png, dpi):
        plt.close(fig)
        figures.append(fig)
        return Path(png)

    for module in modules:
        monkeypatch.setattr(module, "save_figure", keep)
    return figures
