"""Which files sd-scripts v0.10.1 loads from an image folder (library/train_util.py, glob_images).

Its IMAGE_EXTENSIONS list is case-sensitive: ``.png .jpg .jpeg .webp .bmp`` and their upper-case forms
(``.avif``/``.jxl`` only with optional Pillow plugins the workflow's install does not add). Each suffix
is globbed as ``*<suffix>``, so ``a.Jpg`` is never loaded and neither is a hidden ``.name.jpg`` (glob's
``*`` skips names starting with a dot); the paths are sorted. The workflow counts, copies and prices
exactly these files, and names the ones sd-scripts would ignore.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from likeness.imageheader import read_header
from likeness.sdscripts import RELEASE

_LOWER = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_EXTENSIONS = (*_LOWER, *(suffix.upper() for suffix in _LOWER))


@dataclass(frozen=True)
class Listing:
    """An image folder as sd-scripts sees it: the images it loads (its order) and the files it ignores."""

    images: list[Path]
    ignored: list[Path]


def loads(name: str) -> bool:
    """Whether sd-scripts' glob picks up a file of this name."""
    return not name.startswith(".") and any(name.endswith(suffix) for suffix in IMAGE_EXTENSIONS)


def _looks_like_an_image(name: str) -> bool:
    return any(name.lower().endswith(suffix) for suffix in _LOWER)


def list_folder(folder: str | Path) -> Listing:
    """The images sd-scripts would train on in ``folder`` (sorted path order) and the image-like files it
    would skip (a suffix in another case, a hidden name). Captions, caches and other files are neither."""
    folder = Path(folder)
    if not folder.is_dir():
        return Listing([], [])
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if loads(p.name)]
    ignored = [p for p in files if not loads(p.name) and _looks_like_an_image(p.name)]
    return Listing(images, ignored)


def list_images(folder: str | Path) -> list[Path]:
    """Images sd-scripts would train on in ``folder``, in its (sorted path) order."""
    return list_folder(folder).images


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) as stored in the file's header (sd-scripts reads it with imagesize, no EXIF turn)."""
    try:
        header = read_header(path)
    except OSError:
        return None
    return (header.width, header.height) if header else None


def image_sizes(folder: str | Path) -> list[tuple[int, int]]:
    """Sizes of the images sd-scripts loads from ``folder`` (unreadable ones left out)."""
    return [size for size in map(image_size, list_images(folder)) if size]


def ignored_note(listing: Listing, what: str) -> str | None:
    """One line naming the files sd-scripts would not load from a folder (None when there are none)."""
    if not listing.ignored:
        return None
    names = ", ".join(p.name for p in listing.ignored[:5]) + (" ..." if len(listing.ignored) > 5 else "")
    return (
        f"{len(listing.ignored)} file(s) in the {what} folder ignored by sd-scripts {RELEASE} "
        f"(it loads only {' '.join(IMAGE_EXTENSIONS)}, case-sensitive, no hidden names): {names}"
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_ALPHA_COLOUR_TYPES = (4, 6)  # grey + alpha, RGB + alpha


def has_alpha_mask(path: str | Path) -> bool:
    """Whether an image carries a loss mask for ``alpha_mask``: a PNG with an alpha channel.

    sd-scripts reads any image's alpha as the mask (images without alpha weigh 1 everywhere); the
    selection writes a PNG with alpha for exactly the masked faces (likeness.select.masks), every
    other dataset image is the crop's JPEG. Reads the 26 header bytes only.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return False
    return (
        len(head) == 26 and head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and head[25] in PNG_ALPHA_COLOUR_TYPES
    )


def masked_images(folder: str | Path) -> list[Path]:
    """The images sd-scripts loads from ``folder`` that carry a loss mask."""
    return [path for path in list_images(folder) if has_alpha_mask(path)]
