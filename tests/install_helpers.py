"""What the trainer-install and base-model tests build for themselves: no network, real git, pip and hub code.

- ``make_remote``: a local git repository standing for kohya-ss/sd-scripts, tag v0.10.1, whose one commit holds
  the TEST DOUBLE of sdxl_train_network.py and a requirements.txt naming a small local package.
- ``make_wheels``: small pure-Python packages built with ``pip wheel`` from temporary source trees, installed
  with ``pip --no-index --find-links`` (the ``pip_env`` below).
- ``make_hub_cache``: a Hugging Face hub cache laid out as huggingface_hub writes it (blobs named by
  sha256, snapshots/<revision>/<file> linking to them, refs/main), so hf_hub_download finds the file offline.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from train_helpers import DOUBLES, REPO_ROOT

OPTIONS_TSV = REPO_ROOT / "resources" / "kohya" / "sdxl_train_network_v0.10.1_options.tsv"
REQUIREMENT = "likeness-probe-req"  # what the fake remote's requirements.txt asks for
TORCH_STANDIN_NAME = "likeness-probe-torch"  # what the tests give train.torch instead of the real torch
REPO_ID = "stabilityai/stable-diffusion-xl-base-1.0"
REVISION = "462165984030d82259a11f4367a4eed129e94a7b"
FILENAME = "sd_xl_base_1.0.safetensors"


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_remote(root: Path, *, requirements: str = f"{REQUIREMENT}==1.0\n", tag: str = "v0.10.1") -> tuple[Path, str]:
    """A git repository with the double's script and a requirements.txt; returns (path, commit of the tag)."""
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    (root / "sdxl_train_network.py").write_bytes((DOUBLES / "sdxl_train_network.py").read_bytes())
    (root / "requirements.txt").write_text(requirements)
    git("add", ".", cwd=root)
    git("commit", "-q", "-m", "sd-scripts stand-in: the test double's script", cwd=root)
    git("tag", tag, cwd=root)
    return root, git("rev-parse", "HEAD", cwd=root).strip()


def _wheel(source_root: Path, out: Path, name: str, version: str) -> None:
    module = name.replace("-", "_")
    tree = source_root / f"{module}-{version}"
    tree.mkdir(parents=True)
    (tree / f"{module}.py").write_text(f'"""Test package {name}."""\n\n__version__ = "{version}"\n')
    (tree / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core"]\nbuild-backend = "flit_core.buildapi"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndescription = "test package"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(tree)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def make_wheels(root: Path, packages: dict[str, str] | None = None) -> Path:
    """A folder of wheels (name -> version) built by pip from temporary source trees."""
    out = root / "wheels"
    out.mkdir(parents=True)
    for name, version in (packages or {REQUIREMENT: "1.0", TORCH_STANDIN_NAME: "2.6.0"}).items():
        _wheel(root / "src", out, name, version)
    return out


def pip_env(wheels: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) in which every pip call looks only in ``wheels`` (pip reads
    PIP_* variables like its options)."""
    env = dict(os.environ if base is None else base)
    for key in ("PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        env.pop(key, None)
    env.update(
        {
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheels),
            "PIP_CONFIG_FILE": os.devnull,  # no machine-wide index, constraint or find-links settings
            "PIP_NO_CACHE_DIR": "1",
            "LIKENESS_DOUBLE_OPTIONS_TSV": str(OPTIONS_TSV),
        }
    )
    return env


def install_config(tmp: Path, remote: Path, commit: str, **overrides: Any) -> dict[str, Any]:
    """The install keys of a ``train`` section for the local remote (torch replaced by a small package)."""
    cfg: dict[str, Any] = {
        "sd_scripts": "auto",
        "sd_scripts_repo": str(remote),
        "sd_scripts_commit": commit,
        "cache_dir": str(tmp / "cache" / "train"),
        "torch": f"{TORCH_STANDIN_NAME}==2.6.0",
        "torch_index_url": "",
    }
    cfg.update(overrides)
    return cfg


def make_hub_cache(cache: Path, content: bytes, *, repo_id: str = REPO_ID, revision: str = REVISION) -> Path:
    """Lay out ``cache`` as huggingface_hub does for one downloaded file; returns the snapshot path."""
    sha = hashlib.sha256(content).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(content)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / FILENAME).symlink_to(Path("..") / ".." / "blobs" / sha)
    return snapshot / FILENAME
