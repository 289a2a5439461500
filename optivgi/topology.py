"""A site as a tree of circuits with phases: limits per node, per phase, and what they imply.

A :class:`Topology` is a tree: the site (grid connection) at the root, then transformers,
feeders, panels, ..., stations, and connectors (EVSEs) as leaves. Every node may carry a limit in
kW (on the sum of its three phases) and/or in A per phase (``L1``/``L2``/``L3``). Each connector
says how it is wired (:class:`Wiring`): single- or three-phase, and which grid phase each of its
lines is on (installers rotate single-phase chargers over the phases).

Everything here is pure (numpy and scipy only): the planner turns a topology and the EVs'
connectors into :class:`NetworkConstraints`, a sparse matrix with one row per limited node and
phase, and the validator, the fallback share and the ledger's :meth:`Topology.circuits` all read
the same tree. The file format is in :mod:`optivgi.topology_io`.

Conventions: ``voltage`` is line-to-neutral [V]; a connector drawing ``P`` kW over ``k`` phases
draws ``P / k`` kW, i.e. ``P * 1000 / (k * V)`` A, on each of its ``k`` grid phases. A
single-phase connector whose phase is not known is counted with its full power on every phase
(the worst case).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import attrs
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from optivgi.topology_network import PHASES, NetworkConstraints, Violation

__all__ = [
    "PHASES",
    "Circuit",
    "ConnectorKey",
    "FallbackShare",
    "NetworkConstraints",
    "Node",
    "Topology",
    "Violation",
    "Wiring",
]

_Float = npt.NDArray[np.float64]

#: A connector is known by its station (OCPP identity) and connector (or EVSE) number.
ConnectorKey = tuple[str, int]

#: Default line-to-neutral voltage [V] when the topology does not give one.
DEFAULT_VOLTAGE = 230.0


@attrs.frozen
class Wiring:
    """How a connector's lines are wired to the grid phases.

    Attributes:
        phases: 1 (single-phase) or 3 (three-phase).
        grid: grid phase index (0..2) of the connector's L1, L2, L3 (one entry for a
            single-phase connector, a permutation of three for a three-phase one); ``None`` for a
            single-phase connector whose phase is unknown (counted on every phase).
    """

    phases: int = 3
    grid: tuple[int, ...] | None = (0, 1, 2)

    def __attrs_post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError(f"'phases' must be 1 or 3, got {self.phases!r}")
        if self.grid is None:
            if self.phases != 1:
                raise ValueError("a three-phase connector needs its phase rotation")
            return
        if len(self.grid) != self.phases or sorted(set(self.grid)) != sorted(self.grid) or not all(
                g in (0, 1, 2) for g in self.grid):
            raise ValueError(f"'grid' must be {self.phases} distinct phase indices in 0..2, got {self.grid!r}")

    def fractions(self, ev_phases: int | None = None) -> tuple[float, float, float]:
        """Share of the connector's power on each grid phase (L1, L2, L3).

        ``ev_phases`` (1, 2 or 3) is how many phases the car draws on; a car uses the
        connector's first lines. ``None`` means as many as the connector has.
        """
        if self.grid is None:
            return (1.0, 1.0, 1.0)
        k = self.phases if ev_phases is None else max(1, min(int(ev_phases), self.phases))
        out = [0.0, 0.0, 0.0]
        for g in self.grid[:k]:
            out[g] = 1.0 / k
        return (out[0], out[1], out[2])


@attrs.frozen(eq=False)
class Node:
    """One node of the site tree.

    Attributes:
        name: unique in the tree.
        kind: ``site``, ``transformer``, ``feeder``, ``panel``, ``station``, ``connector``, ...
        limit_kw: most power [kW] through the node (sum of its phases), or None.
        limit_a: most current [A] per phase (L1, L2, L3); None where a phase is not limited.
        children: the nodes below.
        key: for a connector, its ``(station_id, connector_id)``; None elsewhere.
        wiring: for a connector, how it is wired; None elsewhere.
    """

    name: str
    kind: str = "panel"
    limit_kw: float | None = None
    limit_a: tuple[float | None, float | None, float | None] = (None, None, None)
    children: tuple[Node, ...] = ()
    key: ConnectorKey | None = None
    wiring: Wiring | None = None

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ValueError("a node needs a non-empty 'name'")
        values = [self.limit_kw, *self.limit_a]
        for v in values:
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"node {self.name!r}: limits must be finite numbers >= 0, got {v!r}")
        if (self.key is None) != (self.wiring is None):
            raise ValueError(f"node {self.name!r}: a connector needs both 'key' and 'wiring'")
        if self.key is not None and self.children:
            raise ValueError(f"connector {self.name!r} cannot have children")

    @property
    def is_connector(self) -> bool:
        """True for a leaf a car plugs into."""
        return self.key is not None

    def walk(self) -> Iterator[Node]:
        """This node and every node below, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()


