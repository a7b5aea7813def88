"""The one grammar of ``--override ID=VALUE`` on lesionseg's command line (``predict``, ``crossval``).

A value is read as YAML (:func:`yaml.safe_load`, the loader MONAI uses for bundle configs), so an override means
what the same text means in ``configs/*.yaml``: ``true`` / ``false`` (any case) are booleans, ``3`` an integer,
``[128, 128]`` a list, ``{a: 1}`` a mapping, ``null`` nothing, and anything else a string. Two additions, so
that the spellings MONAI's own command line (``python -m monai.bundle run --key value``) accepts mean the same
here: numbers in exponent notation without a dot (``1e-3``, which YAML 1.1 leaves a string) are floats, and
Python's ``None`` is ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["OverrideError", "parse_override_value", "parse_overrides"]


class OverrideError(ValueError):
    """An ``--override`` that cannot be read; the message quotes it and says what is expected."""


class _OverrideLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float and ``None`` as null (module docstring)."""


# YAML 1.2's float without a dot (YAML 1.1 requires one): 1e-3, -2E+5
_OverrideLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)
_OverrideLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^None$"), ["N"])


def parse_override_value(text: str) -> Any:
    """The value of one override, read as YAML (module docstring).

    Example:
        >>> [parse_override_value(t) for t in ("false", "True", "2", "1e-3", "[64, 64]", "None", "run a")]
        [False, True, 2, 0.001, [64, 64], None, 'run a']

    Raises:
        yaml.YAMLError: ``text`` is not valid YAML (e.g. ``[1, 2``).
    """
    return yaml.load(text, Loader=_OverrideLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(pairs: Iterable[str], option: str = "--override") -> dict[str, Any]:
    """``["max_epochs=2", "image_size=[32,32]", "resume=false"]`` -> ``{"max_epochs": 2, ..., "resume": False}``.

    Args:
        pairs: ``ID=VALUE`` texts; the id is a config id (``network_def#features``), the value YAML.
        option: the command-line option named in errors.

    Raises:
        OverrideError: quoting the entry, for one without ``ID=`` or whose value is not valid YAML.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        key = key.strip()
        if not separator or not key:
            raise OverrideError(f"{option} {pair!r}: expected ID=VALUE, e.g. max_epochs=50 or 'image_size=[128,128]'")
        try:
            overrides[key] = parse_override_value(text)
        except yaml.YAMLError as error:
            problem = " ".join(str(error).split())
            raise OverrideError(f"{option} {pair!r}: the value is not valid YAML ({problem})") from None
    return overrides
