"""The host link layer (terminal_agent.pinpad.link) against a scripted peer, no serial port.

Protocol section 3: ACK/NAK, retransmission, duplicates, matching by command code; and
the receive path fuzzed: whatever arrives, nothing but ACK/NAK frames go out and nothing
raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.pinpad import (
    CancelRequest,
    CancelResponse,
    Command,
    Event,
    Frame,
    FrameReassembler,
    FrameType,
    GetPinRequest,
    IdentifyRequest,
    IdentifyResponse,
    Key,
    KeyPressedEvent,
    LinkTimings,
    PinBlockFormat,
    Status,
    StatusResponse,
    ack,
    encode_event,
    encode_frame,
    encode_response,
    nak,
)
from terminal_agent.pinpad import PinpadDisconnected, PinpadReplyError, PinpadTimeout
from terminal_agent.pinpad.link import LinkProtocol, LinkStats
from terminal_agent.pinpad.subscriptions import Hub

T = TypeVar("T")
TIMINGS = LinkTimings(inter_byte=0.01, ack_timeout=0.05, max_retries=2, response_timeout=0.3)
IDENTITY = IdentifyResponse("M", "S", "F", 4, b"\x01\x02\x03\x04\x05")


class Line:
    """The link with everything it writes decoded, and the events it delivers."""

    def __init__(self, first_seq: int = 10) -> None:
        self.written: list[Frame] = []
        self.raw: list[bytes] = []
        self.events: list[Event] = []
        self.stats = LinkStats()
        self._reassembler = FrameReassembler()
        self.link = LinkProtocol(
            self._write, TIMINGS, first_seq=first_seq, on_event=self.events.append, stats=self.stats
        )

    def _write(self, data: bytes) -> None:
        self.raw.append(data)
        for item in self._reassembler.feed(data):
            assert isinstance(item, Frame), "the link wrote a damaged frame"
            self.written.append(item)

    def requests(self) -> list[Frame]:
        return [f for f in self.written if f.type is FrameType.REQUEST]

    def controls(self) -> list[Frame]:
        return [f for f in self.written if f.is_control]


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())  # type: ignore[arg-type]


async def wait_written(line: Line, count: int) -> None:
    async with asyncio.timeout(1):
        while len(line.requests()) < count:
            await asyncio.sleep(0.001)


def response(seq: int, message: IdentifyResponse | CancelResponse | StatusResponse) -> bytes:
    return encode_frame(encode_response(seq, message))


# -- fuzzing the receive path ------------------------------------------------------------


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_any_bytes_only_ever_produce_ack_or_nak(chunks: list[bytes]) -> None:
    line = Line()
    for chunk in chunks:
        line.link.data_received(chunk)
    line.link.expire()
    assert all(frame.is_control for frame in line.written)


@settings(max_examples=300)
@given(
    st.integers(0, 255),
    st.sampled_from([FrameType.RESPONSE, FrameType.EVENT, FrameType.REQUEST]),
    st.integers(0, 255),
    st.binary(max_size=80),
)
def test_intact_frames_with_any_data_are_acked_and_never_raise(
    seq: int, frame_type: FrameType, command: int, data: bytes
) -> None:
    line = Line()
    wire = encode_frame(Frame(seq, frame_type, command, data))
    line.link.data_received(wire)
    line.link.data_received(wire)  # a retransmission: ACKed again, not delivered again
    assert line.controls() == [ack(seq), ack(seq)]
    assert line.stats.duplicates == 1
    assert len(line.events) <= 1


def test_damaged_frame_is_naked_and_partial_frame_expires() -> None:
    line = Line()
    wire = bytearray(encode_frame(encode_event(5, KeyPressedEvent(Key.F1))))
    wire[7] ^= 0xFF  # CRC no longer matches
    line.link.data_received(bytes(wire))
    assert line.controls() == [nak(5)]
    line.link.data_received(encode_frame(encode_event(6, KeyPressedEvent(Key.F2)))[:-1])
    assert line.link.pending
    line.link.expire()  # the line went quiet: damaged
    assert line.controls()[-1].type is FrameType.NAK
    assert line.events == []
    line.link.data_received(encode_frame(encode_event(6, KeyPressedEvent(Key.F2))))
    assert line.events == [KeyPressedEvent(Key.F2)]


def test_same_sequence_other_content_is_a_new_frame() -> None:
    line = Line()
    line.link.data_received(encode_frame(encode_event(9, KeyPressedEvent(Key.F1))))
    line.link.data_received(encode_frame(encode_event(9, KeyPressedEvent(Key.F3))))
    assert line.events == [KeyPressedEvent(Key.F1), KeyPressedEvent(Key.F3)]
    assert line.stats.duplicates == 0


# -- sending -------------------------------------------------------------------------------


def test_nak_then_ack_retransmits_byte_for_byte() -> None:
    async def body() -> None:
        line = Line(first_seq=255)
        call = asyncio.create_task(line.link.request(IdentifyRequest(), 1.0))
        await wait_written(line, 1)
        line.link.data_received(encode_frame(nak(0)))
        await wait_written(line, 2)
        assert line.raw[0] == line.raw[1]
        line.link.data_received(encode_frame(ack(255)))
        line.link.data_received(response(40, IDENTITY))
        assert await call == IDENTITY
        assert line.stats.retransmissions == 1
        assert line.stats.naks_received == 1
        # The next request takes the next sequence number, modulo 256.
        call = asyncio.create_task(line.link.request(IdentifyRequest(), 1.0))
        await wait_written(line, 3)
        assert line.requests()[-1].seq == 0
        call.cancel()

    run(body)


def test_no_ack_after_every_retry_is_a_timeout() -> None:
    async def body() -> None:
        line = Line()
        with pytest.raises(PinpadTimeout):
            await line.link.request(IdentifyRequest(), 1.0)
        assert len(line.requests()) == 1 + TIMINGS.max_retries
        assert len({f.seq for f in line.requests()}) == 1
        assert line.stats.ack_timeouts == 3

    run(body)


def test_ack_for_another_seq_and_stray_nak_are_ignored() -> None:
    async def body() -> None:
        line = Line(first_seq=3)
        line.link.data_received(encode_frame(nak(1)))  # nothing outstanding
        call = asyncio.create_task(line.link.request(IdentifyRequest(), 1.0))
        await wait_written(line, 1)
        line.link.data_received(encode_frame(ack(4)))  # not ours
        await wait_written(line, 2)  # so the ACK timeout ran out and it was sent again
        line.link.data_received(encode_frame(ack(3)))
        line.link.data_received(response(1, IDENTITY))
        assert await call == IDENTITY

    run(body)


def test_response_before_ack_counts_as_ack() -> None:
    async def body() -> None:
        line = Line()
        call = asyncio.create_task(line.link.request(IdentifyRequest(), 1.0))
        await wait_written(line, 1)
        line.link.data_received(response(7, IDENTITY))  # the pad's ACK was lost
        assert await call == IDENTITY
        assert line.stats.retransmissions == 0

    run(body)


def test_response_timeout_runs_after_the_ack() -> None:
    async def body() -> None:
        line = Line()
        call = asyncio.create_task(line.link.request(IdentifyRequest(), 0.1))
        await wait_written(line, 1)
        line.link.data_received(encode_frame(ack(10)))
        with pytest.raises(PinpadTimeout):
            await call
        line.link.data_received(response(8, IDENTITY))  # late: nobody waits for it now
        assert line.stats.unmatched_responses == 1

    run(body)


def test_cancel_and_get_pin_responses_match_by_command_in_either_order() -> None:
    get_pin = GetPinRequest(
        1, 978, "4000000000000002", PinBlockFormat.ISO4_AES_DUKPT, 0, 5000, 4, 12, False
    )

    async def body() -> None:
        line = Line(first_seq=20)
        pin = asyncio.create_task(line.link.request(get_pin, 5.0))
        await wait_written(line, 1)
        line.link.data_received(encode_frame(ack(20)))
        cancel = asyncio.create_task(line.link.request(CancelRequest(), 1.0))
        await wait_written(line, 2)
        line.link.data_received(encode_frame(ack(21)))
        # GET PIN's CANCELLED first, then CANCEL's OK.
        line.link.data_received(response(50, StatusResponse(Command.GET_PIN, Status.CANCELLED)))
        line.link.data_received(response(51, CancelResponse()))
        assert await pin == StatusResponse(Command.GET_PIN, Status.CANCELLED)
        assert await cancel == CancelResponse()

    run(body)


def test_undecodable_response_fails_its_caller() -> None:
    async def body() -> None:
        line = Line()
        call = asyncio.create_task(line.link.request(IdentifyRequest(), 1.0))
        await wait_written(line, 1)
        truncated = Frame(3, FrameType.RESPONSE, Command.IDENTIFY, b"\x00\x05")
        line.link.data_received(encode_frame(truncated))
        with pytest.raises(PinpadReplyError):
            await call
        assert line.stats.bad_messages == 1

    run(body)


def test_connection_lost_fails_waiters_and_later_calls() -> None:
    async def body() -> None:
        line = Line()
        waiting_ack = asyncio.create_task(line.link.request(IdentifyRequest(), 1.0))
        await wait_written(line, 1)
        line.link.connection_lost("unplugged")
        with pytest.raises(PinpadDisconnected):
            await waiting_ack
        with pytest.raises(PinpadDisconnected):
            await line.link.request(CancelRequest(), 1.0)
        assert line.link.is_lost

    run(body)


# -- subscriptions ---------------------------------------------------------------------------


def test_subscription_drops_oldest_and_callbacks_are_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> list[int]:
        hub: Hub[int] = Hub("test", maxsize=2)
        sub = hub.subscribe()
        got: list[int] = []

        def broken(item: int) -> None:
            raise RuntimeError("subscriber bug")

        hub.add_callback(broken)
        remove = hub.add_callback(got.append)
        for item in (1, 2, 3):
            hub.publish(item)
        remove()
        hub.publish(4)
        assert got == [1, 2, 3]
        assert sub.dropped == 2
        hub.close()
        return [item async for item in sub]

    with caplog.at_level(logging.ERROR):
        assert run(body) == [3, 4]
    assert sum("subscriber failed" in r.getMessage() for r in caplog.records) == 4
