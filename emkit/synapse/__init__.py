"""Synapses: cleft connected components (map-reduce across chunks), following the paper's
*Synapse detection and partner assignment* (Methods)."""
from emkit.synapse.components import (
    TABLE_COLUMNS,
    CleftParams,
    cleft_components,
    cleft_components_layers,
    min_size_for,
)

__all__ = ["CleftParams", "min_size_for", "cleft_components", "cleft_components_layers", "TABLE_COLUMNS"]
