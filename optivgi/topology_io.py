"""Reading a site topology from a plain document (JSON, TOML or YAML decoded to dicts and lists).

The block (the same in a scenario's ``topology`` field and in a site file)::

    {"name": "depot", "voltage": 230, "limit_kw": 100, "limit_a": 160,
     "children": [
       {"name": "feeder-A", "kind": "feeder", "limit_a": 40, "children": [
         {"name": "ST-01", "kind": "station", "phases": 1, "phase": "L2",
          "connectors": [{"id": 1}, {"id": 2, "phase": "L3", "limit_a": 32}]}]}]}

Node keys: ``name`` (required below the root, unique), ``kind``, ``description``,
``limit_kw`` (number >= 0), ``limit_a`` (one number for every phase, a list of three numbers or
nulls, or an object with ``L1``/``L2``/``L3``), ``children``; the root also ``voltage``. A
station (``kind: "station"`` or a node with ``connectors``) has ``station_id`` (default: its
name), ``connectors`` and defaults for them (``phases``, ``phase``, ``rotation``). A
connector: ``id`` (integer >= 0, required), ``name``, ``description``, ``phases`` (1 or 3,
default 3), ``phase`` (grid phase of its L1: ``"L1"``, ``"L2"`` or ``"L3"``), ``rotation``
(three-phase: the grid phases of its L1, L2, L3, e.g. ``"L2L3L1"``), ``limit_kw``, ``limit_a``.
A single-phase connector without ``phase`` is counted on every phase (the worst case).

Every other key is an error naming the key and where it is (``topology.children[1].limit_A``).
See the "Site topology" page of the docs.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optivgi.errors import ConfigurationError, ScenarioError
from optivgi.models.ev import EV
from optivgi.topology import DEFAULT_VOLTAGE, PHASES, Node, Topology, Wiring

__all__ = [
    "KINDS",
    "TopologyError",
    "load_topology",
    "parse_topology",
    "render_topology",
    "scenario_topology",
    "topology_to_doc",
]

#: Node kinds a document may name; only ``station`` and ``connector`` change the meaning.
KINDS = ("site", "grid", "transformer", "feeder", "panel", "circuit", "breaker", "group", "station")

_NODE_KEYS = {"name", "kind", "description", "limit_kw", "limit_a", "children"}
_ROOT_KEYS = _NODE_KEYS | {"voltage"}
_WIRING_KEYS = {"phases", "phase", "rotation"}
_STATION_KEYS = (_NODE_KEYS - {"children"}) | {"station_id", "connectors"} | _WIRING_KEYS
_CONNECTOR_KEYS = {"id", "name", "description", "limit_kw", "limit_a"} | _WIRING_KEYS
_MAX_DEPTH = 32


class TopologyError(ConfigurationError, ValueError):
    """A topology document breaks a rule; the message starts with where (``topology.children[0]``)."""


def _fail(where: str, rule: str, value: object = ...) -> TopologyError:
    shown = "" if value is ... else f", got {value!r}"
    return TopologyError(f"{where}: {rule}{shown}")


def _check_keys(raw: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _fail(f"{where}.{key}", f"unknown key in a {what} (known: {known})")


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, "must be a finite number", value)
    if value < 0 or (positive and value == 0):
        raise _fail(where, "must be > 0" if positive else "must be >= 0", value)
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, "must be a non-empty string", value)
    return value


def _limit_a(value: Any, where: str) -> tuple[float | None, float | None, float | None]:
    if value is None:
        return (None, None, None)
    if isinstance(value, Mapping):
        _check_keys(value, set(PHASES), where, "per-phase limit")
        vals = [None if value.get(p) is None else _number(value[p], f"{where}.{p}") for p in PHASES]
        return (vals[0], vals[1], vals[2])
    if isinstance(value, list):
        if len(value) != 3:
            raise _fail(where, "a list must have three values (L1, L2, L3)", value)
        vals = [None if v is None else _number(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return (vals[0], vals[1], vals[2])
    a = _number(value, where)
    return (a, a, a)


def _phase(value: Any, where: str) -> int:
    if value not in PHASES:
        raise _fail(where, "must be one of 'L1', 'L2', 'L3'", value)
    return PHASES.index(value)


def _wiring(raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> Wiring:
    merged = {**{k: v for k, v in defaults.items() if k in _WIRING_KEYS}, **{k: v for k, v in raw.items()
                                                                           if k in _WIRING_KEYS}}
    src = {k: (where if k in raw else where.rsplit(".connectors", 1)[0]) for k in merged}
    phases = merged.get("phases", 3)
    if phases not in (1, 3) or isinstance(phases, bool):
        raise _fail(f"{src.get('phases', where)}.phases", "must be 1 or 3", phases)
    phase = None if merged.get("phase") is None else _phase(merged["phase"], f"{src['phase']}.phase")
    rotation_raw = merged.get("rotation")
    if phases == 1:
        if rotation_raw is not None:
            raise _fail(f"{src['rotation']}.rotation", "only a three-phase connector has a rotation; use 'phase'")
        return Wiring(1, None if phase is None else (phase,))
    if rotation_raw is None:
        first = 0 if phase is None else phase
        return Wiring(3, (first, (first + 1) % 3, (first + 2) % 3))
    rwhere = f"{src['rotation']}.rotation"
    if isinstance(rotation_raw, str):
        parts = [rotation_raw[i:i + 2] for i in range(0, len(rotation_raw), 2)]
    elif isinstance(rotation_raw, list):
        parts = list(rotation_raw)
    else:
        raise _fail(rwhere, "must be a string like 'L2L3L1' or a list of three phases", rotation_raw)
    if len(parts) != 3 or any(p not in PHASES for p in parts) or len(set(parts)) != 3:
        raise _fail(rwhere, "must name L1, L2 and L3 once each, e.g. 'L2L3L1'", rotation_raw)
    grid = tuple(PHASES.index(p) for p in parts)
    if phase is not None and grid[0] != phase:
        raise _fail(rwhere, f"puts the connector's L1 on {parts[0]}, but 'phase' says {PHASES[phase]}",
                    rotation_raw)
    return Wiring(3, grid)


def _connector(raw: Any, station: str, defaults: Mapping[str, Any], where: str) -> Node:
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be an object", raw)
    _check_keys(raw, _CONNECTOR_KEYS, where, "connector")
    if "id" not in raw:
        raise _fail(f"{where}.id", "required field is missing")
    cid = raw["id"]
    if isinstance(cid, bool) or not isinstance(cid, int) or cid < 0:
        raise _fail(f"{where}.id", "must be an integer >= 0", cid)
    name = _text(raw["name"], f"{where}.name") if "name" in raw else f"{station}/{cid}"
    return Node(
        name=name, kind="connector",
        limit_kw=None if raw.get("limit_kw") is None else _number(raw["limit_kw"], f"{where}.limit_kw"),
        limit_a=_limit_a(raw.get("limit_a"), f"{where}.limit_a"),
        key=(station, cid), wiring=_wiring(raw, defaults, where),
    )


def _node(raw: Any, where: str, depth: int, *, root: bool = False) -> Node:
    if depth > _MAX_DEPTH:
        raise _fail(where, f"the tree is deeper than {_MAX_DEPTH} levels")
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be an object", raw)
    kind = raw.get("kind", "site" if root else None)
    is_station = kind == "station" or "connectors" in raw
    if kind is None:
        kind = "station" if is_station else "panel"
    if kind not in KINDS:
        raise _fail(f"{where}.kind", f"must be one of {', '.join(KINDS)}", kind)
    if is_station and kind != "station":
        raise _fail(f"{where}.kind", "a node with 'connectors' is a station", kind)
    allowed = _STATION_KEYS if is_station else (_ROOT_KEYS if root else _NODE_KEYS)
    _check_keys(raw, allowed | ({"voltage"} if root else set()), where, "station" if is_station else "node")
    if "name" in raw:
        name = _text(raw["name"], f"{where}.name")
    elif root:
        name = "site"
    else:
        raise _fail(f"{where}.name", "required field is missing")
    if "description" in raw and not isinstance(raw["description"], str):
        raise _fail(f"{where}.description", "must be a string", raw["description"])
    limit_kw = None if raw.get("limit_kw") is None else _number(raw["limit_kw"], f"{where}.limit_kw")
    limit_a = _limit_a(raw.get("limit_a"), f"{where}.limit_a")
    if is_station:
        station = _text(raw["station_id"], f"{where}.station_id") if "station_id" in raw else name
        conns = raw.get("connectors", [])
        if not isinstance(conns, list) or not conns:
            raise _fail(f"{where}.connectors", "must be a non-empty list", conns)
        children = tuple(_connector(c, station, raw, f"{where}.connectors[{i}]") for i, c in enumerate(conns))
    else:
        kids = raw.get("children", [])
        if not isinstance(kids, list):
            raise _fail(f"{where}.children", "must be a list", kids)
        children = tuple(_node(c, f"{where}.children[{i}]", depth + 1) for i, c in enumerate(kids))
    return Node(name=name, kind=kind, limit_kw=limit_kw, limit_a=limit_a, children=children)


def parse_topology(doc: Any, where: str = "topology", *, voltage: float | None = None) -> Topology:
    """Validate a decoded topology block and build the :class:`~optivgi.topology.Topology`.

    ``voltage`` is used when the block gives none (default 230 V).

    Raises:
        TopologyError: naming the first offending key and its path.
    """
    root = _node(doc, where, 0, root=True)
    volts = voltage if voltage is not None else DEFAULT_VOLTAGE
    if isinstance(doc, Mapping) and "voltage" in doc:
        volts = _number(doc["voltage"], f"{where}.voltage", positive=True)
    try:
        return Topology(root, voltage=volts)
    except ValueError as exc:
        raise _fail(where, str(exc)) from None


def load_topology(path: str | Path) -> Topology:
    """Read a topology block from a ``.json``, ``.toml`` or ``.yaml``/``.yml`` file.

    Raises:
        TopologyError: unreadable file, bad syntax, or a rule broken (the message starts with the
            file name).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read file: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            doc: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise TopologyError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except TopologyError:
        raise
    except Exception as exc:  # each parser has its own error class; the message says what is wrong
        raise TopologyError(f"{path}: cannot parse {suffix.lstrip('.') or 'json'}: {exc}") from None
    try:
        return parse_topology(doc, "topology")
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None


