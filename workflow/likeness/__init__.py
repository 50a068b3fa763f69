"""likeness: turn a photo library's face recognition into a personal SDXL LoRA.

The Snakemake rules under ``workflow/rules`` stay thin; the logic lives here, one subpackage per stage.
"""

from pathlib import Path

__version__ = "0.1.0"

# Where the package finds the workflow's own files: the one home of these paths.
WORKFLOW_DIR = Path(__file__).resolve().parents[1]  # workflow/: this package, scripts/, schemas/
RESOURCES = WORKFLOW_DIR.parent / "resources"  # tables, fonts, option lists shipped with the workflow
