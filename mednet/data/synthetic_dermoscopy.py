"""A procedurally generated, dermoscopy-like image set in the HAM10000 layout (synthetic: no patient, no real lesion).

    generate_synthetic_dermoscopy("demo/derm", n_images=1000, size=64, seed=0)

writes ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,localization``, ``dx_type`` =
``synthetic`` in every row), ``images/<image_id>.jpg`` (RGB, JPEG quality 95) and ``synthetic.json`` (the
generator's settings, class counts and the class overlap below; ``"synthetic": true``). It feeds the tests and
the demo of the dermoscopy pipeline, which reads it exactly as it reads HAM10000 — so every report made from it
must and can say "synthetic" (``dx_type``).

Classes, in this order everywhere: ``akiec, bcc, bkl, df, mel, nv, vasc`` in HAM10000's proportions
(327/514/1099/115/1113/6705/142 of 10,015 images; :func:`allocate_images`), each class at least
:data:`MIN_LESIONS_PER_CLASS` lesions so every class can appear in every split; 1–3 images per lesion (≈ N/2
lesions). The images of one lesion are the same lesion re-drawn with a small change of pose (rotation ±20°,
scale ±10 %, shift), colour, opacity and lighting, with new hair and vignetting — so splits must be grouped by
``lesion_id``, as for HAM10000 (Tschandl et al. 2018, 10,015 images of 7,470 lesions). Ids are ``SYN_L0000001``
(lesion) and ``SYN_0000001`` (image), numbered in random order (an id says nothing about the class) and never
equal to a real ``HAM_…`` / ``ISIC_…`` id.

Each image (``size`` × ``size`` × 3, uint8; all geometry in units of the image half-width, so ``size`` 32…256
draws the same set at another resolution — every random draw except the pixel noise is independent of
``size``):

* skin: a per-lesion (per-"patient") tone, mostly fair as in HAM10000, low-frequency texture, pixel noise, a
  lighting gradient and colour cast; sometimes a dermoscope's dark circular field edge (30 % of images) and
  hair strands (35 %);
* one lesion: a soft mask inside a border ``R(θ) = r0 · (1 + Σ_k a_k cos(kθ + φ_k))`` on polar coordinates of
  a meshgrid — harmonics 1–3 scaled by the lesion's *asymmetry*, 4–12 by its *border irregularity*; a base
  colour; and structures placed in the lesion's own frame (so they move with it from image to image):
  colour blotches (variegation), pigment network (``sin(f u')·sin(f v')`` on warped coordinates — regular or
  broken), dots/globules, milia-like bright dots, blue-grey ovoid nests, blue-white veil, central white patch,
  surface scale, red lacunae and arborising vessels (branching line segments).

Class appearance (the means of the class-specific distributions, :data:`CLASS_PROFILES`): **nv** round,
symmetric, brown with a regular network; **mel** larger, asymmetric, irregular sharp border, several colours
(brown/black/blue-grey), irregular network, peripheral dots, veil; **bkl** tan/light-brown, waxy (sharp
border, translucent), milia-like dots, comedo-like openings, scale; **bcc** pinkish translucent, arborising
vessels, blue-grey ovoid nests, shiny white areas; **akiec** pink-red, scaly, "strawberry" pattern (red
pseudo-network around white follicular openings); **df** small, central white patch, delicate peripheral
network; **vasc** red/purple, round red lacunae.

Classes **overlap on purpose** (so accuracy stays well below 100 % and calibration can be measured); this is
documented in ``synthetic.json`` (:data:`CLASS_OVERLAP`) and works in three ways:

1. every feature parameter is drawn from a class-specific normal distribution (clipped), and neighbouring
   classes' distributions overlap (sizes, asymmetry, colours and structure counts are all shared ranges);
2. mixtures inside a class: 18 % of nv are *atypical* (dysplastic: larger, asymmetric, multi-coloured, like
   mel), 25 % of mel are *early* (small, fairly symmetric, like nv), 30 % of bkl are *lentigo-like* (flat light
   brown with a network, like nv/df); bkl and akiec share scale and bright follicle dots; df and nv share the
   pigment network; bcc and akiec share pink colour and vessels; vasc and bcc share red structures;
3. label-noise-like ambiguity: :data:`AMBIGUOUS_FRACTION` (12 %) of lesions are drawn with the feature
   parameters of a neighbouring class (:data:`NEIGHBOURS`) while keeping their own label.

Measured with this generator (lesion-grouped 70/30 splits; majority class nv = 0.67, chance balanced accuracy
1/7): a class-weighted logistic regression on 27 colour/size statistics of 1000 images at 32 px reaches accuracy
0.46–0.59 and balanced accuracy 0.48–0.62 over seeds 0–2 (``tests/test_synthetic_dermoscopy.py`` checks
0.40 < accuracy < 0.95); a 6-layer CNN (16-32-64 channels, Adam, flips/rot90) trained on 4000 images for 8–12
epochs on one CPU thread reaches accuracy 0.78 / balanced accuracy 0.51–0.57 / ECE 0.04–0.05 at 32 px and
0.80 / 0.55 / 0.09 at 64 px — well below 100 %, with room for the imbalance losses and calibration methods to matter.

Why hand-written: no library draws dermoscopy-like images (MONAI and torchvision generate only noise or shapes
for tests; scikit-image's ``random_shapes`` has no structures, and neither has class-dependent overlap). The
drawing is vectorised NumPy (measured on one core: ≈ 300 images/s at 64 px, ≈ 600 at 32 px, ≈ 25 at 256 px);
the set (images, ``synthetic.json``, the metadata CSV last) is written into a hidden staging folder and moved into
place all or nothing by :func:`mednet.file_sets.replace_files` (one rename per file and one fsync per folder, instead of an
fsync per file through :func:`mednet.io.atomic_path`, 3.8 ms each here, longer than drawing the image): a failed
or interrupted ``--overwrite`` leaves the earlier set whole, and a run killed outright is rolled back by the next.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mednet.errors import DataError, OptionError
from mednet.file_sets import recover_replacements, replace_files
from mednet.io import refuse_file_as_folder

__all__ = [
    "HAM10000_CLASSES",
    "HAM10000_COUNTS",
    "METADATA_COLUMNS",
    "SYNTHETIC_DX_TYPE",
    "MIN_LESIONS_PER_CLASS",
    "AMBIGUOUS_FRACTION",
    "NEIGHBOURS",
    "CLASS_PROFILES",
    "CLASS_OVERLAP",
    "JPEG_QUALITY",
    "GENERATOR_VERSION",
    "SyntheticLesion",
    "allocate_images",
    "plan_lesions",
    "draw_lesion_features",
    "render_lesion_image",
    "iter_synthetic_dermoscopy",
    "generate_synthetic_dermoscopy",
]

#: the 7 HAM10000 / ISIC 2018 Task 3 diagnoses, in the project's order
HAM10000_CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
#: images per class in HAM10000 (10,015 in all; Tschandl et al. 2018)
HAM10000_COUNTS: dict[str, int] = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
#: HAM10000_metadata.csv's columns, in its order
METADATA_COLUMNS: tuple[str, ...] = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
#: ``dx_type`` of every synthetic row (HAM10000 uses histo / follow_up / consensus / confocal)
SYNTHETIC_DX_TYPE = "synthetic"
#: so that every class can be present in a training, validation and test split grouped by lesion
MIN_LESIONS_PER_CLASS = 3
#: share of lesions drawn with a neighbouring class's feature parameters (label kept)
AMBIGUOUS_FRACTION = 0.12
#: the classes a lesion of each class may be drawn like (clinical differential diagnoses)
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "akiec": ("bkl", "bcc"),
    "bcc": ("akiec", "nv"),
    "bkl": ("akiec", "mel", "nv"),
    "df": ("nv",),
    "mel": ("nv", "bkl"),
    "nv": ("mel", "df", "bkl"),
    "vasc": ("bcc", "mel"),
}
JPEG_QUALITY = 95
GENERATOR_VERSION = 1

CLASS_OVERLAP: tuple[str, ...] = (
    "every feature parameter (size, asymmetry, border irregularity, edge sharpness, colours, network, dots, "
    "milia, nests, veil, scale, white patch, lacunae, vessels) is drawn from a class-specific clipped normal "
    "distribution; neighbouring classes' distributions overlap",
    "18 % of nv are atypical (larger, asymmetric, multi-coloured, irregular network: like mel)",
    "25 % of mel are early (small, fairly symmetric, few colours: like nv)",
    "30 % of bkl are lentigo-like (flat light brown with a network: like nv and df)",
    "bkl and akiec share surface scale and bright follicle/milia-like dots",
    "df and nv share the pigment network; bcc and akiec share pink colour and vessels; vasc and bcc share red",
    f"{AMBIGUOUS_FRACTION:.0%} of lesions are drawn with the feature parameters of a neighbouring class "
    "(NEIGHBOURS) while keeping their own label",
)

# Colours (sRGB in [0, 1]) of skin and dermoscopic structures.
PALETTE: dict[str, tuple[float, float, float]] = {
    "tan": (0.80, 0.62, 0.46),
    "light_brown": (0.66, 0.45, 0.30),
    "brown": (0.48, 0.29, 0.17),
    "dark_brown": (0.30, 0.17, 0.10),
    "black": (0.10, 0.07, 0.07),
    "blue_grey": (0.42, 0.47, 0.56),
    "pink": (0.92, 0.60, 0.62),
    "red_pink": (0.86, 0.42, 0.44),
    "red": (0.74, 0.15, 0.20),
    "dark_red": (0.46, 0.08, 0.12),
    "purple": (0.42, 0.17, 0.36),
    "white": (0.97, 0.95, 0.92),
    "yellow_white": (0.96, 0.91, 0.72),
}
_SKIN_FAIR = np.array([0.96, 0.80, 0.72], np.float32)
_SKIN_DARK = np.array([0.70, 0.48, 0.36], np.float32)

# Continuous feature parameters: name → (lower, upper) clip. Lengths are in units of the image half-width.
_RANGES: dict[str, tuple[float, float]] = {
    "size": (0.12, 0.78),  # border radius r0
    "asymmetry": (0.0, 0.4),  # amplitude of harmonics 1-3 of the border
    "irregularity": (0.0, 0.25),  # amplitude of harmonics 4-12
    "edge": (0.01, 0.16),  # width of the border's transition
    "opacity": (0.25, 0.95),
    "variegation": (0.0, 5.0),  # mean number of extra colour blotches
    "network": (0.0, 1.0),  # pigment network contrast
    "network_irregularity": (0.0, 1.0),
    "dots": (0.0, 20.0),  # mean number of dots/globules
    "peripheral_dots": (0.0, 1.0),  # share of dots clustered in one peripheral sector
    "milia": (0.0, 12.0),  # mean number of bright milia-like / follicle dots
    "nests": (0.0, 6.0),  # mean number of blue-grey ovoid nests
    "veil": (0.0, 0.8),  # blue-white veil contrast
    "scale": (0.0, 1.0),  # surface scale
    "white_centre": (0.0, 1.0),  # central white (scar-like) patch
    "lacunae": (0.0, 15.0),  # mean number of red lacunae
    "vessels": (0.0, 4.0),  # mean number of arborising vessel trees
    "redness": (0.0, 1.0),  # erythema around the lesion
}

_Profile = dict[str, object]

# (mean, sd) per feature; "colours" / "accents" / "dot_colours": {palette name: weight}.
_NV: _Profile = {
    "size": (0.30, 0.08), "asymmetry": (0.05, 0.04), "irregularity": (0.03, 0.02), "edge": (0.07, 0.03),
    "opacity": (0.70, 0.12), "variegation": (0.5, 0.5), "network": (0.55, 0.25), "network_irregularity": (0.2, 0.15),
    "dots": (2.0, 2.0), "peripheral_dots": (0.2, 0.15), "milia": (0.3, 0.3), "nests": (0.2, 0.3),
    "veil": (0.02, 0.04), "scale": (0.03, 0.05), "white_centre": (0.03, 0.05), "lacunae": (0.0, 0.1),
    "vessels": (0.0, 0.1), "redness": (0.05, 0.05),
    "colours": {"brown": 0.5, "light_brown": 0.35, "dark_brown": 0.15},
    "accents": {"brown": 0.4, "light_brown": 0.3, "dark_brown": 0.3},
    "dot_colours": {"dark_brown": 0.6, "brown": 0.4},
}
_MEL: _Profile = {
    "size": (0.47, 0.12), "asymmetry": (0.20, 0.08), "irregularity": (0.11, 0.05), "edge": (0.03, 0.02),
    "opacity": (0.80, 0.10), "variegation": (2.5, 1.0), "network": (0.45, 0.3), "network_irregularity": (0.7, 0.2),
    "dots": (8.0, 4.0), "peripheral_dots": (0.7, 0.2), "milia": (0.3, 0.3), "nests": (0.6, 0.5),
    "veil": (0.30, 0.2), "scale": (0.05, 0.05), "white_centre": (0.12, 0.12), "lacunae": (0.0, 0.1),
    "vessels": (0.1, 0.2), "redness": (0.10, 0.08),
    "colours": {"dark_brown": 0.4, "brown": 0.3, "black": 0.15, "light_brown": 0.15},
    "accents": {"black": 0.3, "blue_grey": 0.3, "dark_brown": 0.2, "light_brown": 0.1, "red_pink": 0.1},
    "dot_colours": {"black": 0.4, "dark_brown": 0.4, "blue_grey": 0.2},
}
_BKL: _Profile = {
    "size": (0.42, 0.12), "asymmetry": (0.10, 0.06), "irregularity": (0.06, 0.04), "edge": (0.025, 0.015),
    "opacity": (0.55, 0.15), "variegation": (0.8, 0.6), "network": (0.15, 0.15), "network_irregularity": (0.4, 0.2),
    "dots": (3.0, 2.0), "peripheral_dots": (0.2, 0.2), "milia": (6.0, 3.0), "nests": (0.1, 0.2),
    "veil": (0.05, 0.05), "scale": (0.40, 0.25), "white_centre": (0.05, 0.05), "lacunae": (0.0, 0.1),
    "vessels": (0.1, 0.2), "redness": (0.05, 0.05),
    "colours": {"tan": 0.45, "light_brown": 0.35, "brown": 0.2},
    "accents": {"brown": 0.4, "tan": 0.3, "dark_brown": 0.2, "yellow_white": 0.1},
    "dot_colours": {"brown": 0.6, "dark_brown": 0.4},
}
_DF: _Profile = {
    "size": (0.22, 0.05), "asymmetry": (0.06, 0.04), "irregularity": (0.04, 0.03), "edge": (0.08, 0.03),
    "opacity": (0.55, 0.12), "variegation": (0.3, 0.3), "network": (0.55, 0.2), "network_irregularity": (0.2, 0.15),
    "dots": (1.0, 1.0), "peripheral_dots": (0.2, 0.2), "milia": (0.3, 0.3), "nests": (0.1, 0.2),
    "veil": (0.03, 0.04), "scale": (0.05, 0.05), "white_centre": (0.70, 0.2), "lacunae": (0.0, 0.1),
    "vessels": (0.1, 0.2), "redness": (0.15, 0.10),
    "colours": {"light_brown": 0.6, "tan": 0.2, "pink": 0.2},
    "accents": {"light_brown": 0.5, "pink": 0.3, "brown": 0.2},
    "dot_colours": {"brown": 0.7, "dark_brown": 0.3},
}
_BCC: _Profile = {
    "size": (0.36, 0.10), "asymmetry": (0.12, 0.06), "irregularity": (0.08, 0.04), "edge": (0.04, 0.02),
    "opacity": (0.45, 0.15), "variegation": (0.6, 0.5), "network": (0.04, 0.05), "network_irregularity": (0.5, 0.2),
    "dots": (1.0, 1.0), "peripheral_dots": (0.3, 0.2), "milia": (0.5, 0.5), "nests": (3.0, 1.5),
    "veil": (0.05, 0.05), "scale": (0.08, 0.08), "white_centre": (0.20, 0.15), "lacunae": (0.2, 0.3),
    "vessels": (2.5, 1.0), "redness": (0.30, 0.15),
    "colours": {"pink": 0.6, "tan": 0.2, "light_brown": 0.2},
    "accents": {"blue_grey": 0.4, "pink": 0.3, "white": 0.2, "dark_red": 0.1},
    "dot_colours": {"blue_grey": 0.7, "dark_brown": 0.3},
}
_AKIEC: _Profile = {
    "size": (0.38, 0.10), "asymmetry": (0.12, 0.06), "irregularity": (0.09, 0.05), "edge": (0.06, 0.03),
    "opacity": (0.50, 0.15), "variegation": (0.8, 0.6), "network": (0.35, 0.2), "network_irregularity": (0.4, 0.2),
    "dots": (1.0, 1.0), "peripheral_dots": (0.3, 0.2), "milia": (5.0, 3.0), "nests": (0.1, 0.2),
    "veil": (0.03, 0.04), "scale": (0.55, 0.25), "white_centre": (0.08, 0.08), "lacunae": (0.2, 0.3),
    "vessels": (0.6, 0.5), "redness": (0.50, 0.20),
    "colours": {"pink": 0.45, "red_pink": 0.4, "tan": 0.15},
    "accents": {"red": 0.4, "white": 0.3, "light_brown": 0.3},
    "dot_colours": {"red": 0.5, "brown": 0.5},
}
_VASC: _Profile = {
    "size": (0.26, 0.08), "asymmetry": (0.07, 0.05), "irregularity": (0.05, 0.03), "edge": (0.03, 0.015),
    "opacity": (0.70, 0.12), "variegation": (0.8, 0.6), "network": (0.0, 0.05), "network_irregularity": (0.3, 0.2),
    "dots": (0.5, 0.5), "peripheral_dots": (0.2, 0.2), "milia": (0.2, 0.3), "nests": (0.3, 0.3),
    "veil": (0.10, 0.10), "scale": (0.03, 0.04), "white_centre": (0.10, 0.10), "lacunae": (8.0, 3.0),
    "vessels": (0.2, 0.3), "redness": (0.20, 0.15),
    "colours": {"red": 0.4, "purple": 0.4, "red_pink": 0.2},
    "accents": {"purple": 0.4, "blue_grey": 0.3, "dark_red": 0.3},
    "dot_colours": {"dark_red": 0.7, "purple": 0.3},
}

#: per class, a mixture of (weight, profile): the sub-types that make classes overlap (module docstring)
CLASS_PROFILES: dict[str, tuple[tuple[float, _Profile], ...]] = {
    "akiec": ((1.0, _AKIEC),),
    "bcc": ((1.0, _BCC),),
    "bkl": (
        (0.70, _BKL),
        (0.30, {**_BKL, "milia": (1.0, 1.0), "scale": (0.08, 0.08), "network": (0.40, 0.2),
                "network_irregularity": (0.25, 0.15), "edge": (0.05, 0.03), "colours": {"light_brown": 0.6, "tan": 0.4}}),
    ),
    "df": ((1.0, _DF),),
    "mel": (
        (0.75, _MEL),
        (0.25, {**_MEL, "size": (0.32, 0.08), "asymmetry": (0.08, 0.05), "irregularity": (0.05, 0.03),
                "variegation": (1.0, 0.7), "network_irregularity": (0.45, 0.2), "dots": (4.0, 3.0), "veil": (0.10, 0.10),
                "colours": {"brown": 0.5, "dark_brown": 0.4, "light_brown": 0.1}}),
    ),
    "nv": (
        (0.82, _NV),
        (0.18, {**_NV, "size": (0.42, 0.10), "asymmetry": (0.15, 0.07), "irregularity": (0.08, 0.04), "edge": (0.04, 0.02),
                "variegation": (1.5, 0.8), "network_irregularity": (0.5, 0.2), "dots": (5.0, 3.0),
                "peripheral_dots": (0.5, 0.2), "veil": (0.10, 0.10)}),
    ),
    "vasc": ((1.0, _VASC),),
}

# Plausible metadata per class (HAM10000-like): (age mean, sd), P(male), localisation weights.
_AGE: dict[str, tuple[float, float]] = {
    "akiec": (67, 12), "bcc": (66, 13), "bkl": (60, 14), "df": (50, 15), "mel": (60, 15), "nv": (45, 16), "vasc": (50, 20),
}
_P_MALE: dict[str, float] = {"akiec": 0.68, "bcc": 0.62, "bkl": 0.57, "df": 0.45, "mel": 0.61, "nv": 0.52, "vasc": 0.48}
_SITES: dict[str, dict[str, float]] = {
    "akiec": {"face": 45, "upper extremity": 15, "scalp": 8, "hand": 7, "lower extremity": 8, "back": 7, "chest": 5,
              "neck": 5},
    "bcc": {"face": 30, "back": 25, "chest": 10, "upper extremity": 10, "lower extremity": 10, "neck": 5, "scalp": 5,
            "abdomen": 5},
    "bkl": {"face": 25, "back": 20, "trunk": 10, "upper extremity": 12, "lower extremity": 12, "chest": 8, "abdomen": 5,
            "neck": 4, "scalp": 4},
    "df": {"lower extremity": 65, "upper extremity": 20, "trunk": 5, "back": 5, "abdomen": 5},
    "mel": {"back": 30, "upper extremity": 15, "lower extremity": 20, "face": 12, "chest": 8, "abdomen": 7, "neck": 3,
            "scalp": 3, "trunk": 2},
    "nv": {"back": 25, "lower extremity": 22, "trunk": 15, "abdomen": 12, "upper extremity": 10, "chest": 5, "foot": 4,
           "face": 3, "neck": 2, "genital": 1, "acral": 1},
    "vasc": {"lower extremity": 30, "trunk": 25, "back": 10, "abdomen": 10, "upper extremity": 10, "face": 10, "chest": 5},
}
# HAM10000 has a few missing ages and "unknown" sex / localisation; keep loaders honest about them
_P_AGE_MISSING, _P_SEX_UNKNOWN, _P_SITE_UNKNOWN = 0.005, 0.005, 0.02


@dataclass(frozen=True)
class SyntheticLesion:
    """One planned lesion: its label, the class whose features it is drawn with, its images and metadata.

    ``seed`` is the lesion's own :class:`numpy.random.SeedSequence`: its features come from its first child and
    image ``i`` from child ``i + 1``, so a lesion looks the same whatever the other lesions or the image size.
    """

    lesion_id: str
    dx: str
    feature_dx: str
    image_ids: tuple[str, ...]
    age: str
    sex: str
    localization: str
    seed: np.random.SeedSequence = field(repr=False, compare=False)


def _check_options(n_images: int, size: int) -> None:
    problems = {}
    minimum = MIN_LESIONS_PER_CLASS * len(HAM10000_CLASSES)
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < minimum:
        problems["--images"] = (f"must be an integer ≥ {minimum} ({MIN_LESIONS_PER_CLASS} lesions per class), "
                                f"got {n_images!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
        problems["--size"] = f"must be an integer from 16 to 1024 pixels, got {size!r}"
    if problems:
        raise OptionError(problems)


def allocate_images(n_images: int) -> dict[str, int]:
    """Images per class: HAM10000's proportions, at least :data:`MIN_LESIONS_PER_CLASS` per class, summing to ``n_images``.

    Largest-remainder rounding of ``n_images · p_c``; classes below the minimum are raised to it and the images
    this costs are taken from the largest classes. ``allocate_images(10015)`` gives HAM10000's own counts.
    """
    _check_options(n_images, 64)
    total = sum(HAM10000_COUNTS.values())
    quota = np.array([n_images * HAM10000_COUNTS[c] / total for c in HAM10000_CLASSES])
    counts = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - counts), kind="stable")[: n_images - counts.sum()]:
        counts[i] += 1
    counts = np.maximum(counts, MIN_LESIONS_PER_CLASS)
    while counts.sum() > n_images:  # pay for the minimums from the largest class
        counts[int(np.argmax(counts))] -= 1
    return {c: int(n) for c, n in zip(HAM10000_CLASSES, counts)}


def _weighted_choice(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _metadata(dx: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """Age (multiple of 5, as in HAM10000), sex and localisation of one lesion."""
    age = "" if rng.random() < _P_AGE_MISSING else f"{float(np.clip(5 * np.round(rng.normal(*_AGE[dx]) / 5), 5, 85)):.1f}"
    sex = "unknown" if rng.random() < _P_SEX_UNKNOWN else ("male" if rng.random() < _P_MALE[dx] else "female")
    site = "unknown" if rng.random() < _P_SITE_UNKNOWN else _weighted_choice(rng, _SITES[dx])
    return age, sex, site


def plan_lesions(n_images: int, seed: int = 0) -> list[SyntheticLesion]:
    """The lesions of a set of ``n_images`` images, sorted by ``lesion_id`` (which is in random class order).

    Per class with ``m`` images: ``max(3, round(m / 2))`` lesions (at most ``m``, at least ``m / 3``), each with
    1 image plus extra images spread at random over the lesions' two free slots, so 1–3 images per lesion.
    """
    counts = allocate_images(n_images)
    root = np.random.SeedSequence(int(seed))
    plan_rng = np.random.default_rng(root.spawn(1)[0])
    per_lesion: list[tuple[str, int]] = []
    for dx in HAM10000_CLASSES:
        m = counts[dx]
        n_lesions = min(m, max(MIN_LESIONS_PER_CLASS, int(np.ceil(m / 3)), int(round(m / 2))))
        extra = plan_rng.choice(2 * n_lesions, size=m - n_lesions, replace=False) // 2
        n_per = 1 + np.bincount(extra, minlength=n_lesions)
        per_lesion += [(dx, int(k)) for k in n_per]
    n_lesions = len(per_lesion)
    lesion_order = plan_rng.permutation(n_lesions)  # lesion_order[j]: the number of lesion j
    image_numbers = plan_rng.permutation(n_images) + 1
    seeds = root.spawn(n_lesions + 1)[1:]
    lesions, start = [], 0
    for j, (dx, k) in enumerate(per_lesion):
        rng = np.random.default_rng(seeds[j].spawn(1)[0])
        feature_dx = dx
        if rng.random() < AMBIGUOUS_FRACTION:
            feature_dx = NEIGHBOURS[dx][int(rng.integers(len(NEIGHBOURS[dx])))]
        age, sex, site = _metadata(dx, rng)
        ids = tuple(f"SYN_{n:07d}" for n in sorted(image_numbers[start:start + k]))
        start += k
        lesions.append(SyntheticLesion(f"SYN_L{lesion_order[j] + 1:07d}", dx, feature_dx, ids, age, sex, site, seeds[j]))
    return sorted(lesions, key=lambda lesion: lesion.lesion_id)


# ----------------------------------------------------------------------------------------------- lesion features
def _draw(rng: np.random.Generator, name: str, profile: _Profile) -> float:
    mean, sd = profile[name]
    lo, hi = _RANGES[name]
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _colour(rng: np.random.Generator, weights: Mapping[str, float], jitter: float = 0.04) -> np.ndarray:
    colour = np.array(PALETTE[_weighted_choice(rng, weights)], np.float32) + rng.normal(0, jitter, 3)
    return np.clip(colour, 0, 1).astype(np.float32)


def _colours(rng: np.random.Generator, weights: Mapping[str, float], n: int, jitter: float = 0.04) -> np.ndarray:
    """(n, 3) colours drawn from ``weights`` (n may be 0)."""
    return np.array([_colour(rng, weights, jitter) for _ in range(n)], np.float32).reshape(n, 3)


def _polar_points(rng: np.random.Generator, n: int, t_range: tuple[float, float],
                  sector: float | None = None) -> np.ndarray:
    """``n`` points as (fraction of the border radius, angle); uniform in area, or within one angular sector."""
    t = np.sqrt(rng.uniform(t_range[0] ** 2, t_range[1] ** 2, n))
    angle = rng.uniform(0, 2 * np.pi, n) if sector is None else sector + rng.normal(0, 0.5, n)
    return np.stack([t, angle], axis=1).astype(np.float32)


def _vessel_tree(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An arborising vessel: a bent trunk and two generations of thinner branches, as segments in polar-fraction
    units (``t`` of the border radius, relative to the lesion centre); returns (S, 2, 2) end points and (S,) widths."""
    root = rng.uniform(-0.55, 0.55, 2)
    heading = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.45, 0.85)
    segments, widths = [], []
    stack = [(root, heading, length, 0.030, 0)]
    while stack:
        start, head, ln, width, depth = stack.pop()
        mid = start + 0.5 * ln * np.array([np.cos(head), np.sin(head)])
        head2 = head + rng.normal(0, 0.35)
        end = mid + 0.5 * ln * np.array([np.cos(head2), np.sin(head2)])
        segments += [(start, mid), (mid, end)]
        widths += [width, width]
        if depth < 2:
            for origin in (mid, end):
                if rng.random() < 0.8:
                    side = rng.choice((-1.0, 1.0))
                    branch = head2 + side * rng.uniform(0.4, 1.0)
                    stack.append((origin, branch, ln * rng.uniform(0.45, 0.65), width * 0.65, depth + 1))
    return np.array(segments, np.float32), np.array(widths, np.float32)


