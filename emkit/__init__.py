"""emkit — neural circuit reconstruction from serial-section electron microscopy.

The core is headless and light to import: heavy dependencies (torch, dask, neuroglancer,
napari) are imported inside the functions that use them.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