@attrs.frozen
class Circuit:
    """A limit over a set of connectors, as the ledger checks it.

    The load of the circuit is ``sum(weights.get(key, 1.0) * power_kw[key] for key in keys)``
    and must stay ``<= limit_kw``. A per-phase limit becomes one circuit per phase (``name``
    ``"feeder-A/L2"``) whose weights are the share of each connector's power on that phase (1 for a
    single-phase connector on it, 1/3 for a three-phase one). Ignoring the weights (counting every
    key in full) is always on the safe side.
    """

    name: str
    keys: frozenset[ConnectorKey]
    limit_kw: float
    weights: Mapping[ConnectorKey, float] = attrs.field(factory=dict)

    def load_kw(self, power_kw: Mapping[ConnectorKey, float]) -> float:
        """The circuit's load [kW] for the given power per connector (missing keys draw 0)."""
        return float(sum(self.weights.get(k, 1.0) * power_kw.get(k, 0.0) for k in self.keys))


@attrs.frozen
class FallbackShare:
    """What one connector may draw when only fallback profiles are in force.

    Attributes:
        amps: current per phase [A], rounded down to 0.1 A.
        kw: the same as power [kW] at the topology's voltage over the connector's phases
            (rounded down to 1 W).
        phases: phases the connector draws on.
        binding: the node whose limit decided it.
    """

    amps: float
    kw: float
    phases: int
    binding: str


def _floor(value: float, per_unit: int) -> float:
    """``value`` rounded down to a multiple of ``1 / per_unit`` (10: tenths, 1000: thousandths)."""
    # A hair of tolerance so 32.0 stays 32.0 after a division that lands on 31.999999999.
    return math.floor(value * per_unit + 1e-9) / per_unit


