"""A limit read from an HTTP JSON endpoint, polled (e.g. a building meter's headroom)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from optivgi.clock import Clock
from optivgi.limits.base import LimitReading, ReadingSource, Trigger, parse_payload

__all__ = ["HttpJsonLimit"]

logger = logging.getLogger(__name__)


class HttpJsonLimit(ReadingSource):
    """Polls ``url`` every ``interval_s`` and reads the limit from its JSON answer.

    The answer is a bare number or an object (see :func:`~optivgi.limits.base.parse_payload`):
    ``{"limit_kw": 30, "forecast": [{"at": "2026-01-05T17:00:00Z", "kw": 15}]}``. A failed
    request, a non-2xx status or a malformed answer is logged and leaves the last reading to age:
    after ``timeout_s`` without a good answer the source answers ``floor_kw``.

    Args:
        url: the endpoint (``http://`` or ``https://``).
        floor_kw, timeout_s, max_kw: see :class:`~optivgi.limits.base.ReadingSource`.
        interval_s: polling period [s of clock time].
        field, forecast_field, scale: where the values are and their scale to kW.
        headers: extra request headers (e.g. an API key).
        request_timeout_s: how long one request may take [s].
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        floor_kw: float,
        timeout_s: float = 60.0,
        interval_s: float = 10.0,
        field: str = "limit_kw",
        forecast_field: str = "forecast",
        scale: float = 1.0,
        headers: Mapping[str, str] | None = None,
        request_timeout_s: float = 5.0,
        max_kw: float | None = None,
        clock: Clock | None = None,
        trigger: Trigger | None = None,
    ) -> None:
        super().__init__(floor_kw=floor_kw, timeout_s=timeout_s, max_kw=max_kw, clock=clock, trigger=trigger)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"'url' must be an http:// or https:// URL, got {url!r}")
        if not interval_s > 0:
            raise ValueError(f"'interval_s' must be > 0, got {interval_s!r}")
        self.url = url
        self.interval_s = float(interval_s)
        self.field, self.forecast_field, self.scale = field, forecast_field, float(scale)
        self.headers = dict(headers or {})
        self.request_timeout_s = float(request_timeout_s)
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fetch(self) -> LimitReading | None:
        """One request; the new reading, or None when it failed (logged)."""
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise RuntimeError("the http limit source needs httpx: pip install 'opti-vgi[http]'") from None
        try:
            response = httpx.get(self.url, headers=self.headers, timeout=self.request_timeout_s)
            response.raise_for_status()
            kw, forecast = parse_payload(response.json(), field=self.field, forecast_field=self.forecast_field,
                                         scale=self.scale)
        except (httpx.HTTPError, ValueError) as exc:  # json errors are ValueErrors too
            self.failures += 1
            logger.warning("limit source %s: %s failed: %s", self.name, self.url, exc)
            self.poll()
            return None
        return self.update(kw, forecast)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.fetch()
            except Exception:  # the poller must outlive any surprise
                logger.exception("limit source %s: poll failed", self.name)
            self._stop.wait(self.clock.real_seconds(self.interval_s))

    def start(self) -> None:
        """Poll in a background thread (the first request is made at once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"optivgi-limit-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.request_timeout_s + 1)
            self._thread = None
