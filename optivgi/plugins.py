"""Discovery of algorithm and translation plugins through entry points.

A package adds an algorithm by declaring, in its own ``pyproject.toml``::

    [project.entry-points."optivgi.algorithms"]
    my-algo = "my_package.module:MyAlgorithm"

and a translation likewise under ``optivgi.translations``. Installing the package is enough.
"""

from __future__ import annotations

import importlib
import logging
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs

from optivgi.algorithms.base import Algorithm
from optivgi.errors import PluginError
from optivgi.translation import Translation

__all__ = [
    "ALGORITHMS_GROUP",
    "COMMANDS_GROUP",
    "TRANSLATIONS_GROUP",
    "PluginInfo",
    "available",
    "load_algorithm",
    "load_commands",
    "load_translation_class",
]

logger = logging.getLogger(__name__)

ALGORITHMS_GROUP = "optivgi.algorithms"
COMMANDS_GROUP = "optivgi.commands"
TRANSLATIONS_GROUP = "optivgi.translations"


@attrs.frozen
class PluginInfo:
    """One registered plugin: its name, target and the distribution that declares it."""

    name: str
    value: str
    distribution: str
    version: str


def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        # The first declaration wins; a duplicate is reported rather than silently replacing it.
        if ep.name in found and found[ep.name].value != ep.value:
            logger.warning("plugin %r in %s declared twice (%s, %s); using the first",
                           ep.name, group, found[ep.name].value, ep.value)
            continue
        found.setdefault(ep.name, ep)
    return found


def available(group: str) -> list[PluginInfo]:
    """Every plugin registered in ``group``, sorted by name."""
    infos = []
    for name, ep in sorted(_entry_points(group).items()):
        dist = ep.dist
        infos.append(PluginInfo(name, ep.value, dist.name if dist else "?", dist.version if dist else "?"))
    return infos


_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _load_object(reference: str, kind: str) -> Any:
    """The object ``package.module:Attr`` names (an entry-point value, without an entry point)."""
    module_name, _, attr = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:  # an import error, a missing attribute or a failing module body
        raise PluginError(f"{kind} {reference!r} failed to load: {type(exc).__name__}: {exc}") from None
    return target


def _load(group: str, name: str, kind: str) -> Any:
    eps = _entry_points(group)
    if name not in eps and _DOTTED.match(name):
        return _load_object(name, kind)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise PluginError(f"unknown {kind} {name!r} (available: {known}; or give package.module:Class)")
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must not look like a missing one
        raise PluginError(f"{kind} {name!r} ({eps[name].value}) failed to load: {exc}") from exc


def load_algorithm(name: str) -> Algorithm:
    """Instantiate the algorithm registered as ``name``.

    Raises:
        PluginError: unknown name, import failure, or not an :class:`Algorithm`.
    """
    cls = _load(ALGORITHMS_GROUP, name, "algorithm")
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise PluginError(f"algorithm {name!r} is not an optivgi Algorithm subclass: {cls!r}")
    algorithm: Algorithm = cls()
    if algorithm.name != name:
        # The registered name is what users type and what reports show.
        algorithm.name = name  # type: ignore[misc]
    return algorithm


def load_commands() -> list[Any]:
    """The click commands (or groups) plugins register under ``optivgi.commands``.

    A plugin whose command cannot be imported (its extra is not installed, say) is left out with
    a debug log line, so the core command line always works.
    """
    commands = []
    for name, ep in sorted(_entry_points(COMMANDS_GROUP).items()):
        try:
            commands.append(ep.load())
        except Exception as exc:  # an optional plugin must never break `optivgi`
            logger.debug("command plugin %r (%s) not loaded: %s", name, ep.value, exc)
    return commands


def load_translation_class(name: str) -> type[Translation]:
    """The translation class registered as ``name``, or named ``package.module:Class``.

    Raises:
        PluginError: unknown name, import failure, or not a :class:`Translation` subclass.
    """
    cls = _load(TRANSLATIONS_GROUP, name, "translation")
    if not (isinstance(cls, type) and issubclass(cls, Translation)):
        raise PluginError(f"translation {name!r} is not an optivgi Translation subclass: {cls!r}")
    return cls
