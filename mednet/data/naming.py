"""Output names for input volumes: the shortest name that tells every input of a list apart.

BIDS-like trees hold many files with the same name in different folders (``subA/anat/T1w.nii.gz``,
``subB/anat/T1w.nii.gz``); naming outputs by file name alone silently overwrites slices and makes inference
refuse its own first output. :func:`unique_names` gives each path its file name without the image suffix
(:func:`volume_stem`) and, **only where names collide**, prefixes parent folders one at a time until they
differ: ``subA/anat/T1w.nii.gz``, ``subB/anat/T1w.nii.gz``, ``x/flair.nii.gz`` → ``subA_anat_T1w``,
``subB_anat_T1w``, ``flair``. Every job that names outputs after inputs (slices, predictions, report figures,
per-volume rows) uses these names, carried in the item dictionaries as ``"name"`` (:func:`with_names`).

Written here because neither MONAI nor Ignite has it: MONAI's ``SaveImage`` names outputs by file name
(``separate_folder`` mirrors one parent folder, always, and still collides one level up).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "DICOM_SUFFIXES", "NIFTI_SUFFIXES", "MGH_SUFFIXES", "NIBABEL_SUFFIXES", "VOLUME_SUFFIXES",
           "PHOTO_SUFFIXES", "ARRAY_SUFFIXES", "volume_stem", "unique_names", "with_names", "NAME_KEY"]

# The project's one list of known image file suffixes (lower case; longest first where one ends another).
#: NIfTI files (read with nibabel)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: FreeSurfer volumes (``mri_convert``/``recon-all`` output): read with nibabel, SimpleITK has no reader for them
MGH_SUFFIXES = (".mgz", ".mgh")
#: volumes read with nibabel
NIBABEL_SUFFIXES = NIFTI_SUFFIXES + MGH_SUFFIXES
#: 3D volumes: NIfTI, FreeSurfer MGH, MetaImage, NRRD, DICOM files (a DICOM *series* is a folder)
VOLUME_SUFFIXES = NIBABEL_SUFFIXES + (".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
#: 2D colour photographs (dermoscopy): Pillow formats; DICOM dermoscopy files use ``.dcm``
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: NumPy arrays written by mednet (slices, patches) and DermaMNIST
ARRAY_SUFFIXES = (".npz", ".npy")
#: file name endings taken as DICOM (``.dcm`` is also a volume suffix; a file of another name is DICOM by its marker)
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
#: every suffix stripped from names
IMAGE_SUFFIXES = VOLUME_SUFFIXES + DICOM_SUFFIXES[1:] + PHOTO_SUFFIXES + ARRAY_SUFFIXES
#: item-dictionary key holding the output name of a volume
NAME_KEY = "name"
_SEP = "_"


def volume_stem(path: str | os.PathLike) -> str:
    """``/x/sub-001.nii.gz`` → ``sub-001``; a DICOM series folder ``/x/series7/`` → ``series7``.

    The path is made absolute first (not resolved, as :func:`_parents`), so ``.`` or ``..`` given for a series
    folder (``--input .`` run inside it) is named after that folder, not ``""`` (an output called ``_seg.nii.gz``).
    """
    name = Path(os.path.abspath(os.fspath(path).rstrip("/\\") or os.sep)).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _parents(path: str | os.PathLike) -> list[str]:
    """Folder names above the file, nearest first (``/a/b/c.nii`` → ``["b", "a"]``); the path is made absolute
    (not resolved: a symlinked folder keeps the name the user gave it), so relative and absolute spellings agree."""
    parts = Path(os.path.abspath(os.fspath(path).rstrip("/\\"))).parts[:-1]
    return [p for p in reversed(parts) if p not in ("/", "\\") and not p.endswith((":\\", ":/"))]


def unique_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct output name per path, as short as possible; same input list → same names.

    Start from :func:`volume_stem`; while names collide (compared case-insensitively: ``T1`` and ``t1`` are the
    same file on macOS and Windows), prefix the next parent folder to every colliding name — only those —
    joined with ``_``. This repeats until nothing collides, so a prefixed name that meets another file's own
    name (``subA/T1`` → ``subA_T1`` vs ``x/subA_T1``) is extended too. Paths that stay equal after all their
    folders are used (the same file listed twice, or ``T1.nii`` next to ``T1.nii.gz``) are not prefixed at all
    (no folder tells them apart) and get ``-2``, ``-3``… in list order.

    Args:
        paths: input files or DICOM folders, in the order of the item list.

    Returns:
        ``len(paths)`` names, pairwise different (case-insensitively), without image suffixes.
    """
    stems = [volume_stem(p) for p in paths]
    parents = [_parents(p) for p in paths]
    # paths equal but for the image suffix (or listed twice): no folder can tell them apart
    keys = [(tuple(q.casefold() for q in parents[i]), stems[i].casefold()) for i in range(len(paths))]
    depth = [0] * len(paths)

    def name(i: int) -> str:
        return _SEP.join([*reversed(parents[i][: depth[i]]), stems[i]])

    names = [name(i) for i in range(len(paths))]
    while True:
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n.casefold(), []).append(i)
        grow = [i for g in groups.values() if len({keys[j] for j in g}) > 1 for i in g if depth[i] < len(parents[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
            names[i] = name(i)
    # what is still equal cannot be told apart by its path: number it, keeping the first as it is
    taken = {n.casefold() for n in names}
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n.casefold() in seen:
            k = 2
            while f"{n}-{k}".casefold() in taken:
                k += 1
            names[i] = f"{n}-{k}"
            taken.add(names[i].casefold())
        seen.add(names[i].casefold())
    return names


def _plain_name(name: object) -> bool:
    """A name usable as an output file stem: a non-empty string without folders (a datalist may carry any
    ``name``; ``../x`` would write outside the output folder)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name)


def with_names(items: Sequence[Mapping], key: str = "image", name_key: str = NAME_KEY) -> list[dict]:
    """Copies of ``items`` with ``name_key`` set from :func:`unique_names` of their ``key`` paths.

    Names are set once per list (they depend on the whole list). A list whose items all carry a name already
    (e.g. from :func:`mednet.data.datalist.list_volume_inputs`) keeps it, if those names are distinct; otherwise every
    name is recomputed, so a partly named list cannot produce two equal outputs.
    """
    out = [dict(it) for it in items]
    given = [it.get(name_key) for it in out]
    if all(_plain_name(n) for n in given) and len({n.casefold() for n in given}) == len(given):
        return out
    for it, n in zip(out, unique_names([it[key] for it in out])):
        it[name_key] = n
    return out
