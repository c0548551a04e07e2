"""The virtual card side of vsmartcard's vpcd reader driver (the "vpicc" role).

vpcd (``libifdvpcd.so``, loaded by pcscd) listens on a TCP port; a virtual card is a TCP
*client* of it. Connecting is inserting the card, closing the socket is pulling it out:
pcscd's presence polling turns both into real PC/SC card events.

The protocol (vsmartcard ``virtualsmartcard/src/vpcd/vpcd.c``): every message in either
direction is a 2-byte big-endian length followed by that many bytes. From vpcd, a 1-byte
message is a control code, anything longer a command APDU:

===== ============ =========================================================
code  name         what the card does
===== ============ =========================================================
0x00  power off    deactivates; no answer
0x01  power on     cold reset; no answer (vpcd asks for the ATR next)
0x02  reset        warm reset; no answer (vpcd asks for the ATR next)
0x04  get ATR      answers with the ATR; vpcd also uses it as a presence probe
===== ============ =========================================================

A command APDU is answered with the response APDU (data, SW1, SW2). vpcd reports every
exchange to pcscd as T=1 and passes the bytes through unchanged, whatever the ATR says:
under T=0 the GET RESPONSE dance (61xx/6Cxx) is up to the card application.

Latency: vpcd's peer delays its ACKs unless the card re-arms ``TCP_QUICKACK`` before every
``recv()`` (the flag is not sticky on Linux); without it each APDU costs about 44 ms
(DESIGN 9). ``TCP_NODELAY`` is set too so that answers leave at once.

APDUs are logged only at TRACE (level 5), and only their lengths and INS byte: the data
can be card data.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from types import TracebackType

from hardware.card_interface import CardApplication, CardRemoved

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
logger = logging.getLogger(__name__)

CTRL_POWER_OFF = 0x00
CTRL_POWER_ON = 0x01
CTRL_RESET = 0x02
CTRL_GET_ATR = 0x04

_CONTROL_NAMES = {
    CTRL_POWER_OFF: "power off",
    CTRL_POWER_ON: "power on",
    CTRL_RESET: "reset",
    CTRL_GET_ATR: "get ATR",
}
_LENGTH = struct.Struct(">H")
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class VpcdLinkError(RuntimeError):
    """The card could not be inserted (vpcd not listening) or the link is misused."""


class _PeerClosed(Exception):
    """vpcd closed the connection (pcscd stopped, or vpcd gave up on the card)."""


class VpcdCardLink:
    """Connects one :class:`CardApplication` to vpcd at ``host:port``.

    ``insert()`` connects and serves vpcd from a background thread; ``remove()`` closes
    the socket (the card leaves the reader). The link can be inserted again after it was
    removed. The card application is called only from the serving thread.

    When the application raises :class:`CardRemoved`, or vpcd closes the connection
    (pcscd stopped), the link closes itself: :attr:`inserted` turns false and
    :meth:`wait_removed` returns. An unexpected exception from the application closes
    the link too and is kept in :attr:`failure`.
    """

    def __init__(
        self,
        card: CardApplication,
        port: int,
        host: str = "127.0.0.1",
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.failure: BaseException | None = None
        self.apdu_count = 0
        self._atr = b""
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._removed = threading.Event()
        self._removed.set()

    # -- public API ---------------------------------------------------------------

    @property
    def inserted(self) -> bool:
        """Whether the card is connected to vpcd right now."""
        return not self._removed.is_set()

    def insert(self) -> None:
        """Connect to vpcd (the card enters the reader) and start serving it."""
        with self._lock:
            if self.inserted:
                raise VpcdLinkError("the card is already inserted")
            if self._thread is not None:
                self._thread.join()
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout
                )
            except OSError as exc:
                raise VpcdLinkError(
                    f"cannot reach vpcd at {self.host}:{self.port} (is pcscd running?)"
                ) from exc
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.failure = None
            self._sock = sock
            self._removed.clear()
            self._thread = threading.Thread(
                target=self._serve, args=(sock,), name=f"vpcd-card-{self.port}", daemon=True
            )
            self._thread.start()
        logger.debug("card inserted into vpcd port %d", self.port)

    def remove(self, timeout: float = 5.0) -> None:
        """Close the connection (the card leaves the reader) and stop the serving thread.

        Safe to call when the card is already out.
        """
        with self._lock:
            self._close_socket()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise VpcdLinkError("the vpcd serving thread did not stop")
        logger.debug("card removed from vpcd port %d", self.port)

    def wait_removed(self, timeout: float | None = None) -> bool:
        """Block until the card is out (removed, pulled by the app, or vpcd closed)."""
        return self._removed.wait(timeout)

    def __enter__(self) -> VpcdCardLink:
        self.insert()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "inserted" if self.inserted else "removed"
        return f"<VpcdCardLink {self.host}:{self.port} {state}>"

    # -- serving ------------------------------------------------------------------

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):  # already disconnected by the peer
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._atr = self.card.power_on()
            while True:
                message = self._receive(sock)
                answer = self._answer(message)
                if answer is not None:
                    sock.sendall(_LENGTH.pack(len(answer)) + answer)
        except CardRemoved:
            logger.debug("card application pulled the card out")
        except (_PeerClosed, OSError) as exc:
            if self._sock is sock:  # not remove() shutting the socket down under us
                logger.debug("vpcd closed the link on port %d (%s)", self.port, type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - a card application bug: kept for the test
            self.failure = exc
            logger.error("card application failed: %s", type(exc).__name__)
        finally:
            with self._lock:
                if self._sock is sock:
                    self._close_socket()
            self._removed.set()

    def _receive(self, sock: socket.socket) -> bytes:
        header = self._receive_exactly(sock, _LENGTH.size)
        (length,) = _LENGTH.unpack(header)
        return self._receive_exactly(sock, length)

    @staticmethod
    def _receive_exactly(sock: socket.socket, size: int) -> bytes:
        chunks: list[bytes] = []
        remaining = size
        while remaining:
            if _QUICKACK is not None:
                # Linux clears QUICKACK after it is used; set it again before every recv.
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            chunk = sock.recv(remaining)
            if not chunk:
                raise _PeerClosed
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _answer(self, message: bytes) -> bytes | None:
        if len(message) == 1:
            code = message[0]
            logger.log(TRACE, "vpcd control: %s", _CONTROL_NAMES.get(code, f"0x{code:02X}"))
            if code == CTRL_GET_ATR:
                return self._atr
            if code in (CTRL_POWER_ON, CTRL_RESET):
                self._atr = self.card.power_on()
            elif code == CTRL_POWER_OFF:
                self.card.power_off()
            else:
                logger.warning("unknown vpcd control code 0x%02X ignored", code)
            return None
        if not message:
            return None
        ins = message[1] if len(message) > 1 else 0
        logger.log(TRACE, "C-APDU: %d bytes, INS %02X", len(message), ins)
        response = self.card.process_apdu(message)
        self.apdu_count += 1
        logger.log(TRACE, "R-APDU: %d bytes", len(response))
        return response
