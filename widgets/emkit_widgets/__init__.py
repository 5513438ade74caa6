"""Jupyter and napari front-ends for emkit (they call the library; no logic of their own)."""
