"""Shared test setup: ``likeness`` from this checkout's ``workflow/``, ``synthlib`` from its ``resources/``."""

from __future__ import annotations

import sys

from fixtures import REPO_ROOT

sys.path[:0] = [str(REPO_ROOT / "workflow"), str(REPO_ROOT / "resources")]