def draw_lesion_features(feature_dx: str, rng: np.random.Generator) -> dict[str, object]:
    """One lesion's appearance, drawn from ``feature_dx``'s profile mixture (:data:`CLASS_PROFILES`).

    Scalars are in :data:`_RANGES` units; structure positions are ``(t, angle)`` pairs in the lesion's own polar
    frame (``t`` = fraction of the border radius at that angle), so every image of the lesion places them alike.
    """
    mixture = CLASS_PROFILES[feature_dx]
    weights = np.array([w for w, _ in mixture])
    profile = mixture[int(rng.choice(len(mixture), p=weights / weights.sum()))][1]
    f: dict[str, object] = {name: _draw(rng, name, profile) for name in _RANGES}
    # border: harmonics 1-3 carry asymmetry, 4-12 irregularity; a mild ellipse for everyone
    k = np.arange(1, 13)
    amp = np.where(k <= 3, f["asymmetry"] * rng.uniform(0.3, 1.0, 12) * np.array([0.5, 0.6, 1.0] + [0] * 9),
                   f["irregularity"] * rng.uniform(0.2, 1.0, 12) * k.astype(float) ** -0.6)
    amp[1] += rng.uniform(0.0, 0.12)
    f["harmonics"] = np.stack([k, amp, rng.uniform(0, 2 * np.pi, 12)]).astype(np.float32)  # (3, 12): k, a_k, φ_k
    f["skin"] = (_SKIN_FAIR + (_SKIN_DARK - _SKIN_FAIR) * rng.beta(1.5, 4.0)).astype(np.float32)
    f["base_colour"] = _colour(rng, profile["colours"])
    n_blotch = rng.poisson(f["variegation"])
    # variegation sits off-centre in proportion to asymmetry (asymmetric colour distribution)
    side = rng.uniform(0, 2 * np.pi)
    blotch = _polar_points(rng, n_blotch, (0.0, 0.8), side if rng.random() < 2 * f["asymmetry"] else None)
    f["blotches"] = (blotch, rng.uniform(0.25, 0.5, n_blotch).astype(np.float32),
                     _colours(rng, profile["accents"], n_blotch),
                     rng.uniform(0.45, 0.9, n_blotch).astype(np.float32))
    f["veil_at"] = _polar_points(rng, 1, (0.0, 0.5))
    f["network_period"] = float(rng.uniform(0.09, 0.14))
    f["network_phase"] = rng.uniform(0, 2 * np.pi, 6).astype(np.float32)
    n_dots = rng.poisson(f["dots"])
    n_peripheral = rng.binomial(n_dots, f["peripheral_dots"])
    f["dots_at"] = np.concatenate([_polar_points(rng, n_dots - n_peripheral, (0.0, 0.85)),
                                   _polar_points(rng, n_peripheral, (0.6, 1.05), sector=rng.uniform(0, 2 * np.pi))])
    f["dot_sigma"] = rng.uniform(0.018, 0.035, n_dots).astype(np.float32)
    f["dot_colours"] = _colours(rng, profile["dot_colours"], n_dots, 0.03)
    n_milia = rng.poisson(f["milia"])
    f["milia_at"] = _polar_points(rng, n_milia, (0.0, 0.9))
    f["milia_sigma"] = rng.uniform(0.015, 0.03, n_milia).astype(np.float32)
    n_nests = rng.poisson(f["nests"])
    f["nests_at"] = _polar_points(rng, n_nests, (0.2, 0.95))
    f["nest_shape"] = np.stack([rng.uniform(0.03, 0.06, n_nests), rng.uniform(1.4, 2.4, n_nests),
                                rng.uniform(0, np.pi, n_nests)], axis=1).astype(np.float32)
    n_scale = int(round(f["scale"] * 14 * rng.uniform(0.7, 1.3)))
    f["scale_at"] = _polar_points(rng, n_scale, (0.0, 0.95))
    f["scale_shape"] = np.stack([rng.uniform(0.08, 0.2, n_scale), rng.uniform(1.5, 3.0, n_scale),
                                 rng.uniform(0, np.pi, n_scale)], axis=1).astype(np.float32)
    f["white_at"] = _polar_points(rng, 1, (0.0, 0.25))
    n_lacunae = rng.poisson(f["lacunae"])
    f["lacunae_at"] = _polar_points(rng, n_lacunae, (0.0, 0.8))
    f["lacuna_radius"] = rng.uniform(0.035, 0.07, n_lacunae).astype(np.float32)
    f["lacuna_colours"] = _colours(rng, {"red": 0.4, "dark_red": 0.35, "purple": 0.25}, n_lacunae, 0.03)
    trees = [_vessel_tree(rng) for _ in range(rng.poisson(f["vessels"]))]
    f["vessel_segments"] = np.concatenate([s for s, _ in trees]) if trees else np.zeros((0, 2, 2), np.float32)
    f["vessel_widths"] = np.concatenate([w for _, w in trees]) if trees else np.zeros(0, np.float32)
    f["orientation"] = float(rng.uniform(0, 2 * np.pi))
    f["centre"] = rng.normal(0, 0.06, 2).astype(np.float32)
    return f


