"""What every validated declaration shares (config sections, trigger and defence specs, grid
specs): seeds within the range every generator takes, and numbers that are numbers.

Pydantic reads ``true`` as 1 for an integer field (``trigger.bits: true`` would be a
1-bit trigger) and as 1.0 for a float; a yes/no where a number belongs is a slip,
so it is refused with the key named.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# The largest seed: numpy's SeedSequence and torch's generators take it, and it bounds the
# typo (2^64 and more overflowed torch's generator: "ValueError: Overflow").
MAX_SEED = 2**32 - 1


def _leaves(annotation: Any) -> list[Any]:
    """The plain types (and literal values) an annotation is made of."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return [type(value) for value in typing.get_args(annotation)]
    if origin is typing.Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin is not None or isinstance(annotation, types.UnionType):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


@functools.cache
def numbers_only(model: type[BaseModel], name: str) -> bool:
    """Whether field ``name`` of ``model`` takes numbers (or lists of them) and never a bool."""
    field = model.model_fields.get(name)
    if field is None:
        return False
    leaves = _leaves(field.annotation)
    if any(leaf in (bool, Any, object) for leaf in leaves):
        return False
    return any(leaf in (int, float) for leaf in leaves)


@functools.cache
def number_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that take numbers only (checked on every validation)."""
    return tuple(name for name in model.model_fields if numbers_only(model, name))


def _holds_bool(value: Any) -> bool:
    if value is True or value is False:
        return True
    return type(value) in (list, tuple) and any(item is True or item is False for item in value)


def _shown(value: Any) -> str:
    """A value as YAML writes it: ``true``, ``[1, true]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return repr(value)


class StrictNumbers(BaseModel):
    """A model whose number fields refuse ``true`` and ``false``."""

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        # A model validator, not a field one: a union's tag field may not have a "before" one.
        if not isinstance(data, dict):
            return data
        wrong = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "value_error",
                    "expected a number, not a yes/no value (got {value})",
                    {"value": _shown(value)},
                ),
                loc=(name,),
                input=value,
            )
            for name in number_fields(cls)
            if name in data and _holds_bool(value := data[name])
        ]
        if wrong:  # raised as a ValidationError, each problem is reported at its own key
            raise ValidationError.from_exception_data(cls.__name__, wrong)
        return data
