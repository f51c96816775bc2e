"""Decoding of damaged, oversized and multi-picture image files by :func:`mednet.data.dermoscopy.load_rgb`.

Every decoder failure reaches the caller as one ``DataError`` naming the file (never a pydicom or Pillow
traceback): DICOM element values damaged where pydicom only converts them on access, an unknown value
representation, a TIFF whose second page has no size. Images declaring more than ``MAX_IMAGE_PIXELS`` are refused
from their header, before any pixel is decoded (a decompression bomb). A JPEG with an MPF segment (Pillow's MPO) is
read as its primary image. A photograph's EXIF orientation is applied (the image as a viewer shows it), a CMYK JPEG
comes out RGB, MONOCHROME1 DICOM is inverted, and a DICOM without pixels, with a photometric interpretation the
reader does not convert, or a GIF/TIFF of several pictures is refused naming the file.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from _dermoscopy_fixtures import write_dicom

import mednet.data.dermoscopy as dermoscopy
from mednet.data.dermoscopy import MAX_IMAGE_PIXELS, load_rgb, read_dermoscopy_dicom
from mednet.errors import DataError


def _rgb(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _replace_once(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert raw.count(old) == 1, f"{old!r} found {raw.count(old)} times"
    return raw.replace(old, new)


# ---------------------------------------------------------------------------------------------------- damaged DICOM
@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_dicom_with_a_non_numeric_number_of_frames_is_a_data_error(tmp_path: Path) -> None:
    """pydicom converts NumberOfFrames (IS) only when it is read, after ``dcmread`` returned: "1x" → ValueError."""
    path = write_dicom(tmp_path / "frames.dcm", _rgb())
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 1
    ds.save_as(path)
    path.write_bytes(_replace_once(path.read_bytes(), b"IS\x02\x001 ", b"IS\x02\x001x"))
    with pytest.raises(DataError, match=r"frames\.dcm: cannot decode image: .*NumberOfFrames.*'1x'"):
        load_rgb(path)


@pytest.mark.parametrize("tag", [b"\x02\x00\x10\x00UI",  # file meta: Transfer Syntax UID
                                 b"\x08\x00\x16\x00UI"],  # dataset: SOP Class UID, read lazily
                         ids=["file_meta", "dataset"])
def test_dicom_with_an_unknown_value_representation_is_a_data_error(tmp_path: Path, tag: bytes) -> None:
    path = write_dicom(tmp_path / "vr.dcm", _rgb())
    path.write_bytes(_replace_once(path.read_bytes(), tag, tag[:4] + b"ZZ"))
    with pytest.raises(DataError, match=r"vr\.dcm: cannot decode image: .*Unknown Value Representation 'ZZ'"):
        read_dermoscopy_dicom(path)


def test_damaged_tiff_page_is_a_data_error(tmp_path: Path) -> None:
    """Counting the pages of a TIFF whose second page lacks ImageWidth raises TypeError("Missing dimensions")."""
    buffer = io.BytesIO()
    Image.fromarray(_rgb(4, 5)).save(buffer, format="TIFF", save_all=True, append_images=[Image.fromarray(_rgb(4, 5))])
    raw = bytearray(buffer.getvalue())
    first = struct.unpack("<I", raw[4:8])[0]
    entries = struct.unpack("<H", raw[first:first + 2])[0]
    second = struct.unpack("<I", raw[first + 2 + 12 * entries:first + 6 + 12 * entries])[0]
    for k in range(struct.unpack("<H", raw[second:second + 2])[0]):
        at = second + 2 + 12 * k
        if struct.unpack("<H", raw[at:at + 2])[0] == 256:  # ImageWidth → a private tag: the width is gone
            raw[at:at + 2] = struct.pack("<H", 65000)
    path = tmp_path / "pages.tif"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"pages\.tif: cannot decode image: TypeError: Missing dimensions"):
        load_rgb(path)


# ---------------------------------------------------------------------------------------------------- size limit
def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A 1×1 PNG whose header (IHDR, CRC fixed) declares ``width × height``: a few bytes claiming a huge image."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(buffer, format="PNG")
    raw = bytearray(buffer.getvalue())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr:ihdr + 17])))
    path.write_bytes(bytes(raw))
    return path


def test_limit_covers_dermoscopy_photographs_and_stays_under_pillows() -> None:
    # a 50 MP camera's photograph fits; below Pillow's limit, which only warns (errors at twice it)
    assert 8192 * 6144 <= MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS


def test_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path: Path) -> None:
    """9000 × 9000 = 81 M pixels: below Pillow's warning (89 M) yet 243 MB decoded; refused from the header."""
    path = _png_declaring(tmp_path / "bomb.png", 9000, 9000)
    assert path.stat().st_size < 100
    with pytest.raises(DataError, match=rf"bomb\.png: image is 9000×9000 px \(81,000,000 pixels\), more than the "
                                        rf"{MAX_IMAGE_PIXELS:,} pixels accepted"):
        load_rgb(path)