def scenario_topology(doc: Mapping[str, Any], evs: Sequence[EV]) -> Topology | None:
    """The topology of a decoded scenario document, or None when it has no ``topology`` block.

    Every EV must sit on a connector of the tree.

    Raises:
        ScenarioError: the block breaks a rule, or an EV's connector is not in the tree.
    """
    raw = doc.get("topology")
    if raw is None:
        return None
    try:
        topology = parse_topology(raw, "topology")
    except TopologyError as exc:
        raise ScenarioError(str(exc)) from None
    for i, ev in enumerate(evs):
        if topology.connector((str(ev.station_id), ev.connector_id)) is None:
            raise ScenarioError(f"evs[{i}]: connector {ev.station_id}/{ev.connector_id} is not in the topology")
    return topology


def _limits_doc(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.limit_kw is not None:
        out["limit_kw"] = node.limit_kw
    amps = node.limit_a
    if any(a is not None for a in amps):
        out["limit_a"] = amps[0] if amps[0] == amps[1] == amps[2] else list(amps)
    return out


def _node_doc(node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": node.name, "kind": node.kind, **_limits_doc(node)}
    conns = [c for c in node.children if c.key is not None]
    if conns:
        doc["station_id"] = conns[0].key[0] if conns[0].key else node.name
        doc["connectors"] = []
        for c in conns:
            if c.key is None or c.wiring is None:
                continue
            entry: dict[str, Any] = {"id": c.key[1], "name": c.name, "phases": c.wiring.phases, **_limits_doc(c)}
            if c.wiring.grid is not None:
                entry["phase" if c.wiring.phases == 1 else "rotation"] = "".join(PHASES[g] for g in c.wiring.grid)
            doc["connectors"].append(entry)
    elif node.children:
        doc["children"] = [_node_doc(child) for child in node.children]
    return doc


def topology_to_doc(topology: Topology) -> dict[str, Any]:
    """The topology as a block :func:`parse_topology` reads back to the same tree."""
    return {"voltage": topology.voltage, **_node_doc(topology.root)}


def render_topology(topology: Topology) -> str:
    """A text drawing of the tree, one node per line with its limits and wiring."""
    lines: list[str] = []

    def label(node: Node) -> str:
        parts = [node.name, f"({node.kind})"]
        if node.limit_kw is not None:
            parts.append(f"{node.limit_kw:g} kW")
        amps = node.limit_a
        if any(a is not None for a in amps):
            if amps[0] == amps[1] == amps[2]:
                parts.append(f"{amps[0]:g} A/phase")
            else:
                parts.append(" ".join(f"{p} {a:g} A" for p, a in zip(PHASES, amps, strict=True) if a is not None))
        if node.wiring is not None:
            grid = node.wiring.grid
            if node.wiring.phases == 1:
                parts.append("1-phase on " + (PHASES[grid[0]] if grid else "unknown phase"))
            else:
                parts.append("3-phase " + "".join(PHASES[g] for g in grid or ()))
        return " ".join(parts)

    def walk(node: Node, prefix: str, last: bool, root: bool) -> None:
        lines.append(label(node) if root else f"{prefix}{'`-- ' if last else '|-- '}{label(node)}")
        inner = "" if root else prefix + ("    " if last else "|   ")
        for i, child in enumerate(node.children):
            walk(child, inner, i == len(node.children) - 1, False)

    walk(topology.root, "", True, True)
    return "\n".join(lines)