class Topology:
    """A site tree; see the module docstring.

    Args:
        root: the site node.
        voltage: line-to-neutral voltage [V] for amp limits.

    Raises:
        ValueError: two nodes share a name, or two connectors share a key.
    """

    def __init__(self, root: Node, *, voltage: float = DEFAULT_VOLTAGE) -> None:
        if not (math.isfinite(voltage) and voltage > 0):
            raise ValueError(f"'voltage' must be a finite number > 0, got {voltage!r}")
        self.root = root
        self.voltage = float(voltage)
        self.nodes: tuple[Node, ...] = tuple(root.walk())
        names: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in names:
                raise ValueError(f"node name {node.name!r} is used twice")
            names[node.name] = i
        self._index = names
        # Path from the root to each node (node indices, root first).
        self._paths: dict[str, tuple[int, ...]] = {}
        self._connectors: dict[ConnectorKey, int] = {}

        def visit(node: Node, path: tuple[int, ...]) -> None:
            here = (*path, names[node.name])
            self._paths[node.name] = here
            if node.key is not None:
                if node.key in self._connectors:
                    raise ValueError(f"connector {node.key[0]!r}/{node.key[1]} appears twice")
                self._connectors[node.key] = names[node.name]
            for child in node.children:
                visit(child, here)

        visit(root, ())

    # -- lookups -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Topology({self.root.name!r}, {len(self.nodes)} nodes, {len(self._connectors)} connectors)"

    def node(self, name: str) -> Node:
        """The node called ``name`` (KeyError when there is none)."""
        return self.nodes[self._index[name]]

    @property
    def connector_keys(self) -> tuple[ConnectorKey, ...]:
        """Every connector's key, in tree order."""
        return tuple(self._connectors)

    def connector(self, key: ConnectorKey) -> Node | None:
        """The connector node of ``key``, or None when the tree does not have it."""
        i = self._connectors.get((str(key[0]), int(key[1])))
        return None if i is None else self.nodes[i]

    def path(self, name: str) -> tuple[Node, ...]:
        """The nodes from the root down to ``name``, both included."""
        return tuple(self.nodes[i] for i in self._paths[name])

    def subtree(self, name: str) -> Topology:
        """The tree below (and including) node ``name``, e.g. one station group; the limits of
        the nodes above it are not included."""
        return Topology(self.node(name), voltage=self.voltage)

    def keys_below(self, name: str) -> frozenset[ConnectorKey]:
        """The connectors below node ``name``."""
        return frozenset(n.key for n in self.node(name).walk() if n.key is not None)

    # -- constraints ---------------------------------------------------------------------------
    def _incidence(
        self, keys: Sequence[ConnectorKey], ev_phases: Sequence[int | None] | None
    ) -> tuple[list[int], list[int], list[int], list[float]]:
        """(row-node, phase, column, fraction) triplets: every row's share on every node's phases."""
        nodes, phases, cols, vals = [], [], [], []
        root = self._index[self.root.name]
        for j, key in enumerate(keys):
            ci = self._connectors.get((str(key[0]), int(key[1])))
            # An unknown connector is only known to be somewhere on the site: counted at the
            # root, with its whole power on every phase.
            path = self._paths[self.nodes[ci].name] if ci is not None else (root,)
            wiring = self.nodes[ci].wiring if ci is not None else None
            frac = wiring.fractions(None if ev_phases is None else ev_phases[j]) if wiring else (1.0, 1.0, 1.0)
            for ni in path:
                for p in range(3):
                    if frac[p]:
                        nodes.append(ni)
                        phases.append(p)
                        cols.append(j)
                        vals.append(frac[p])
        return nodes, phases, cols, vals

    def network(
        self,
        keys: Sequence[ConnectorKey],
        n_steps: int,
        *,
        ev_phases: Sequence[int | None] | None = None,
        voltage: float | None = None,
        site_limit_kw: npt.ArrayLike | None = None,
    ) -> NetworkConstraints:
        """The constraints for a schedule whose row ``j`` draws on connector ``keys[j]``.

        Several rows may share a connector (cars one after the other). A key not in the tree is
        counted at the root with its whole power on every phase. ``ev_phases[j]`` is how many
        phases row ``j``'s car uses (None: all of its connector's). ``site_limit_kw`` (a number
        or one per step), when given, is added as the root's total and combined with its own
        ``limit_kw``.
        """
        volts = self.voltage if voltage is None else float(voltage)
        if not (math.isfinite(volts) and volts > 0):
            raise ValueError(f"'voltage' must be a finite number > 0, got {voltage!r}")
        if ev_phases is not None and len(ev_phases) != len(keys):
            raise ValueError("'ev_phases' must have one entry per key")
        nodes, phases, cols, vals = self._incidence(keys, ev_phases)
        n = len(keys)
        rows: list[tuple[str, str | None]] = []
        limits: list[_Float] = []
        data_r: list[int] = []
        data_c: list[int] = []
        data_v: list[float] = []
        by_node: dict[int, list[int]] = {}
        for t, ni in enumerate(nodes):
            by_node.setdefault(ni, []).append(t)
        site = None if site_limit_kw is None else np.broadcast_to(
            np.asarray(site_limit_kw, dtype=np.float64), (n_steps,))
        for ni, node in enumerate(self.nodes):
            entries = by_node.get(ni, [])
            total = node.limit_kw
            series = None if total is None else np.full(n_steps, total)
            if ni == 0 and site is not None:
                series = site.copy() if series is None else np.minimum(series, site)
            if series is not None:
                r = len(rows)
                rows.append((node.name, None))
                limits.append(series)
                # A row's whole power counts once, whatever phases it is (or may be) on.
                for c in sorted({cols[t] for t in entries}):
                    data_r.append(r)
                    data_c.append(c)
                    data_v.append(1.0)
            for p in range(3):
                amps = node.limit_a[p]
                if amps is None:
                    continue
                r = len(rows)
                rows.append((node.name, PHASES[p]))
                limits.append(np.full(n_steps, amps * volts / 1000.0))
                for t in entries:
                    if phases[t] == p:
                        data_r.append(r)
                        data_c.append(cols[t])
                        data_v.append(vals[t])
        m = len(rows)
        matrix = sp.csr_array((np.asarray(data_v, dtype=np.float64), (np.asarray(data_r, dtype=np.int64),
                               np.asarray(data_c, dtype=np.int64))), shape=(m, n))
        matrix.sum_duplicates()
        limit = np.vstack(limits) if limits else np.zeros((0, n_steps))
        return NetworkConstraints(matrix, limit, tuple(rows), volts)

    def check(
        self,
        keys: Sequence[ConnectorKey],
        power_kw: npt.ArrayLike,
        *,
        voltage: float | None = None,
        ev_phases: Sequence[int | None] | None = None,
        site_limit_kw: npt.ArrayLike | None = None,
        tol_kw: float = 1e-6,
    ) -> list[Violation]:
        """Every node and phase above its limit: ``power_kw`` has one row per key, one column per
        step [kW]. An empty list means the schedule fits the whole tree."""
        power = np.asarray(power_kw, dtype=np.float64)
        if power.ndim != 2 or power.shape[0] != len(keys):
            raise ValueError(f"'power_kw' must have shape ({len(keys)}, T), got {power.shape}")
        net = self.network(keys, power.shape[1], ev_phases=ev_phases, voltage=voltage, site_limit_kw=site_limit_kw)
        return net.violations(power, tol_kw=tol_kw)

    # -- fail-safe -----------------------------------------------------------------------------
    def fallback_shares(
        self, *, voltage: float | None = None, site_limit_kw: float | None = None
    ) -> dict[ConnectorKey, FallbackShare]:
        """Per connector, the current it may draw so that every node stays within its limits when
        every connector draws its share at once (fallback profiles only).

        Each node divides its limit equally: a phase limit among the connectors drawing on that
        phase, a kW limit among all phases of its connectors; a connector gets the least of
        these over its path (the minimum over the node path), rounded down to 0.1 A.
        ``site_limit_kw`` (e.g. a live source's safe floor, or a schedule's lowest value) is
        applied at the root as well.
        """
        volts = self.voltage if voltage is None else float(voltage)
        # Per node: connectors with current on each phase, and total phase-count of connectors.
        per_phase: dict[str, list[int]] = {}
        line_count: dict[str, int] = {}
        for node in self.nodes:
            counts = [0, 0, 0]
            lines = 0
            for leaf in node.walk():
                if leaf.wiring is None:
                    continue
                frac = leaf.wiring.fractions()
                for p in range(3):
                    counts[p] += frac[p] > 0
                lines += leaf.wiring.phases
            per_phase[node.name] = counts
            line_count[node.name] = lines
        out: dict[ConnectorKey, FallbackShare] = {}
        for key, ci in self._connectors.items():
            leaf = self.nodes[ci]
            if leaf.wiring is None:  # pragma: no cover - a connector always has its wiring
                continue
            frac = leaf.wiring.fractions()
            best, binding = math.inf, self.root.name
            for node in self.path(leaf.name):
                caps: list[float] = []
                kw = node.limit_kw
                if node is self.root and site_limit_kw is not None:
                    kw = site_limit_kw if kw is None else min(kw, site_limit_kw)
                if kw is not None and line_count[node.name]:
                    caps.append(kw * 1000.0 / (volts * line_count[node.name]))
                for p in range(3):
                    amps = node.limit_a[p]
                    if amps is not None and frac[p] > 0 and per_phase[node.name][p]:
                        caps.append(amps / per_phase[node.name][p])
                if caps and min(caps) < best:
                    best, binding = min(caps), node.name
            amps = 0.0 if not math.isfinite(best) else max(_floor(best, 10), 0.0)
            if not math.isfinite(best):
                binding = ""
            lines = leaf.wiring.phases
            out[key] = FallbackShare(amps, _floor(amps * volts * lines / 1000.0, 1000), lines, binding)
        return out

    # -- the ledger's view ---------------------------------------------------------------------
    def circuits(self, *, voltage: float | None = None) -> list[Circuit]:
        """Every limit of the tree as a :class:`Circuit`: one per node with a kW limit (named like
        the node), one per node and limited phase (``"<node>/L1"``, weighted by each
        connector's share on that phase, the amp limit converted at ``voltage``)."""
        volts = self.voltage if voltage is None else float(voltage)
        out: list[Circuit] = []
        for node in self.nodes:
            leaves = [leaf for leaf in node.walk() if leaf.key is not None and leaf.wiring is not None]
            if node.limit_kw is not None:
                out.append(Circuit(node.name, frozenset(leaf.key for leaf in leaves if leaf.key), node.limit_kw))
            for p in range(3):
                amps = node.limit_a[p]
                if amps is None:
                    continue
                weights: dict[ConnectorKey, float] = {}
                for leaf in leaves:
                    f = leaf.wiring.fractions()[p] if leaf.wiring is not None else 0.0
                    if f > 0 and leaf.key is not None:
                        weights[leaf.key] = f
                out.append(Circuit(f"{node.name}/{PHASES[p]}", frozenset(weights), amps * volts / 1000.0, weights))
        return out