# ----------------------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], flattened: ``x`` (column) and ``y`` (row), each (size², ) float32."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    return x.ravel(), y.ravel()


_TABLE_ANGLES = np.linspace(-np.pi, np.pi, 721, dtype=np.float32)


def _border(theta: np.ndarray, r0: float, harmonics: np.ndarray) -> np.ndarray:
    """``R(θ) = r0 (1 + Σ_k a_k cos(kθ + φ_k))`` at angles ``theta``, kept ≥ 0.35 r0 (no self-crossing border)."""
    k, a, phi = harmonics
    wobble = (a[:, None] * np.cos(k[:, None] * theta[None] + phi[:, None])).sum(axis=0)
    return (r0 * np.maximum(1 + wobble, 0.35)).astype(np.float32)


def _border_on_grid(theta: np.ndarray, r0: float, harmonics: np.ndarray) -> np.ndarray:
    """:func:`_border` for every pixel, interpolated from 721 angles (harmonics up to 12: error < 1e-3 r0;
    12 cosines per pixel would be a third of the drawing time)."""
    return np.interp(theta, _TABLE_ANGLES, _border(_TABLE_ANGLES, r0, harmonics)).astype(np.float32)


def _to_lesion_frame(points: np.ndarray, r0: float, harmonics: np.ndarray) -> np.ndarray:
    """(t, angle) pairs → (u, v) lesion-frame coordinates, (n, 2)."""
    t, angle = points[:, 0], points[:, 1]
    r = t * _border(angle, r0, harmonics)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def _blobs(u: np.ndarray, v: np.ndarray, at: np.ndarray, sigma: np.ndarray, aspect: np.ndarray | None = None,
           turn: np.ndarray | None = None, pixel: float = 0.0) -> np.ndarray:
    """(K, P) Gaussian blobs at ``at`` (K, 2) with widths ``sigma`` (K,) (narrowed by ``aspect`` across ``turn``).

    Blobs narrower than a pixel are widened to it with their integral kept (``σ_eff² = σ² + (0.4 px)²``), so a
    smaller image shows a dot fainter rather than not at all, or aliased.
    """
    du, dv = u[None] - at[:, 0, None], v[None] - at[:, 1, None]
    if turn is not None:
        c, s = np.cos(turn)[:, None], np.sin(turn)[:, None]
        du, dv = c * du + s * dv, (-s * du + c * dv) * aspect[:, None]
    s2 = (sigma ** 2 + (0.4 * pixel) ** 2).astype(np.float32)
    return (sigma ** 2 / s2)[:, None] * np.exp(-(du * du + dv * dv) / (2 * s2[:, None]))


