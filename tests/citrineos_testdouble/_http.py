"""A small HTTP/1.1 server on asyncio streams, with fault injection.

Only what the double needs: request line, headers, ``Content-Length`` bodies, keep-alive. Each
listener has a :class:`HttpFaults` that can make it answer 5xx, hang, or stop listening.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from citrineos_testdouble._jsonutil import js_dumps

logger = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_MAX_BODY = 8 * 1024 * 1024


@dataclass
class HttpRequest:
    """One parsed request."""

    method: str
    target: str  # path and query exactly as sent
    path: str
    query: dict[str, str | list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    """One response; ``content_type`` None sends no Content-Type header (an empty CitrineOS reply)."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def parse_query(query: str) -> dict[str, str | list[str]]:
    """Parse a query string like Node's ``querystring``: repeated keys become lists."""
    out: dict[str, str | list[str]] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out


class HttpFaults:
    """Fault injection for one HTTP listener.

    Thread-safe: tests call these from their own thread while the server runs in the double's
    loop. Faults apply to requests in arrival order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._hang: list[float] = []
        self._refuse_cb: Callable[[bool], None] | None = None
        self.refusing = False

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (5xx) and a JSON error body."""
        if count < 0 or not 500 <= status <= 599:
            raise ValueError(f"fail_next needs count >= 0 and a 5xx status, got {count}, {status}")
        with self._lock:
            self._fail.extend([status] * count)

    def hang_next(self, count: int = 1, seconds: float = 60.0) -> None:
        """Hold the next ``count`` requests for ``seconds`` before handling them normally."""
        if count < 0 or seconds < 0:
            raise ValueError(f"hang_next needs count >= 0 and seconds >= 0, got {count}, {seconds}")
        with self._lock:
            self._hang.extend([seconds] * count)

    def refuse(self) -> None:
        """Stop listening: new connections are refused until :meth:`heal`. Open ones are closed."""
        self.refusing = True
        if self._refuse_cb is not None:
            self._refuse_cb(True)

    def heal(self) -> None:
        """Clear every pending fault and listen again on the same port."""
        with self._lock:
            self._fail.clear()
            self._hang.clear()
        if self.refusing:
            self.refusing = False
            if self._refuse_cb is not None:
                self._refuse_cb(False)

    def _take(self) -> tuple[float, int | None]:
        with self._lock:
            hang = self._hang.pop(0) if self._hang else 0.0
            fail = self._fail.pop(0) if self._fail else None
        return hang, fail


class HttpServer:
    """Serve ``handler`` on ``host:port`` inside the running asyncio loop."""

    def __init__(self, handler: Handler, host: str, port: int, name: str) -> None:
        self._handler = handler
        self.host = host
        self.port = port
        self.name = name
        self.faults = HttpFaults()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id = 0
        self.faults._refuse_cb = self._on_refuse

    async def start(self) -> None:
        """Bind and start accepting; a port of 0 picks a free one (then kept for re-listening)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.debug("%s listening on %s:%s", self.name, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_refuse(self, refuse: bool) -> None:
        if self._loop is None:
            return
        coro = self.stop() if refuse else self.start()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # From another thread wait until the listener really changed state; from inside the loop
        # (a handler calling refuse) waiting would deadlock, so the change is left to run.
        if threading.get_ident() != self._loop_thread_id:
            future.result(timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                response = await self._respond(request)
                keep_alive = request.headers.get("connection", "").lower() != "close"
                writer.write(self._render(response, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _respond(self, request: HttpRequest) -> HttpResponse:
        hang, fail = self.faults._take()
        if hang:
            await asyncio.sleep(hang)
        if fail is not None:
            body = (
                f'{{"statusCode":{fail},"error":"{_REASONS.get(fail, "Error")}","message":"injected fault"}}'
            ).encode()
            return HttpResponse(fail, body)
        try:
            return await self._handler(request)
        except Exception:
            logger.exception("%s: handler failed for %s %s", self.name, request.method, request.target)
            body = b'{"statusCode":500,"error":"Internal Server Error","message":"double failed"}'
            return HttpResponse(500, body)

    async def _read_request(self, reader: asyncio.StreamReader) -> HttpRequest | None:
        line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3:
            return None
        method, target, _version = parts
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > _MAX_BODY:
            return None
        body = await reader.readexactly(length) if length else b""
        split = urllib.parse.urlsplit(target)
        return HttpRequest(
            method=method.upper(),
            target=target,
            path=urllib.parse.unquote(split.path),
            query=parse_query(split.query),
            headers=headers,
            body=body,
        )

    @staticmethod
    def _render(response: HttpResponse, keep_alive: bool) -> bytes:
        reason = _REASONS.get(response.status, "Status")
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        if response.content_type is not None:
            lines.append(f"content-type: {response.content_type}")
        lines.append(f"content-length: {len(response.body)}")
        lines.append(f"date: {email.utils.formatdate(usegmt=True)}")
        lines.append(f"connection: {'keep-alive' if keep_alive else 'close'}")
        lines.extend(f"{k}: {v}" for k, v in response.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def json_response(status: int, payload: Any) -> HttpResponse:
    """A JSON response rendered like Node (compact)."""
    return HttpResponse(status, js_dumps(payload).encode())
