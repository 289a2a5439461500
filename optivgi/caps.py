"""Hard caps on what opti-vgi accepts from files and settings.

They keep a bad or hostile input from exhausting memory or time: a file or setting beyond a cap
is refused with a one-line error naming it, before any work is done. The scenario format page of
the docs lists them.
"""

from __future__ import annotations

__all__ = [
    "MAX_CELLS",
    "MAX_EVS",
    "MAX_FILE_BYTES",
    "MAX_MAGNITUDE",
    "MAX_NESTING",
    "MAX_RESOLUTION_S",
    "MAX_STEPS",
    "MAX_YEAR",
    "MIN_YEAR",
]

#: Most steps in one plan (a week at one-minute steps is 10,080).
MAX_STEPS = 20_000
#: Longest step [s] (one day).
MAX_RESOLUTION_S = 86_400
#: Most EV sessions in one scenario file.
MAX_EVS = 10_000
#: Most EVs x steps of one plan (a 40 MB power matrix).
MAX_CELLS = 5_000_000
#: Largest scenario or site file [bytes].
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Deepest nesting of arrays and objects in a JSON file (the formats need 3).
MAX_NESTING = 32
#: Largest magnitude of any number (kW, kWh, price) in a file.
MAX_MAGNITUDE = 1e9
#: Date-times must lie in these years (inclusive).
MIN_YEAR = 1970
MAX_YEAR = 9000
