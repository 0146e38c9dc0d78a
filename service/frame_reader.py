"""A predict request's body as its observations (:class:`service.frames.Observations`): read by one compiled
pass (``frame_reader.c``) for the JSON and MessagePack bodies a perception stack sends, validated by the schema
otherwise.

The general way (orjson or msgpack to dicts, the schema's validation to objects, then the columns) costs
about 2 ms of a 1,000-agent frame; the compiled pass a fraction of that. The reader takes only bodies the
schema accepts as they are (see ``frame_reader.c``); for any other body, and when the reader is not built or
not wanted (``TRAJPRED_NATIVE_KERNEL=false``), :func:`read_frame` returns None and the body is validated the
general way, which gives the same observations or the error. So every body meets exactly the same validation
and errors either way (``tests/service/test_frame_reader.py``).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Body
from pydantic import GetCoreSchemaHandler, ValidatorFunctionWrapHandler
from pydantic_core import CoreSchema, core_schema

from models.native import Extension, load_extension
from service.frames import Observations
from service.schemas import PredictRequest

#: the fewest bytes an observation takes, so a body of n bytes has at most n // it + 1: in JSON
#: ``{"agent_id":"a","timestamp":0,"x":0,"y":0}`` and a comma; in MessagePack that map (1 + 9 + 2 + 10 + 1 + 2
#: + 1 + 2 + 1 bytes)
MIN_OBSERVATION_BYTES = {"json": 43, "msgpack": 29}


@functools.cache
def _reader() -> Extension | None:
    return load_extension(
        "service._frame_reader_native", "the compiled reader of request bodies", "the schema's validation"
    )


def available() -> bool:
    """Whether the compiled reader is in use. The first call imports it: the service calls this at start-up,
    so that no request pays for it."""
    return _reader() is not None


def read_frame(
    body: bytes, encoding: Literal["json", "msgpack"] = "json", compiled: bool = True
) -> Observations | None:
    """The observations of a predict request's body (JSON, or MessagePack), in request order; None when the
    body is not one the reader takes (then validate it the general way), or the reader is not built or not
    wanted."""
    ext = _reader() if compiled else None
    if ext is None:
        return None
    cap = len(body) // MIN_OBSERVATION_BYTES[encoding] + 1
    id_at = np.empty(cap, np.int64)
    id_len = np.empty(cap, np.int64)
    t = np.empty(cap, np.float64)
    xy = np.empty((cap, 2), np.float64)
    kind = np.empty(cap, np.int8)
    buf = ext.ffi.from_buffer  # typed views of contiguous arrays, checked against the C declaration
    read = ext.lib.frame_observations_json if encoding == "json" else ext.lib.frame_observations_msgpack
    n = read(
        buf("char[]", body),
        len(body),
        cap,
        buf("int64_t[]", id_at),
        buf("int64_t[]", id_len),
        buf("double[]", t),
        buf("double[]", xy),
        buf("int8_t[]", kind),
    )
    if n <= 0:
        return None
    # the ids the reader took are printable ASCII: slices of the body decoded byte for character (latin-1
    # maps every byte, so MessagePack's binary numbers around them decode too) are those ids
    text = body.decode("latin-1")
    ids = [text[a : a + m] for a, m in zip(id_at[:n].tolist(), id_len[:n].tolist(), strict=True)]
    return Observations(ids, t[:n], xy[:n], kind[:n].astype(np.int64))


def _observations(value: Any, handler: ValidatorFunctionWrapHandler) -> Observations:
    if isinstance(value, Observations):  # read by the compiled reader: schema-valid by construction
        return value
    return Observations.of(handler(value))


class _AsPredictRequest:
    """Validates a body as :class:`PredictRequest` (its schema, its errors and their locations), to its
    :class:`Observations`; the compiled reader's :class:`Observations` pass as they are."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            _observations, handler.generate_schema(PredictRequest)
        )


#: the predict routes' body: declared (OpenAPI) and validated as a ``PredictRequest``, received as columns
ObservationsBody = Annotated[Observations, _AsPredictRequest(), Body()]