def test_pixel_limit_applies_to_photographs_at_the_boundary(tmp_path: Path, monkeypatch) -> None:
    rgb = _rgb(20, 30)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    monkeypatch.setattr(dermoscopy, "MAX_IMAGE_PIXELS", 600)
    np.testing.assert_array_equal(load_rgb(path), rgb)  # exactly at the limit: read
    monkeypatch.setattr(dermoscopy, "MAX_IMAGE_PIXELS", 599)
    with pytest.raises(DataError, match=r"photo\.png: image is 30×20 px \(600 pixels\), more than the 599 pixels"):
        load_rgb(path)


def test_dicom_declaring_a_huge_size_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    rgb = _rgb(20, 30)
    path = write_dicom(tmp_path / "scan.dcm", rgb)
    monkeypatch.setattr(dermoscopy, "MAX_IMAGE_PIXELS", 600)
    np.testing.assert_array_equal(read_dermoscopy_dicom(path), rgb)
    monkeypatch.setattr(dermoscopy, "MAX_IMAGE_PIXELS", 599)
    with pytest.raises(DataError, match=r"scan\.dcm: image is 30×20 px \(600 pixels\), more than the 599 pixels"):
        load_rgb(path)

    # the header alone decides: 60000 × 60000 declared over 1,800 bytes of pixel data, refused before pixel_array
    monkeypatch.undo()
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 60000
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb)
    monkeypatch.setattr("pydicom.pixels.pixel_array", lambda *a, **k: pytest.fail("pixel data decoded"))
    with pytest.raises(DataError, match=r"bomb\.dcm: image is 60000×60000 px \(3,600,000,000 pixels\), more than "
                                        rf"the {MAX_IMAGE_PIXELS:,} pixels accepted"):
        read_dermoscopy_dicom(bomb)


# ---------------------------------------------------------------------------------------------------- MPO JPEG
def test_mpo_jpeg_gives_its_primary_image(tmp_path: Path) -> None:
    """Phones and depth cameras write JPEGs with an MPF segment; Pillow opens them as 2-frame "MPO" images."""
    primary = np.zeros((40, 48, 3), np.uint8)
    primary[:, :24] = (200, 40, 30)
    primary[:, 24:] = (20, 60, 180)
    second = np.full((40, 48, 3), 255, np.uint8)  # a second view unlike the primary image
    path = tmp_path / "phone.jpg"
    Image.fromarray(primary).save(path, format="MPO", save_all=True, append_images=[Image.fromarray(second)],
                                  quality=95)
    with Image.open(path) as img:
        assert img.format == "MPO" and img.n_frames == 2
    plain = tmp_path / "plain.jpg"
    Image.fromarray(primary).save(plain, quality=95)  # the same pixels through the same encoder, without MPF
    out = load_rgb(path)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, load_rgb(plain))
    assert np.abs(out[:, :20].astype(int) - (200, 40, 30)).max() <= 4  # the primary's colours, not the white view


