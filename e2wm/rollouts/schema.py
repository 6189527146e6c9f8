"""The rollout format: one Parquet row per episode, its steps nested, each with what it changed.

``collect`` writes it, ``e2wm.rollouts.shards`` reads it back, and the corpus builder, the renderer and
the plan checks read episodes as the dicts of these rows.
"""

from __future__ import annotations

import pyarrow as pa

_EDGE = pa.struct([("from_id", pa.int64()), ("relation", pa.string()), ("to_id", pa.int64())])
_STEP = pa.struct(
    [
        ("index", pa.int32()),
        ("actor", pa.int32()),
        ("action", pa.string()),
        ("verb", pa.string()),
        ("object_ids", pa.list_(pa.int64())),
        ("object_names", pa.list_(pa.string())),
        ("action_text", pa.string()),
        ("success", pa.bool_()),
        ("failure", pa.string()),
        (
            "node_changes",
            pa.list_(
                pa.struct(
                    [
                        ("id", pa.int64()),
                        ("name", pa.string()),
                        ("added", pa.list_(pa.string())),
                        ("removed", pa.list_(pa.string())),
                    ]
                )
            ),
        ),
        ("edges_added", pa.list_(_EDGE)),
        ("edges_removed", pa.list_(_EDGE)),
        ("change_text", pa.string()),
        ("state_text", pa.string()),
    ]
)
_PREDICATE = pa.struct(
    [
        ("subject_id", pa.int64()),
        ("subject", pa.string()),
        ("relation", pa.string()),
        ("object_id", pa.int64()),
        ("object", pa.string()),
    ]
)
SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("agent", pa.string()),
        ("scene", pa.string()),
        ("graph_id", pa.string()),
        ("seed", pa.int64()),
        ("program_id", pa.string()),
        ("activity", pa.string()),
        ("description", pa.string()),
        ("split", pa.string()),
        ("goal", pa.list_(_PREDICATE)),
        ("success", pa.bool_()),
        ("num_steps", pa.int32()),
        ("initial_state_text", pa.string()),
        ("people_rooms", pa.list_(pa.int64())),
        ("steps", pa.list_(_STEP)),
    ]
)
