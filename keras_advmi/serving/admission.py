"""What a REST request body may cost the server before it is parsed: inflation, memory, parse time.

Compressed bodies. ``Content-Encoding: gzip`` (or ``x-gzip``) and ``deflate`` bodies are inflated
here, not by aiohttp (the app sets ``auto_decompress=False``), one received chunk at a time with
zlib's ``max_length``, so nothing is inflated past the limit: a body may inflate to at most
``INFLATE_SLACK_BYTES`` (1 MiB) plus ``MAX_INFLATE_RATIO`` (64) times the compressed bytes received
so far, and never past ``max_body_bytes``; beyond that it is 413 before the rest is inflated. A
compressed bomb therefore costs the server at most 64 times what it costs the client, plus 1 MiB.
Measured ratios (gzip level 6 / 9) of TF Serving ``instances`` JSON of 100 MNIST test images:
15-17x compact, 35-38x indented; 100 all-zero images 170-270x, which the 1 MiB slack admits up to
about 1 MiB (larger ones must be sent uncompressed or less compressible). A body answered before it
was read to the end is drained raw by aiohttp's lingering close, never inflated. TF Serving
inflates gzip only, up to a fixed size; ``deflate`` is kept because aiohttp accepted it before.

Bytes in flight. A body larger than ``INLINE_BODY_BYTES`` (decoded) reserves, before it is read
past that mark, its worst-case decoded size (its Content-Length; for a compressed body the
inflation bound of its Content-Length; the body cap when the length is unknown) from a budget of
``BUDGET_BODIES`` (4) times ``max_body_bytes`` shared by all requests, and gives it back once the
body is parsed. A reservation is all or nothing, granted first come first served, so partial
reservations cannot deadlock; a request still waiting after ``read_timeout`` seconds gets 503
(retry later). Parses of such bodies (JSON, tf.Example building) run one at a time on the I/O
pool (``ParseGate``), so a large body holds the GIL for at most one parse at a time and a small
request waits at most about one parse. For scale, on one x86-64 CPU core orjson parses 9.2 MB
of one-feature Examples in 0.36 s and 15 MB of float pixels in 0.45 s, holding the GIL throughout,
and the parsed document of small JSON objects takes about 25 times the body's bytes (a 9.1 MB
classify body: +241 MB peak RSS); so a body at the 64 MiB cap can still delay others by about 2 s
and take about 1.7 GB while it is parsed, one such parse at a time.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from typing import Self

from grpc import StatusCode

from .._checks import check_choice, check_positive_int
from .errors import ServingError, body_too_large, invalid_argument

INLINE_BODY_BYTES = 256 * 1024       # decoded bodies up to this size are read and parsed inline
MAX_INFLATE_RATIO = 64
INFLATE_SLACK_BYTES = 1024 * 1024
BUDGET_BODIES = 4
_ENCODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def unreadable(why):
    """400 for a body that cannot be read or decoded (``why``: what went wrong)."""
    return invalid_argument(f"Failed to read the request body: {why}")


def too_large(max_bytes, declared=None):
    """413 for a body over ``max_bytes`` (``declared``: its Content-Length, if that told)."""
    size = "" if declared is None else f" of {declared} bytes"
    return body_too_large(f"Request body{size} exceeds the limit of {max_bytes} bytes")


class Inflater:
    """Incremental gzip / deflate decoder whose output never exceeds
    ``min(max_bytes, slack + ratio * compressed bytes fed)``.

    ``feed(raw) -> bytes`` inflates one received chunk (413 past the limit, 400
    on data that is not ``encoding``); ``finish()`` checks that the stream ended (400 when cut)."""

    def __init__(self, encoding: str, max_bytes: int, ratio: int = MAX_INFLATE_RATIO,
                 slack: int = INFLATE_SLACK_BYTES):
        check_choice("encoding", encoding, ("gzip", "deflate"))
        self.encoding, self.max_bytes, self.ratio, self.slack = encoding, int(max_bytes), int(ratio), int(slack)
        self.raw = self.out = 0
        self._d = None

    @classmethod
    def for_header(cls, value: str | None, max_bytes: int) -> Inflater | None:
        """The inflater a ``Content-Encoding`` header asks for; None for none / ``identity``."""
        enc = (value or "").strip().lower()
        if enc in ("", "identity"):
            return None
        if enc not in _ENCODINGS:
            raise unreadable(f"unsupported Content-Encoding {enc[:40]!r} (gzip, deflate or identity)")
        return cls(_ENCODINGS[enc], max_bytes)

    def limit(self) -> int:
        return min(self.max_bytes, self.slack + self.ratio * self.raw)

    def worst_case(self, compressed_bytes: int | None) -> int:
        """The most a body of ``compressed_bytes`` (None: unknown) may inflate to."""
        if compressed_bytes is None:
            return self.max_bytes
        return min(self.max_bytes, self.slack + self.ratio * compressed_bytes)

    def _too_large(self):
        limit = self.limit()
        if limit >= self.max_bytes:
            return too_large(self.max_bytes)
        return body_too_large((
            f"Request body inflates past {limit} bytes: exceeds the limit of {self.slack} bytes plus "
            f"{self.ratio} times its {self.raw} compressed bytes"))

    def feed(self, data: bytes) -> bytes:
        self.raw += len(data)
        pieces = []
        while data:
            if self._d is None or self._d.eof:
                if self._d is not None and self.encoding != "gzip":
                    raise unreadable("data after the end of the deflate stream")
                # gzip members may follow one another (RFC 1952); deflate with or without the zlib
                # header (RFC 1950), as aiohttp tells them apart
                wbits = (16 + zlib.MAX_WBITS if self.encoding == "gzip" else
                         zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS)
                self._d = zlib.decompressobj(wbits)
            room = self.limit() - self.out
            try:
                chunk = self._d.decompress(data, room + 1)
            except zlib.error:
                raise unreadable(f"invalid {self.encoding} data") from None
            self.out += len(chunk)
            if self.out > self.limit():
                raise self._too_large()
            pieces.append(chunk)
            # under max_length all input was consumed; what is left is a next gzip member
            data = self._d.unused_data if self._d.eof else b""
        return b"".join(pieces)

    def finish(self) -> None:
        if self._d is not None and not self._d.eof:
            raise unreadable(f"truncated {self.encoding} data")


class ByteBudget:
    """Bytes that request bodies may hold at once, reserved all or nothing, first come first served.

    ``await acquire(n, timeout)`` returns once ``n`` bytes (at most the capacity) are reserved,
    UNAVAILABLE (503) when not within ``timeout`` seconds; ``release(n)`` gives them back. Used on
    the event loop only."""

    def __init__(self, capacity: int):
        self.capacity, self.used = check_positive_int("capacity", capacity), 0
        self._waiters = collections.deque()

    async def acquire(self, n: int, timeout: float) -> int:
        n = min(int(n), self.capacity)
        if not self._waiters and self.used + n <= self.capacity:
            self.used += n
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.release(n)             # granted just as we gave up
            else:
                fut.cancel()
                self._wake()
            if isinstance(exc, TimeoutError):
                raise ServingError(StatusCode.UNAVAILABLE, f"Too many large request bodies in flight (limit "
                                   f"{self.capacity} bytes); retry later") from None
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self):
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
            elif self.used + n <= self.capacity:
                self._waiters.popleft()
                self.used += n
                fut.set_result(None)
            else:
                break


class Claim:
    """One request's reservation on a ``ByteBudget``: ``async with Claim(budget) as claim``;
    ``await claim.reserve(n, timeout)`` once; released when the block ends."""

    def __init__(self, budget: ByteBudget):
        self.budget, self.held = budget, 0

    async def reserve(self, n: int, timeout: float) -> None:
        if not self.held:
            self.held = await self.budget.acquire(max(int(n), 1), timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.held:
            self.budget.release(self.held)
            self.held = 0


class ParseGate:
    """Runs ``fn(*args)`` on ``pool`` one call at a time (parses of large bodies hold the GIL in C
    for their whole length; two at once would double how long the event loop can wait)."""

    def __init__(self, pool):
        self.pool = pool
        self._lock = asyncio.Lock()

    async def run(self, fn, *args):
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
