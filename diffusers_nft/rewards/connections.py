"""The reward server's connections, bounded where uvicorn leaves them open: the time a client may take to send a
request's headers, and how many connections are open at once.

uvicorn times out a body only through our `RequestGuard`, and headers not at all: a client that sends one byte every
few seconds holds its connection (and a file descriptor) forever, and about a thousand of them take the server off
the air ("Too many open files", logged at every accept). `guarded_protocol` closes a connection whose headers are
not complete within `header_timeout` seconds, and closes at once any connection beyond `max_connections`; either
is logged at most once every `LOG_EVERY_S` seconds, with a count.
"""

import logging
import time
from typing import Optional

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)
LOG_EVERY_S = 10.0


class _Tally:
    """Dropped connections by reason, logged at most once every `LOG_EVERY_S` seconds."""

    def __init__(self):
        self.counts, self.last = {}, -float("inf")

    def drop(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if time.monotonic() - self.last >= LOG_EVERY_S:
            logger.warning("Closed connections: %s.", ", ".join(f"{n} {r}" for r, n in self.counts.items()))
            self.counts, self.last = {}, time.monotonic()


def guarded_protocol(header_timeout: float, max_connections: int) -> type:
    """uvicorn's HTTP/1.1 protocol (`uvicorn.run(app, http=...)`) with the two bounds above.

    Args:
        header_timeout: Seconds from a connection's start (or its last answer, on a kept-alive one) to its next
            request's complete headers.
        max_connections: Connections open at once; the ones beyond are closed as soon as they are accepted.
    """
    tally = _Tally()

    class GuardedH11Protocol(H11Protocol):
        _deadline: Optional[object] = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                tally.drop(f"over the limit of {max_connections} open")
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            """The next request's headers are due within `header_timeout`."""
            self._disarm()
            self._waiting_since = self.cycle
            self._deadline = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            if not self.transport.is_closing():
                tally.drop(f"without complete headers within {header_timeout:g} s")
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._waiting_since:  # a request began: its headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol
