"""likeness: turn PhotoPrism's face recognition into an SDXL LoRA training set.

The Snakemake rules under ``workflow/rules`` stay thin; the logic lives here, one module per concern.
"""

__version__ = "0.1.0"