def _segments(px: np.ndarray, py: np.ndarray, seg: np.ndarray, width: np.ndarray, pixel: float) -> np.ndarray:
    """(P,) coverage of line segments ``seg`` (S, 2, 2) with Gaussian cross-section ``width`` (S,): the max over
    segments (joints are not darker), widened to ≥ 0.4 px with the line's integral kept."""
    a, d = seg[:, 0], seg[:, 1] - seg[:, 0]
    ax, ay = px[None] - a[:, 0, None], py[None] - a[:, 1, None]
    t = np.clip((ax * d[:, 0, None] + ay * d[:, 1, None]) / np.maximum((d * d).sum(axis=1), 1e-12)[:, None], 0, 1)
    ex, ey = ax - t * d[:, 0, None], ay - t * d[:, 1, None]
    w2 = (width ** 2 + (0.4 * pixel) ** 2).astype(np.float32)
    return ((width / np.sqrt(w2))[:, None] * np.exp(-(ex * ex + ey * ey) / (2 * w2[:, None]))).max(axis=0)


def _over(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-composite, in place, a colour (3,) or per-pixel colours (3, P) with coverage ``alpha`` (P,) over
    ``image`` (3, P)."""
    colour = colour[:, None] if colour.ndim == 1 else colour
    image += np.clip(alpha, 0, 1) * (colour - image)


def _over_many(image: np.ndarray, alphas: np.ndarray, colours: np.ndarray) -> None:
    """Composite K layers (K, P) of colours (K, 3) at once, in place: total coverage ``1 − Π(1 − α_k)``, colour
    the coverage-weighted mean (order-independent, so one matrix product instead of K passes)."""
    if len(alphas) == 0:
        return
    alphas = np.clip(alphas, 0, 1)
    total = 1 - np.prod(1 - alphas, axis=0)
    colour = (colours.T @ alphas) / np.maximum(alphas.sum(axis=0), 1e-6)
    _over(image, total, colour)


def _hair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1–5 hair strands across the image: gently curved polylines (S, 2, 2), widths (S,), colour (3,)."""
    segments, widths = [], []
    for _ in range(int(rng.integers(1, 6))):
        heading, bend = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.25)
        length, width = rng.uniform(0.8, 2.2), rng.uniform(0.006, 0.014)
        points = [rng.uniform(-1.2, 1.2, 2)]
        for _ in range(6):
            heading += bend / 6
            points.append(points[-1] + length / 6 * np.array([np.cos(heading), np.sin(heading)]))
        segments += list(zip(points[:-1], points[1:]))
        widths += [width] * 6
    colour = _colour(rng, {"black": 0.5, "dark_brown": 0.5}, 0.02)
    return np.array(segments, np.float32), np.array(widths, np.float32), colour


