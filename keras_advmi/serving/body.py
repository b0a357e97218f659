"""Reading one REST request body under the server's limits (``admission.py`` says what a body may cost).

``await read_body(request, claim, limits, bound)`` returns the decoded body bytes, or raises the refusal:

- over ``limits.max_body_bytes`` (declared, received or inflated): 413 (``errors.body_too_large``);
- ``Content-Encoding`` gzip / deflate: inflated under ``admission.Inflater``'s ratio bound;
- past ``admission.INLINE_BODY_BYTES`` the body first reserves its worst-case size on ``claim`` (503 when the
  server-wide budget stays full for ``limits.read_timeout``);
- receiving must take less than ``limits.read_timeout`` seconds (408; time spent waiting for the budget is
  not counted);
- once ``bound`` (a ``codec.BodyBound``) says the body is too big its chunks are counted, not kept, so a
  27 MB body of 100,000 rows never sits in memory; the refusal names the whole count;
- a broken transfer (bad chunking, a connection cut mid-body): 400 "Failed to read the request body".
"""

from __future__ import annotations

import asyncio
import dataclasses

from . import admission
from .errors import ServingError, body_timeout


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a REST body may be: ``max_body_bytes`` decoded bytes, received within ``read_timeout`` seconds."""

    max_body_bytes: int
    read_timeout: float


class _Reader:
    """The chunks of one body, decoded and counted as they arrive."""

    def __init__(self, request, limits, bound):
        self.request, self.cap, self.bound = request, limits.max_body_bytes, bound
        self.inflater = admission.Inflater.for_header(request.headers.get("Content-Encoding"), self.cap)
        self.chunks, self.size = [], 0

    def worst_case(self):
        """The most bytes the decoded body may take: its declared length, its inflation bound, or the cap."""
        declared = self.request.content_length
        worst = declared if self.inflater is None else self.inflater.worst_case(declared)
        return self.cap if worst is None else worst

    async def read(self, limit):
        """Read until the end (True) or until more than ``limit`` decoded bytes (False)."""
        while True:
            raw = await self.request.content.readany()
            if not raw:
                if self.inflater is not None:
                    self.inflater.finish()
                return True
            data = raw if self.inflater is None else self.inflater.feed(raw)
            self.size += len(data)
            if self.size > self.cap:
                raise admission.too_large(self.cap)
            if self.bound is not None:
                self.bound.feed(data)        # counted to the end: the refusal names the whole count
                if self.bound.exceeded:
                    self.chunks.clear()
                    continue
            self.chunks.append(data)
            if limit is not None and self.size > limit:
                return False

    def body(self):
        if self.bound is not None and self.bound.exceeded:
            raise self.bound.error()
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


async def read_body(request, claim: admission.Claim, limits: Limits, bound=None) -> bytes:
    """The decoded body of ``request`` (an aiohttp request), under the rules of the module docstring."""
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise admission.too_large(limits.max_body_bytes, declared)
    reader = _Reader(request, limits, bound)
    worst = reader.worst_case()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.read_timeout

    async def reserve():
        nonlocal deadline
        t = loop.time()
        await claim.reserve(worst, limits.read_timeout)
        deadline += loop.time() - t     # waiting for the budget does not count against the read

    try:
        if worst > admission.INLINE_BODY_BYTES and declared is not None and reader.inflater is None:
            await reserve()
        async with asyncio.timeout_at(deadline):
            done = await reader.read(None if claim.held else admission.INLINE_BODY_BYTES)
        if not done:
            await reserve()
            async with asyncio.timeout_at(deadline):
                await reader.read(None)
    except ServingError:
        raise
    except TimeoutError:
        raise body_timeout(f"Request body not received within {limits.read_timeout:g} s") from None
    except Exception as exc:   # aiohttp's payload errors: broken chunking, a connection cut mid-body
        raise admission.unreadable(type(exc).__name__) from None
    return reader.body()
