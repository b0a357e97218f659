"""keras_advmi.serving.admission alone: the bounded gzip/deflate inflater and the bytes-in-flight budget."""

import asyncio
import gzip
import zlib

import grpc
import pytest

from keras_advmi.serving import admission
from keras_advmi.serving.errors import ServingError


def _inflate(inflater, data, step=4096):
    out = b"".join(inflater.feed(data[i:i + step]) for i in range(0, len(data), step))
    inflater.finish()
    return out


def _raw_deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("encoding,compress", [("gzip", lambda b: gzip.compress(b, mtime=0)),
                                               ("deflate", zlib.compress),        # RFC 1950, zlib header
                                               ("deflate", _raw_deflate)],        # raw, as aiohttp took it
                         ids=["gzip", "zlib", "raw-deflate"])
def test_inflater_round_trips_within_the_ratio(encoding, compress):
    body = b'{"instances": [' + b",".join(b"[%d.25]" % i for i in range(20_000)) + b"]}"
    assert _inflate(admission.Inflater(encoding, 64 << 20), compress(body)) == body


def test_inflater_accepts_concatenated_gzip_members_and_refuses_garbage():
    body = b"a" * 1000 + b"b" * 1000
    two = gzip.compress(body[:1000], mtime=0) + gzip.compress(body[1000:], mtime=0)   # RFC 1952 allows it
    assert _inflate(admission.Inflater("gzip", 1 << 20), two) == body
    for bad, why in [(b"\x1f\x8bnot gzip", "invalid gzip data"),
                     (gzip.compress(body, mtime=0)[:-12], "truncated gzip data"),
                     (gzip.compress(body, mtime=0) + b"\x00\x00", "invalid gzip data")]:
        with pytest.raises(ServingError) as err:
            _inflate(admission.Inflater("gzip", 1 << 20), bad)
        assert (err.value.code, err.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, f"Failed to read the request body: {why}")
    with pytest.raises(ServingError, match="data after the end of the deflate stream"):
        _inflate(admission.Inflater("deflate", 1 << 20), zlib.compress(body) + b"x")


def test_inflater_stops_a_bomb_at_the_ratio_before_inflating_the_rest():
    bomb = gzip.compress(b" " * (50 << 20), 9, mtime=0)          # ~50 KB -> 50 MiB
    inflater = admission.Inflater("gzip", 64 << 20)
    out = 0
    with pytest.raises(ServingError) as err:
        for i in range(0, len(bomb), 1024):
            out += len(inflater.feed(bomb[i:i + 1024]))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.value.http_status == 413
    limit = admission.INFLATE_SLACK_BYTES + admission.MAX_INFLATE_RATIO * inflater.raw
    assert err.value.message == (f"Request body inflates past {limit} bytes: exceeds the limit of 1048576 bytes "
                                 f"plus 64 times its {inflater.raw} compressed bytes")
    assert out <= limit and inflater.out <= limit + 1          # never more than one byte past the bound
    assert inflater.raw < len(bomb) // 2                         # refused early
    # the body cap wins when it is the smaller bound
    with pytest.raises(ServingError) as err:
        _inflate(admission.Inflater("gzip", 100_000), gzip.compress(b"x" * 200_000, mtime=0))
    assert err.value.message == "Request body exceeds the limit of 100000 bytes"


def test_inflater_header_and_arguments():
    assert admission.Inflater.for_header(None, 10) is None
    assert admission.Inflater.for_header(" Identity ", 10) is None
    assert admission.Inflater.for_header("X-GZIP", 10).encoding == "gzip"
    with pytest.raises(ServingError, match="unsupported Content-Encoding 'br'"):
        admission.Inflater.for_header("br", 10)
    with pytest.raises(ValueError, match="`encoding`.*Received: encoding='br'"):
        admission.Inflater("br", 10)
    with pytest.raises(ValueError, match="`capacity`.*Received: capacity=0"):
        admission.ByteBudget(0)
    inflater = admission.Inflater("gzip", 10 << 20)
    assert inflater.worst_case(None) == 10 << 20
    assert inflater.worst_case(1000) == admission.INFLATE_SLACK_BYTES + 64_000


def test_byte_budget_is_all_or_nothing_first_come_first_served():
    async def scenario():
        budget = admission.ByteBudget(100)
        order = []
        assert await budget.acquire(60, 1) == 60

        async def want(name, n, timeout=2):
            await budget.acquire(n, timeout)
            order.append(name)
        big = asyncio.create_task(want("big", 70))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(want("small", 10))        # would fit now, but queues behind "big"
        await asyncio.sleep(0.05)
        assert order == [] and budget.used == 60
        budget.release(60)
        await asyncio.gather(big, small)
        assert order == ["big", "small"] and budget.used == 80
        with pytest.raises(ServingError) as err:              # never granted within its timeout: 503
            await budget.acquire(50, 0.05)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.http_status == 503
        assert budget.used == 80 and not budget._waiters
        waiter = asyncio.create_task(budget.acquire(30, 5))   # cancelled while queued: leaves nothing behind
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        budget.release(80)
        assert budget.used == 0
        assert await budget.acquire(10 ** 9, 1) == 100        # more than the capacity waits for all of it
        async with admission.Claim(budget) as claim:
            pending = asyncio.create_task(claim.reserve(1, 5))
            await asyncio.sleep(0.01)
            assert not pending.done()
            budget.release(100)
            await pending
            assert claim.held == 1 and budget.used == 1
        assert budget.used == 0
    asyncio.run(scenario())
