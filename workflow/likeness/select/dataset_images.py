"""The dataset images folder: exactly the selected crops, hard-linked, touching only what changed."""

from __future__ import annotations

import filecmp
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from likeness.atomic import atomic_write_bytes
from likeness.tables import IMAGE_SUFFIXES


@dataclass(frozen=True)
class SyncReport:
    added: tuple[str, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]


def sync_images(wanted: Mapping[str, str | bytes], images_dir: str | os.PathLike[str]) -> SyncReport:
    """Make ``images_dir`` hold exactly ``wanted`` (file name -> crop path, or the image's bytes: a
    masked crop, likeness.select.masks), touching only changes.

    A file already holding the crop's bytes (the same inode or an identical copy) is left alone, so
    its mtime and inode stay. New or changed crops are hard-linked (atomically: link to a temporary
    name, then rename) or, where the filesystem refuses links, copied atomically. Image files no longer
    wanted are removed, and so are the latent caches sd-scripts keeps beside a removed or replaced
    image (``<stem>_<W>x<H>_sdxl.npz``, ``<stem>.npz``), which would otherwise train on the old pixels.
    Captions and other files are left to the stages that write them; temporary files of an interrupted
    sync (``.*.tmp``) are removed.
    """
    folder = Path(images_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)  # a temporary link or copy from an interrupted run
    present = {p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    removed = sorted(present - set(wanted))
    for name in removed:
        (folder / name).unlink(missing_ok=True)
        _drop_latent_caches(folder, Path(name).stem)
    added, replaced = [], []
    for name in sorted(wanted):
        source, target = wanted[name], folder / name
        if name in present:
            if _same_file_content(source, target):
                continue
            replaced.append(name)
            _drop_latent_caches(folder, target.stem)
        else:
            added.append(name)
        if isinstance(source, bytes):
            atomic_write_bytes(target, source)
        else:
            _place(Path(source), target)
    return SyncReport(tuple(added), tuple(replaced), tuple(removed))


def _same_file_content(source: str | bytes, target: Path) -> bool:
    try:
        if isinstance(source, bytes):
            return target.stat().st_size == len(source) and target.read_bytes() == source
        return os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)
    except OSError:
        return False


def _place(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        # Another filesystem, or one without hard links: fall back to an atomic copy.
        atomic_write_bytes(target, source.read_bytes())
        return
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _drop_latent_caches(folder: Path, stem: str) -> None:
    for cache in folder.glob(f"{stem}*.npz"):
        if cache.name == f"{stem}.npz" or cache.name.startswith(f"{stem}_"):
            cache.unlink(missing_ok=True)
