"""Fixture files shared by the dermoscopy tests: a DICOM photograph carrying identifiers, a tiny synthetic split."""

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
