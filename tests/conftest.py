"""Shared test setup: import the ``likeness`` package from this checkout's ``workflow/`` folder."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "workflow"))
