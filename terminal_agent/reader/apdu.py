"""The transport layer's status-word handling: GET RESPONSE and Le correction.

EMV 4.4 Book 1 9.3.1 (and ISO/IEC 7816-3 12.2.2/12.2.3, ISO/IEC 7816-4 5.1.3): under
T=0 a card gives the data of a case 2 or case 4 command only when asked:

* ``61xx``: ``xx`` bytes are waiting; the terminal sends GET RESPONSE
  (``00 C0 00 00 xx``, ``xx = 00`` meaning 256) and concatenates the pieces while the
  card keeps answering ``61xx``;
* ``6Cxx``: the Le was wrong; the terminal sends the same command again, once, with
  ``Le = xx``.

The same is done whatever protocol is active: a card (or a reader) that answers ``61xx``
under T=1 gets its GET RESPONSE too. What the caller receives never carries ``61xx`` or
``6Cxx``. Short APDUs only (EMV uses no extended lengths).

:func:`exchange` runs over a blocking ``send`` (raw command -> raw response); it is pure
apart from ``send`` and runs in the reader thread, so a chained exchange costs one hop
to that thread, not one per APDU.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import CardProtocolError

__all__ = ["GET_RESPONSE", "exchange", "split_response", "with_le"]

GET_RESPONSE = bytes.fromhex("00C00000")


def split_response(raw: bytes) -> tuple[bytes, int, int]:
    """A response APDU as (data, SW1, SW2); fewer than two bytes is a protocol error."""
    if len(raw) < 2:
        raise CardProtocolError(f"response of {len(raw)} byte(s) has no status word")
    return raw[:-2], raw[-2], raw[-1]


def with_le(apdu: bytes, le: int) -> bytes:
    """``apdu`` (short, ISO/IEC 7816-4 cases 1-4) with its Le set to ``le`` (0-255)."""
    if len(apdu) < 4:
        raise CardProtocolError(f"command of {len(apdu)} byte(s) has no header")
    if len(apdu) in (4, 5):  # case 1; case 2, whose last byte is Le
        body = b""
    else:
        lc = apdu[4]
        if lc == 0 or len(apdu) not in (5 + lc, 6 + lc):
            raise CardProtocolError("command is not a short case 3 or case 4 APDU")
        body = apdu[4 : 5 + lc]
    return apdu[:4] + body + bytes([le])


def exchange(
    send: Callable[[bytes], bytes], apdu: bytes, *, max_get_response: int
) -> tuple[bytes, int, int]:
    """Send ``apdu`` through ``send``; answer ``61xx`` and ``6Cxx`` as the card asks.

    ``6Cxx`` is answered once (a second ``6Cxx`` is a :class:`CardProtocolError`);
    at most ``max_get_response`` GET RESPONSE commands are sent for one command.
    """
    data, sw1, sw2 = split_response(send(apdu))
    if sw1 == 0x6C:
        data, sw1, sw2 = split_response(send(with_le(apdu, sw2)))
        if sw1 == 0x6C:
            raise CardProtocolError("card asked for a second Le correction (6Cxx)")
    pieces = [data]
    fetched = 0
    while sw1 == 0x61:
        if fetched == max_get_response:
            raise CardProtocolError(f"card still has data after {fetched} GET RESPONSE")
        fetched += 1
        data, sw1, sw2 = split_response(send(GET_RESPONSE + bytes([sw2])))
        if sw1 == 0x6C:  # GET RESPONSE is case 2: a wrong Le is corrected like any other
            data, sw1, sw2 = split_response(send(GET_RESPONSE + bytes([sw2])))
            if sw1 == 0x6C:
                raise CardProtocolError("card asked for a second Le correction (6Cxx)")
        pieces.append(data)
    return b"".join(pieces), sw1, sw2
