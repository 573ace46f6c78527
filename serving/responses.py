"""The model-status and model-metadata replies, built once as TF Serving's protos for both APIs.

gRPC sends the protos; REST sends their JSON form, printed as TF Serving prints it (all
primitive fields, int64 as strings, ``preserve_proto_field_names`` for metadata).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

from serving.errors import invalid_argument
from serving.server_core import ServableRequest, ServerCore

SIGNATURE_DEF_FIELD = "signature_def"


def model_spec(name: str, version: int, signature_name: str = "") -> model_pb2.ModelSpec:
    """Returns the ModelSpec that names a servable in a reply."""
    return model_pb2.ModelSpec(
        name=name, version=wrappers_pb2.Int64Value(value=version), signature_name=signature_name
    )


def model_status(core: ServerCore, model_name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
    """Builds the GetModelStatus reply (version labels are not used, as in TF Serving).

    Raises:
        ModelServerError: NOT_FOUND for an unknown model or version.
    """
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in core.statuses(model_name, version):
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        entry.status.error_code = int(status.error_code)
        entry.status.error_message = status.error_message
    return response


def model_metadata(
    core: ServerCore, request: ServableRequest, metadata_fields: list[str]
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """Builds the GetModelMetadata reply: the servable's SignatureDefMap.

    Raises:
        ModelServerError: INVALID_ARGUMENT for a missing or unknown metadata field,
            NOT_FOUND / INVALID_ARGUMENT when the servable cannot be resolved.
    """
    if not metadata_fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in metadata_fields:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    servable = core.servable(request)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_def_map.signature_def[name].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=model_spec(servable.model_name, servable.version)
    )
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map)
    return response


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> dict[str, Any]:
    """Returns the REST form of a GetModelStatus reply."""
    return json_format.MessageToDict(response, including_default_value_fields=True)


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict[str, Any]:
    """Returns the REST form of a GetModelMetadata reply (the Any unpacked, as TF Serving does)."""
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_def_map)
    options = {"including_default_value_fields": True, "preserving_proto_field_name": True}
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(signature_def_map, **options)},
    }