# ---------------------------------------------------------------------------------------------------- orientation, colour
def _quadrants(h: int = 16, w: int = 32) -> np.ndarray:
    """An asymmetric image: four colours, one per quadrant (every rotation and mirror of it differs)."""
    image = np.zeros((h, w, 3), np.uint8)
    image[: h // 2, : w // 2], image[: h // 2, w // 2:] = (220, 30, 30), (30, 200, 40)
    image[h // 2:, : w // 2], image[h // 2:, w // 2:] = (40, 40, 210), (230, 220, 20)
    return image


# EXIF Orientation (TIFF 6.0 tag 274): 3 = stored upside down, 6 = the viewer turns it 90° clockwise, 8 = 90°
# counter-clockwise; np.rot90 turns counter-clockwise for k > 0
@pytest.mark.parametrize(("orientation", "k"), [(3, 2), (6, -1), (8, 1)])
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int, k: int) -> None:
    image = _quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    turned, plain = tmp_path / "turned.jpg", tmp_path / "plain.jpg"
    Image.fromarray(image).save(turned, quality=100, subsampling=0, exif=exif)
    Image.fromarray(image).save(plain, quality=100, subsampling=0)  # the same pixels, no orientation tag
    out = load_rgb(turned)
    assert out.shape == np.rot90(image, k).shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.rot90(load_rgb(plain), k))  # the same decode, turned
    assert np.abs(out.astype(int) - np.rot90(image, k)).max() <= 8  # and the direction is the tag's


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    cmyk.paste((0, 0, 0, 128), (0, 3, 8, 6))  # black at half: grey
    cmyk.save(path, quality=100)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    out = load_rgb(path)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert np.abs(out[:3].astype(int) - (255, 0, 0)).max() <= 3
    assert np.abs(out[3:].astype(int) - 127).max() <= 3


# ---------------------------------------------------------------------------------------------------- decode branches
def test_monochrome1_dicom_is_inverted(tmp_path: Path) -> None:
    """MONOCHROME1: the minimum is displayed white; the photograph is returned as MONOCHROME2 would show it."""
    grey = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    path = write_dicom(tmp_path / "mono1.dcm", np.repeat(grey[..., None], 3, axis=2), "MONOCHROME1")
    out = load_rgb(path)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], 255 - grey)


def _edited_dicom(path: Path, edit) -> Path:
    ds = pydicom.dcmread(write_dicom(path, _rgb(4, 6)))
    edit(ds)
    ds.save_as(path)
    return path


def test_dicom_without_pixel_data_is_refused(tmp_path: Path) -> None:
    path = _edited_dicom(tmp_path / "empty.dcm", lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(DataError, match=r"empty\.dcm: the DICOM file holds no pixel data") as err:
        load_rgb(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("photometric", ["PALETTE COLOR", "YBR_ICT"])
def test_dicom_with_an_unsupported_photometric_interpretation_is_refused(tmp_path: Path, photometric: str) -> None:
    def set_photometric(ds) -> None:
        ds.PhotometricInterpretation = photometric

    path = _edited_dicom(tmp_path / "odd.dcm", set_photometric)
    with pytest.raises(DataError, match=rf"odd\.dcm: unsupported photometric interpretation '{photometric}' "
                                        r"\(expected RGB, YBR_FULL, YBR_FULL_422 or MONOCHROME1/2\)"):
        load_rgb(path)


@pytest.mark.parametrize("name", ["animated.gif", "pages.tif"])
def test_a_photograph_file_of_several_pictures_is_refused(tmp_path: Path, name: str) -> None:
    """A GIF animation or a 2-page TIFF: which page is the photograph is unknown (an MPO JPEG's is frame 0)."""
    path = tmp_path / name
    first, second = Image.fromarray(_rgb(8, 8, seed=1)), Image.fromarray(_rgb(8, 8, seed=2))
    first.save(path, save_all=True, append_images=[second])
    with pytest.raises(DataError, match=rf"{re.escape(name)}: multi-frame image \(2 frames\); expected one "
                                        "photograph") as err:
        load_rgb(path)
    assert err.value.path == str(path)