def _rgb(name: str) -> np.ndarray:
    return np.array(PALETTE[name], np.float32)


def _network(u: np.ndarray, v: np.ndarray, t: np.ndarray, f: Mapping[str, object], lpix: float) -> np.ndarray:
    """(P,) coverage of the pigment network: the walls of a hexagonal lattice (three plane waves 120° apart,
    cells where their sum is high), its coordinates warped and its lines broken in patches in proportion to
    ``network_irregularity``, thinning towards the border (and, with a white centre as in df, only peripheral).
    Faded out where a cell is under ~4 pixels rather than aliased."""
    period = f["network_period"]
    visible = float(np.clip((period / lpix - 2.0) / 2.0, 0, 1))
    if visible == 0:
        return np.zeros_like(u)
    irr, ph = f["network_irregularity"], f["network_phase"]
    k = 4 * np.pi / (np.sqrt(3) * period)  # hexagonal lattice of cell spacing `period`
    warp = irr * 0.25 * period
    uw = u + warp * np.sin(0.9 * k / 3 * v + ph[1])
    vw = v + warp * np.sin(0.9 * k / 3 * u + ph[2])
    directions = ph[0] + np.arange(3) * 2 * np.pi / 3
    waves = sum(np.cos(k * (np.cos(d) * uw + np.sin(d) * vw) + ph[3 + j] * irr) for j, d in enumerate(directions))
    lines = 1 / (1 + np.exp((waves + 0.6) / 0.25))  # walls where the three waves cancel
    r0 = f["size"]
    patches = (1 - irr) + irr * np.clip(0.5 + np.cos(2.5 / r0 * u + ph[5]) * np.cos(2.1 / r0 * v + ph[1]), 0, 1)
    where = np.clip(1.15 - t, 0, 1) * (1 - f["white_centre"] * np.exp(-(t / 0.6) ** 2))
    return visible * f["network"] * lines * patches * where


