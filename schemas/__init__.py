"""pandera schemas, one DataFrameModel per persisted table.

Column names are fixed snake_case and never depend on arguments. Use :func:`schemas.validate`
(or the table-specific helpers) rather than calling ``.validate`` directly: it turns pandera's
failure report into an error that names the file, row and field.
"""

from schemas.base import validate
from schemas.predictions import PredictionsSchema, predictions_schema
from schemas.stimuli import MANIFEST_SOURCES, ManifestSchema, NormsSchema, manifest_schema

__all__ = [
    "MANIFEST_SOURCES", "ManifestSchema", "NormsSchema", "PredictionsSchema", "manifest_schema",
    "predictions_schema", "validate",
]
