"""Typed payloads: a Job class with `payload_type = SomeModel` (a pydantic model or a dataclass).

At dispatch the payload (an instance of the type, or a dict) is validated and stored as the
type's JSON (pydantic's `mode="json"`); when the job runs, handle() gets `self.payload` back
as an instance, datetimes, UUIDs, enums and nested models included. Both directions go
through a pydantic TypeAdapter, so a dataclass needs pydantic as a model does
(`pip install 'aiojobs-redis[pydantic]'`). Jobs without a payload_type never import it.

Everything about a job's payload crossing the wire is here: `encode_job_payload` at
dispatch, `decode_job_payload` when a stored job becomes a Job again.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from .codec import decode_payload, encode_payload
from .errors import ConfigurationError, InvalidPayload

if TYPE_CHECKING:
    from pydantic import TypeAdapter, ValidationError

    from .job import Job

_PIP_HINT = "pip install 'aiojobs-redis[pydantic]'"
_MAX_ERRORS_SHOWN = 5


def check_payload_type(owner: str, payload_type: object) -> None:
    """Refuse, when the class is defined, a payload_type that cannot work."""
    if payload_type is None:
        return
    if not isinstance(payload_type, type) or not (
        _is_pydantic_model(payload_type) or dataclasses.is_dataclass(payload_type)
    ):
        raise ConfigurationError(
            f"{owner}.payload_type must be a pydantic BaseModel subclass or a dataclass, not {payload_type!r}"
        )
    try:
        import pydantic  # noqa: F401
    except ImportError:
        raise ConfigurationError(f"{owner}.payload_type needs pydantic: {_PIP_HINT}") from None


def encode_job_payload(job: Job, max_bytes: int) -> bytes:
    """The bytes stored for `job`'s payload: validated and converted first when typed."""
    payload_type = type(job).payload_type
    if payload_type is None:
        return encode_payload(job.payload, max_bytes)
    value = _validate(job.name, payload_type, job.payload, "at dispatch")
    return encode_payload(_adapter(payload_type).dump_python(value, mode="json"), max_bytes)


def decode_job_payload(cls: type[Job], data: bytes) -> Any:
    """The payload handle() gets: the decoded JSON, or an instance of the class's payload_type.

    A stored payload that no longer validates (the type changed since dispatch) raises
    InvalidPayload: the job cannot run, and fails for good without using an attempt.
    """
    payload = decode_payload(data)
    if cls.payload_type is None:
        return payload
    return _validate(cls.name, cls.payload_type, payload, "when it was run")


def _is_pydantic_model(value: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # a model exists only once pydantic is imported
    return pydantic is not None and issubclass(value, pydantic.BaseModel)


_adapters: dict[type, TypeAdapter[Any]] = {}  # built once per type: building one is slow


def _adapter(payload_type: type) -> TypeAdapter[Any]:
    adapter = _adapters.get(payload_type)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _adapters[payload_type] = TypeAdapter(payload_type)
    return adapter


def _validate(job_name: str, payload_type: type, payload: Any, when: str) -> Any:
    from pydantic import ValidationError

    try:
        return _adapter(payload_type).validate_python(payload)
    except ValidationError as exc:
        raise InvalidPayload(
            f"payload of {job_name} is not a valid {payload_type.__qualname__} {when}: {_describe(exc)}"
        ) from None


def _describe(exc: ValidationError) -> str:
    """Where and what, never the input values: a payload may hold secrets."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or 'the payload'}: {error['msg']}"
        for error in errors[:_MAX_ERRORS_SHOWN]
    ]
    more = len(errors) - _MAX_ERRORS_SHOWN
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
