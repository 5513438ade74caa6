"""Synapses: cleft connected components (map-reduce across chunks), the synapse table (700 nm merge,
autapse filter), the connectivity graph and the whole stage over arrays or layers, following the
paper's *Synapse detection and partner assignment* (Methods).

Heavy parts load on first use: ``find_synapses`` / ``synapses_layers`` (the stage), ``edge_list`` /
``to_networkx`` / ``adjacency_matrix`` / ``graph_summary`` (the wiring diagram)."""
from emkit.synapse.components import (
    TABLE_COLUMNS,
    CleftParams,
    cleft_components,
    cleft_components_layers,
    min_size_for,
)

__all__ = ["CleftParams", "min_size_for", "cleft_components", "cleft_components_layers", "TABLE_COLUMNS"]

from emkit.synapse.annotations import read_synapse_annotations, write_synapse_annotations  # noqa: E402
from emkit.synapse.graph import EDGE_COLUMNS, adjacency_matrix, edge_list, graph_summary, to_networkx  # noqa: E402
from emkit.synapse.pipeline import find_synapses, synapses_layers  # noqa: E402
from emkit.synapse.table import (  # noqa: E402
    SYNAPSE_COLUMNS,
    SynapseParams,
    build_synapse_table,
    cleft_to_synapse,
    read_synapse_table,
)

__all__ += ["SynapseParams", "SYNAPSE_COLUMNS", "build_synapse_table", "cleft_to_synapse", "read_synapse_table",
            "EDGE_COLUMNS", "edge_list", "to_networkx", "adjacency_matrix", "graph_summary", "find_synapses",
            "synapses_layers", "write_synapse_annotations", "read_synapse_annotations"]

from emkit.synapse.partners import (  # noqa: E402
    PARTNER_COLUMNS,
    PartnerParams,
    assign_partners,
    assign_partners_layers,
    partner_accuracy,
)

__all__ += ["PartnerParams", "PARTNER_COLUMNS", "assign_partners", "assign_partners_layers", "partner_accuracy"]
