"""Where each face's photo is on this machine: a root folder and the path the database stores below it.

``file_name`` comes from the database: it must stay relative to its root, and a symlink must not lead out
of the root, so that a crafted or stale row never makes likeness read files it was not given. Whatever the
name holds, the answer is a reason, never an exception: this runs while the Snakefile is parsed.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from likeness.export.records import UNREACHABLE, Export
from likeness.tables import MANAGER_NAMES


def locate_photos(export: Export, roots: Mapping[str, str]) -> None:
    """Find each usable marker's photo on this machine; a path that cannot be read makes it unreachable."""
    # An export read back from markers.tsv names no manager: its reasons keep PhotoPrism's wording, as before.
    manager = MANAGER_NAMES.get(export.manager or "photoprism", "the photo manager")
    real_roots: dict[Path, Path] = {}  # each root resolved once, not once a face (10,000 lstat walks)
    for marker in export.usable:
        marker.path, reason = resolve_photo(roots, marker.file_root, marker.file_name, manager, real_roots)
        if reason:
            marker.status, marker.reason = UNREACHABLE, reason


def resolve_photo(
    roots: Mapping[str, str],
    file_root: str,
    file_name: str,
    manager: str = "PhotoPrism",
    real_roots: dict[Path, Path] | None = None,
) -> tuple[str, str]:
    """(path, '') for a photo inside its root folder, or ('', reason) when it must not or cannot be read.

    Too long for the OS, a symlink loop, a folder that cannot be read: each is a reason. ``real_roots``
    memoises each root's resolved path across calls.
    """
    root = roots.get(file_root or "/")
    if not root:
        return "", f"no folder configured for {manager} root '{file_root}'"
    if not file_name or "\x00" in file_name:
        return "", "file_name is empty or invalid"
    try:
        return _resolve_inside(Path(root), file_name, manager, real_roots)
    except FileNotFoundError:
        return "", f"photo missing on disk: {Path(root) / file_name}"
    except RuntimeError:  # Python 3.11's resolve() on a symlink loop
        return "", f"file_name '{file_name}' is a symlink loop"
    except (OSError, ValueError) as error:
        detail = getattr(error, "strerror", None) or str(error)
        return "", f"photo cannot be reached: {detail}: {Path(root) / file_name}"


def _resolve_inside(
    root: Path, file_name: str, manager: str = "PhotoPrism", real_roots: dict[Path, Path] | None = None
) -> tuple[str, str]:
    if file_name.startswith(("/", "\\")) or Path(file_name).is_absolute():
        return "", f"file_name '{file_name}' is an absolute path; {manager} stores paths relative to a root"
    if ".." in Path(file_name).parts:
        return "", f"file_name '{file_name}' escapes its root ('..')"
    path = root / file_name
    real_root = real_roots.get(root) if real_roots is not None else None
    if real_root is None:
        real_root = root.resolve()
        if real_roots is not None:
            real_roots[root] = real_root
    real_path = path.resolve(strict=True)  # OSError (missing, too long, a loop, no permission): a reason
    if real_path != real_root and real_root not in real_path.parents:
        return "", f"file_name '{file_name}' resolves outside its root (symlink to {real_path})"
    if not real_path.is_file():
        return "", f"photo is not a regular file: {path}"
    return str(path), ""


# -- paths -----------------------------------------------------------------------------------------------
def split_by_path_map(path_map: Mapping[str, str], stored_path: str) -> tuple[str, str]:
    """(prefix, relative path) for a path the manager stored, by the longest ``source.path_map`` prefix.

    ('', '') when no prefix covers it. The prefix becomes the file's root key, the folder it maps to the
    root on this machine, so ``photos.resolve_photo`` keeps the path inside that folder.
    """
    path = PurePosixPath(stored_path)
    best = ""
    for prefix in path_map:
        clean = prefix.rstrip("/") or "/"
        if (path == PurePosixPath(clean) or PurePosixPath(clean) in path.parents) and len(clean) > len(best):
            best = clean
    if not best:
        return "", ""
    return best, str(path.relative_to(best))


def path_map_roots(path_map: Mapping[str, str]) -> dict[str, str]:
    return {(prefix.rstrip("/") or "/"): folder for prefix, folder in path_map.items()}


def roots(export: Export) -> dict[str, str]:
    """Root key -> folder on this machine, for ``photos.resolve_photo``."""
    return dict(export.roots or {})


def unquote_volume_path(identifier: str) -> str:
    """A folder the identifier names itself ('volumeid:?path=/home/me', 'networkshareid:?mountpath=/mnt/nas')."""
    _, _, query = identifier.partition("?")
    values = urllib.parse.parse_qs(query)
    return (values.get("path") or values.get("mountpath") or [""])[0]
