"""Which connections the server keeps: a header-read deadline, and idle sockets evicted before work is refused.

uvicorn alone keeps a silent connection open forever (its keep-alive timer only starts after a
response) and its ``limit_concurrency`` counts connections, so 1,000 idle sockets made it answer 503
to everyone. These protocol classes (one for h11, one for httptools, the same rules) replace that:

- a connection must deliver a request's complete headers within ``header_timeout_s`` of opening,
  and of the end of its previous response; otherwise it is closed;
- at most ``max_connections`` connections per server process; when a new one would pass the cap, the
  connection idle the longest (no request under way) is closed to make room. Only connections
  with a request under way count against work, and the gate's in-flight cap and request timeout
  bound those (``ledger.service.gate``).

uvicorn's own ``limit_concurrency`` is off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "GuardedH11Protocol", "configure", "http_protocol"]


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 4096


_limits = ConnectionLimits()
# The connections waiting for a request's headers, oldest first (a dict keeps insertion order). One event
# loop per server process, so module state is per process, like the connections themselves.
_idle: dict[Any, None] = {}


def configure(limits: ConnectionLimits) -> None:
    """The limits of this server process (``caseledger serve`` sets them before uvicorn accepts)."""
    global _limits
    _limits = limits


class _Deadlines:
    """Mixed into uvicorn's protocol classes: the rules of the module docstring."""

    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > _limits.max_connections:
            oldest = next((c for c in _idle if c is not self), None)
            if oldest is None:  # every other connection has a request under way: refuse this one
                self._close()
                return
            oldest._close()
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._busy():
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and not self._busy():
            self._await_headers()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _await_headers(self) -> None:
        self._stop_waiting()
        _idle[self] = None
        self._header_timer = self.loop.call_later(_limits.header_timeout_s, self._headers_late)

    def _stop_waiting(self) -> None:
        _idle.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._busy():
            self._close()

    def _close(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.close()


class GuardedH11Protocol(_Deadlines, H11Protocol):  # type: ignore[misc]  # uvicorn narrows the transport too
    """uvicorn's h11 protocol with the header deadline and idle eviction."""


def http_protocol() -> str:
    """The protocol class uvicorn should import: httptools when installed (uvicorn[standard]), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return f"{__name__}:GuardedH11Protocol"
    return f"{__name__}:GuardedHttpToolsProtocol"


def __getattr__(name: str) -> Any:
    # httptools is optional: its protocol class is built on first use only.
    if name == "GuardedHttpToolsProtocol":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        cls = type("GuardedHttpToolsProtocol", (_Deadlines, HttpToolsProtocol),
                   {"__doc__": "uvicorn's httptools protocol with the header deadline and idle eviction."})
        globals()[name] = cls
        return cls
    raise AttributeError(name)
