"""Reading and writing volumes: Precomputed layers (through CloudVolume) and common files."""
from .kinds import KINDS, LayerKind, get_kind
from .grid import check_same_grid
from .layer import Layer, join_url, layer_exists, normalize_url

__all__ = ["Layer", "LayerKind", "KINDS", "get_kind", "normalize_url", "join_url", "layer_exists",
           "check_same_grid"]
from .convert import export_volume, import_volume  # noqa: E402

__all__ += ["import_volume", "export_volume"]
