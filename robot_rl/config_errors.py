"""Readable configuration errors: one or two lines that say what is wrong and what would be right.

Hydra and OmegaConf report a bad override with a 16-90 line traceback whose last line may even contradict this
project (hydra suggests ``+key=value`` to add a key; our schema refuses unknown keys). :func:`explain` turns
those exceptions into a :class:`UsageError` message: the offending override, the expected type, the valid
choices of a config group (internal ``*_schema`` nodes left out) or the closest known key ("did you mean").
``robot-rl`` prints the message and exits with status 2; ``--debug`` or ``HYDRA_FULL_ERROR=1`` shows the
original traceback instead.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Iterable, Sequence


class UsageError(Exception):
    """A mistake in what the user asked for (override, path, missing argument): printed without a traceback."""


# Config groups a user picks with ``group=option``; the ConfigStore also holds ``<option>_schema`` nodes that
# YAML presets extend: those are implementation details, never a choice to offer.
INTERNAL_SUFFIX = "_schema"
_TYPE_WORDS = {"Float": "a number", "Integer": "an integer", "Boolean": "true or false", "String": "a string"}


def public_options(options: Iterable[str]) -> list[str]:
    return sorted(o for o in options if not o.endswith(INTERNAL_SUFFIX))


def flat_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a (DictConfig or dataclass) tree, leaves and inner nodes: ``learner``, ``learner.utd``."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        node = OmegaConf.structured(node)
    keys = []
    for key in node.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys += flat_keys(child, full + ".")
    return keys


def closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate nearest to ``name``: the same last part in another section (``algo.utd`` -> ``learner.utd``),
    else the closest whole key, else the closest last part (``learner.utdd`` -> ``learner.utd``)."""
    tail = name.rsplit(".", 1)[-1]
    same_tail = [c for c in candidates if c.rsplit(".", 1)[-1] == tail]  # right name, wrong section
    if same_tail:
        return same_tail[0]
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if match:
        return match[0]
    by_tail: dict[str, str] = {}
    for c in candidates:
        by_tail.setdefault(c.rsplit(".", 1)[-1], c)
    match = difflib.get_close_matches(tail, list(by_tail), n=1, cutoff=0.75)
    return by_tail[match[0]] if match else None


def _override_for(key: str, overrides: Sequence[str]) -> str:
    for item in overrides:
        if item.lstrip("+~").split("=", 1)[0] == key:
            return item
    return key


def _unknown_key(key: str, overrides: Sequence[str], known: Sequence[str]) -> str:
    shown = _override_for(key, overrides)
    msg = f"unknown config key '{key}'" + (f" (in {shown})" if shown != key else "")
    guess = closest(key, known)
    if guess:
        return f"{msg}; did you mean '{guess}'?"
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k[len(parent) + 1:] for k in known if parent and k.startswith(parent + ".")
                and "." not in k[len(parent) + 1:]]
    if siblings:
        return f"{msg}; keys under '{parent}': {', '.join(siblings)}"
    top = [k for k in known if "." not in k]
    return f"{msg}; top-level keys: {', '.join(top)}"


def explain(exc: BaseException, overrides: Sequence[str], known_keys: Callable[[], Sequence[str]]) -> str | None:
    """One or two lines for a hydra/OmegaConf error caused by ``overrides``; None if it is not such an error.

    ``known_keys()`` lists the valid dotted keys (called only for an unknown key: it composes the config)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([^/']+)/([^']+)'", str(exc))
        if m is None:
            return None
        group, option = m.groups()
        choices = public_options(exc.options or [])
        guess = closest(option, choices)
        hint = f"did you mean {group}={guess}? " if guess else ""
        return f"{group}={option}: no such {group}; {hint}valid choices: {', '.join(choices)}"
    if isinstance(exc, OverrideParseException):
        bad = re.search(r"Error parsing override '([^']*)'", str(exc))
        return f"cannot parse override '{bad.group(1) if bad else exc}': expected key=value (e.g. learner.utd=2)"
    cause = exc.__cause__ if isinstance(exc, ConfigCompositionException) else exc
    if not isinstance(cause, OmegaConfBaseException):
        return None
    key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        m = re.search(r"Could not override '([^']+)'", str(exc))
        return _unknown_key(m.group(1) if m else key, overrides, known_keys())
    if isinstance(cause, ValidationError):
        shown = _override_for(key, overrides)
        conv = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", str(cause))
        if conv:
            value, kind = conv.groups()
            return f"{shown}: {key} must be {_TYPE_WORDS.get(kind, kind)}, got '{value}'"
        if "is not a subclass of" in str(cause):
            return f"{shown}: '{key}' is a section, not a value; set one of its keys (e.g. {key}.<name>=...)"
        return f"{shown}: {str(cause).splitlines()[0]}"
    first = str(cause).splitlines()[0]
    return f"{_override_for(key, overrides) if key else 'config'}: {first}"
