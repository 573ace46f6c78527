"""The schema a run validates against: the curated one, adapted to imported catalogues.

The curated ``pipeline/schema/schema.pbtxt`` lists the generated shop's categories and brands.
Imported logs have their own, so for them the category and brand domains are replaced by the
values in the data's ``items.csv`` (every event is joined to its item, so the catalogue is the
authority); event types, age groups, the price range and the presence rules stay as curated.

The run's schema is written under ``<output_dir>/schema/`` with its content hash in the file
name: ImportSchemaGen caches on the *path*, so a changed schema must get a new path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from shoprec import features
from shoprec.data import canonical

CURATED_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema",
                              "schema.pbtxt")
IMPORT_REPORT = "import_report.json"  # written by shoprec.data.importer
FILLED = "filled"


@dataclasses.dataclass(frozen=True)
class RunSchema:
    """Where the run's schema is and how it was made."""

    path: str
    description: str
    filled_fields: tuple[str, ...]  # optional fields the importer filled with a default

    @property
    def disabled_features(self) -> tuple[str, ...]:
        """Model features the data does not really have (filled): Transform makes them constant."""
        model_features = {feature.name for feature in features.FEATURES}
        return tuple(name for name in self.filled_fields if name in model_features)


def _domain(schema: schema_pb2.Schema, name: str) -> schema_pb2.StringDomain:
    for domain in schema.string_domain:
        if domain.name == name:
            return domain
    raise ValueError(f"the curated schema has no string domain {name!r}")


def filled_fields(data_dir: str) -> tuple[str, ...]:
    """Optional fields that ``import_report.json`` marks as filled (absent from the source)."""
    path = os.path.join(data_dir, IMPORT_REPORT)
    if not tf.io.gfile.exists(path):
        return ()
    with tf.io.gfile.GFile(path) as f:
        present = json.load(f).get("present_fields", {})
    return tuple(sorted(name for name, status in present.items() if status == FILLED))


def prepare_schema(data_dir: str, output_dir: str, curated_path: str = CURATED_SCHEMA) -> RunSchema:
    """Writes the run's schema (see the module docstring) and says what it did."""
    with tf.io.gfile.GFile(curated_path) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    items = canonical.read_table(os.path.join(data_dir, features.ITEMS_FILE))
    adapted = []
    for column in (features.CATEGORY, features.BRAND):
        domain = _domain(schema, column)
        observed = sorted(set(items[column]))
        if not set(observed) <= set(domain.value):
            del domain.value[:]
            domain.value.extend(observed)
            adapted.append(f"{len(observed)} {column} values")
    text = text_format.MessageToString(schema)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    schema_dir = os.path.join(output_dir, "schema", digest)
    tf.io.gfile.makedirs(schema_dir)
    path = os.path.join(schema_dir, "schema.pbtxt")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    description = ("curated" if not adapted else
                   f"curated, with domains from {features.ITEMS_FILE}: {', '.join(adapted)}")
    return RunSchema(path=path, description=description, filled_fields=filled_fields(data_dir))