def render_lesion_image(features: Mapping[str, object], rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One image of a lesion: (size, size, 3) uint8 RGB.

    ``rng`` draws this image's pose, colour/lighting changes, hair and vignetting, then the pixel noise (the only
    draw that depends on ``size``). Coordinates: ``x, y`` ∈ [-1, 1] over the image; ``u, v`` the lesion's own
    frame (rotated, scaled, shifted); all compositing on a (3, size²) float32 canvas.
    """
    f = features
    pixel = 2.0 / size  # one pixel in half-width units
    x, y = _grid(size)
    # --- this image's draws (size-independent)
    angle = float(f["orientation"] + rng.uniform(-0.35, 0.35))
    zoom = float(rng.uniform(0.9, 1.1))
    centre = f["centre"] + rng.uniform(-0.05, 0.05, 2).astype(np.float32)
    colour_shift = rng.normal(0, 0.02, 3).astype(np.float32)
    opacity = float(f["opacity"] * rng.uniform(0.92, 1.08))
    skin_gain = float(rng.uniform(0.97, 1.03))
    texture = rng.uniform([2, 0, 0, 0.004], [8, 2 * np.pi, 2 * np.pi, 0.012], (4, 4)).astype(np.float32)
    gradient, direction, brightness = (float(g) for g in rng.uniform([0.0, 0.0, 0.92], [0.15, 2 * np.pi, 1.06]))
    cast = rng.uniform(0.96, 1.04, 3).astype(np.float32)
    hair = _hair(rng) if rng.random() < 0.35 else None
    vignette = tuple(float(g) for g in rng.uniform([0.92, 0.03], [1.2, 0.08])) if rng.random() < 0.3 else None

    # --- lesion frame: rotate, scale and shift the pixel grid into the lesion's own coordinates
    c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
    dx, dy = x - centre[0], y - centre[1]
    u, v = c * dx + s * dy, c * dy - s * dx
    lpix = pixel / zoom  # one pixel in lesion-frame units
    r0, harmonics = f["size"], f["harmonics"]
    rho = np.hypot(u, v)
    radius = _border_on_grid(np.arctan2(v, u), r0, harmonics)
    t = rho / radius
    inside = np.clip(0.5 + (radius - rho) / max(f["edge"], 1.5 * lpix), 0, 1)
    inside *= inside * (3 - 2 * inside)  # smoothstep: no kink at the border

    # --- skin: tone, low-frequency texture, erythema around the lesion
    freq, turn, phase, amp = texture[:, 0:1], texture[:, 1:2], texture[:, 2:3], texture[:, 3:4]
    grain = (amp * np.cos(freq * (np.cos(turn) * x + np.sin(turn) * y) + phase)).sum(axis=0)
    skin = np.clip(f["skin"] * skin_gain + colour_shift, 0, 1)
    image = skin[:, None] * (1 + grain)[None]
    if f["redness"] > 0.02:
        _over(image, f["redness"] * 0.5 * np.exp(-np.maximum(t - 1, 0) ** 2 / 0.15), _rgb("red_pink"))

    # --- lesion body, blotches, veil, network
    base = np.clip(f["base_colour"] + colour_shift, 0, 1)
    _over(image, opacity * inside, base)
    at, sig, colours, alpha = f["blotches"]
    if len(at):
        blotches = _blobs(u, v, _to_lesion_frame(at, r0, harmonics), sig * r0, pixel=lpix)
        _over_many(image, alpha[:, None] * inside * blotches, colours)
    if f["veil"] > 0.02:
        veil = _blobs(u, v, _to_lesion_frame(f["veil_at"], r0, harmonics), np.array([0.45 * r0], np.float32))[0]
        _over(image, f["veil"] * inside * veil, np.array([0.62, 0.68, 0.80], np.float32))
    if f["network"] > 0.02:
        _over(image, 0.8 * _network(u, v, t, f, lpix) * inside, base * 0.5)

    # --- central white patch, scale, milia, nests, dots, lacunae, vessels
    if f["white_centre"] > 0.02:
        white = _blobs(u, v, _to_lesion_frame(f["white_at"], r0, harmonics), np.array([0.35 * r0], np.float32))[0]
        _over(image, 0.9 * f["white_centre"] * inside * white, _rgb("white"))
    if len(f["scale_at"]):
        shape = f["scale_shape"]
        at = _to_lesion_frame(f["scale_at"], r0, harmonics)
        flakes = _blobs(u, v, at, shape[:, 0] * r0, shape[:, 1], shape[:, 2], lpix)
        _over(image, f["scale"] * 0.85 * inside * flakes.max(axis=0), _rgb("yellow_white"))
    if len(f["milia_at"]):
        milia = _blobs(u, v, _to_lesion_frame(f["milia_at"], r0, harmonics), f["milia_sigma"], pixel=lpix)
        _over(image, 0.95 * inside * milia.max(axis=0), _rgb("white"))
    if len(f["nests_at"]):
        shape = f["nest_shape"]
        nests = _blobs(u, v, _to_lesion_frame(f["nests_at"], r0, harmonics), shape[:, 0], shape[:, 1], shape[:, 2], lpix)
        _over(image, 0.85 * nests.max(axis=0), np.array([0.36, 0.40, 0.50], np.float32))
    if len(f["dots_at"]):
        dots = _blobs(u, v, _to_lesion_frame(f["dots_at"], r0, harmonics), f["dot_sigma"], pixel=lpix)
        _over_many(image, 0.95 * dots, f["dot_colours"])
    if len(f["lacunae_at"]):
        centres = _to_lesion_frame(f["lacunae_at"], r0, harmonics)
        dist = np.hypot(u[None] - centres[:, 0, None], v[None] - centres[:, 1, None])
        discs = np.clip(0.5 + (f["lacuna_radius"][:, None] - dist) / max(0.015, lpix), 0, 1)  # sharp-edged lacunae
        _over_many(image, 0.95 * discs, f["lacuna_colours"])
    if len(f["vessel_segments"]):
        seg = f["vessel_segments"] * r0  # trees are drawn in units of the lesion radius
        _over(image, 0.9 * _segments(u, v, seg, f["vessel_widths"] * 0.7, lpix), _rgb("red"))

    # --- acquisition: hair, lighting (gradient, radial fall-off, colour cast), dermoscope field, noise
    if hair is not None:
        segments, widths, colour = hair
        _over(image, 0.9 * _segments(x, y, segments, widths, pixel), colour)
    r2 = x * x + y * y
    shade = brightness * (1 + gradient * (np.cos(direction) * x + np.sin(direction) * y)) * (1 - 0.06 * r2)
    if vignette is not None:
        field_radius, softness = vignette
        shade *= np.clip(0.5 + (field_radius - np.sqrt(r2)) / softness, 0.04, 1)
    image *= cast[:, None] * shade[None]
    image += 0.01 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8).T.reshape(size, size, 3).copy()


def iter_synthetic_dermoscopy(n_images: int, size: int = 64, seed: int = 0) -> Iterator[tuple[dict[str, str], np.ndarray]]:
    """Yield ``(metadata row, image)`` for every image of the set, lesion by lesion: the row has
    :data:`METADATA_COLUMNS`, the image is (size, size, 3) uint8 RGB. Nothing is written (tests, demos)."""
    _check_options(n_images, size)
    for lesion in plan_lesions(n_images, seed):
        feature_seed, *image_seeds = lesion.seed.spawn(1 + len(lesion.image_ids))
        features = draw_lesion_features(lesion.feature_dx, np.random.default_rng(feature_seed))
        for image_id, image_seed in zip(lesion.image_ids, image_seeds):
            row = {"lesion_id": lesion.lesion_id, "image_id": image_id, "dx": lesion.dx, "dx_type": SYNTHETIC_DX_TYPE,
                   "age": lesion.age, "sex": lesion.sex, "localization": lesion.localization}
            yield row, render_lesion_image(features, np.random.default_rng(image_seed), size)


def _jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # 4:4:4 chroma: 4:2:0 would smear thin red vessels and dots into the skin at 32-64 px
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def generate_synthetic_dermoscopy(out_dir: str | os.PathLike, n_images: int, size: int = 64, seed: int = 0,
                                  overwrite: bool = False) -> Path:
    """Write the synthetic set in the HAM10000 layout to ``out_dir``; returns the path of ``HAM10000_metadata.csv``.

    Args:
        out_dir: output folder; refused if it exists and is not empty, unless ``overwrite``.
        n_images: number of images (≥ 21: :data:`MIN_LESIONS_PER_CLASS` lesions for each of the 7 classes).
        size: image side in pixels (16-1024; 32-256 is the intended range).
        seed: the same seed gives byte-identical files; another seed, other lesions.
        overwrite: replace the metadata, ``synthetic.json`` and every file under ``images/`` of an earlier set (its
            emptied subfolders stay).

    Raises:
        DataError: ``out_dir`` holds files and ``overwrite`` is False; ``out_dir`` (or its ``images``) is a file or
            lies under one (also with ``overwrite``).
        OptionError: ``n_images`` or ``size`` out of range.
    """
    _check_options(n_images, size)
    out = refuse_file_as_folder(out_dir, "images")  # --overwrite cannot turn a file into a folder
    recover_replacements(out)  # a run killed while replacing the set: the earlier one back, before the check
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(out, "output already exists; choose another folder or pass --overwrite")
    lesions = plan_lesions(n_images, seed)
    metadata = "HAM10000_metadata.csv"
    # --overwrite retires the earlier set whole: its metadata, synthetic.json and every file under images/
    # (subfolders included, as when the folder itself was swapped)
    old = ([f.relative_to(out) for f in (out / "images").rglob("*") if f.is_file() or f.is_symlink()]
           + ["synthetic.json", metadata] if overwrite and out.is_dir() else [])
    with replace_files(out, old=old, last=metadata) as staging:  # all or nothing, the metadata last
        (staging / "images").mkdir()
        rows = []
        for row, image in iter_synthetic_dermoscopy(n_images, size, seed):
            (staging / "images" / f"{row['image_id']}.jpg").write_bytes(_jpeg_bytes(image))
            rows.append(row)
        (staging / "synthetic.json").write_text(json.dumps(_settings(n_images, size, seed, lesions), indent=2) + "\n",
                                                encoding="utf-8")
        with open(staging / metadata, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(METADATA_COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return out / metadata


def _settings(n_images: int, size: int, seed: int, lesions: list) -> dict:
    """``synthetic.json``: how the set was made (what a reader needs to know it is synthetic, and to remake it)."""
    counts = allocate_images(n_images)
    return {
        "synthetic": True,
        "description": "procedurally generated dermoscopy-like images (no patient, no real lesion): "
                       "results on this set are results on synthetic data",
        "generator": "mednet.data.synthetic_dermoscopy",
        "generator_version": GENERATOR_VERSION,
        "dx_type": SYNTHETIC_DX_TYPE,
        "seed": int(seed),
        "n_images": int(n_images),
        "n_lesions": len(lesions),
        "size": int(size),
        "jpeg_quality": JPEG_QUALITY,
        "classes": list(HAM10000_CLASSES),
        "class_proportions": {c: round(HAM10000_COUNTS[c] / sum(HAM10000_COUNTS.values()), 6) for c in HAM10000_CLASSES},
        "images_per_class": counts,
        "lesions_per_class": {c: sum(lesion.dx == c for lesion in lesions) for c in HAM10000_CLASSES},
        "images_per_lesion": [1, 3],
        "min_lesions_per_class": MIN_LESIONS_PER_CLASS,
        "class_overlap": list(CLASS_OVERLAP),
        "ambiguous_fraction": AMBIGUOUS_FRACTION,
        "neighbours": {c: list(n) for c, n in NEIGHBOURS.items()},
        "lesions_drawn_as_neighbour": {c: sum(lesion.dx == c and lesion.feature_dx != c for lesion in lesions)
                                       for c in HAM10000_CLASSES},
    }
