"""Sending a receipt's ESC/POS bytes to a printer: a USB printer-class device
(``/dev/usb/lp0``), a serial printer (``/dev/ttyUSB0``, through pyserial) or a file.

:func:`print_receipt` blocks (a printer is slow); from async code call it with
``asyncio.to_thread``. A device path is never created: a printer unplugged at
``/dev/usb/lp0`` is :class:`PrinterUnavailable`, not a new regular file in ``/dev``.
Writes to devices are non-blocking with a deadline, so a printer that stops taking data
(out of paper, cover open) fails after ``write_timeout_s`` instead of hanging the till.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import termios
import time
from pathlib import Path
from typing import Annotated, Literal

import serial
from pydantic import BaseModel, ConfigDict, Field

from terminal_agent.receipts.errors import PrinterConfigError, PrinterUnavailable
from terminal_agent.receipts.model import Receipt
from terminal_agent.receipts.render import Width, render_escpos

PrinterKind = Literal["device", "serial", "file"]
_TRANSIENT = frozenset(
    {errno.ENOENT, errno.ENXIO, errno.ENODEV, errno.EBUSY, errno.EIO, errno.EAGAIN, errno.ENOSPC}
)


class PrinterSettings(BaseModel):
    """The ``[printer]`` section of the agent's configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: Path
    #: ``device``: a character device written as is (``/dev/usb/lp0``; a tty is put in
    #: raw output mode); ``serial``: a serial port opened with pyserial at ``baudrate``;
    #: ``file``: a regular file, created if needed, receipts appended.
    kind: PrinterKind = "device"
    width: Width = 42
    baudrate: Annotated[int, Field(gt=0)] = 9600
    write_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    partial_cut: bool = True


def _settings_for(target: Path) -> PrinterSettings:
    """A bare path: a character device (or anything under /dev) is a device, else a file."""
    is_dev = target.is_char_device() or target.as_posix().startswith("/dev/")
    return PrinterSettings(path=target, kind="device" if is_dev else "file")


def _os_error(exc: OSError, path: str, what: str) -> PrinterUnavailable | PrinterConfigError:
    reason = os.strerror(exc.errno) if exc.errno is not None else type(exc).__name__
    if exc.errno in _TRANSIENT:
        return PrinterUnavailable(f"{what}: {reason}", path=path)
    return PrinterConfigError(f"{what}: {reason}", path=path)


def _write_all(fd: int, data: bytes, deadline: float, path: str) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PrinterUnavailable("the printer did not take the receipt in time", path=path)
        events = poller.poll(left * 1000)
        if not events:
            continue
        if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
            raise PrinterUnavailable("the printer went away", path=path)
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


def _raw_output(fd: int) -> None:
    """A tty used as a device: no output processing (LF must not become CR LF)."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _to_device(data: bytes, settings: PrinterSettings) -> None:
    path = str(settings.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise _os_error(exc, path, "cannot open the printer") from exc
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            raise PrinterConfigError("not a character device", path=path)
        if os.isatty(fd):
            _raw_output(fd)
        _write_all(fd, data, time.monotonic() + settings.write_timeout_s, path)
    except OSError as exc:
        raise _os_error(exc, path, "cannot write to the printer") from exc
    finally:
        os.close(fd)


def _to_file(data: bytes, settings: PrinterSettings) -> None:
    path = str(settings.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOCTTY, 0o640)
    except OSError as exc:
        raise _os_error(exc, path, "cannot open the receipt file") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PrinterConfigError("not a regular file (use kind 'device')", path=path)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _os_error(exc, path, "cannot write the receipt file") from exc
    finally:
        os.close(fd)


def _to_serial(data: bytes, settings: PrinterSettings) -> None:
    path = str(settings.path)
    try:
        port = serial.Serial(
            path,
            baudrate=settings.baudrate,
            write_timeout=settings.write_timeout_s,
            exclusive=True,
        )
    except ValueError as exc:
        raise PrinterConfigError("the serial settings are not valid", path=path) from exc
    except serial.SerialException as exc:
        if isinstance(exc.errno, int):
            raise _os_error(exc, path, "cannot open the serial printer") from exc
        raise PrinterUnavailable("cannot open the serial printer", path=path) from exc
    try:
        port.write(data)
        port.flush()
    except serial.SerialTimeoutException as exc:
        raise PrinterUnavailable("the printer did not take the receipt in time", path=path) from exc
    except serial.SerialException as exc:
        raise PrinterUnavailable("cannot write to the serial printer", path=path) from exc
    finally:
        port.close()


def print_receipt(receipt: Receipt, target: Path | PrinterSettings) -> int:
    """Print ``receipt`` (ESC/POS) on ``target``; returns the number of bytes written.

    ``target`` is a :class:`PrinterSettings` or a bare path (a character device, or any
    path under ``/dev``, is written as a device, anything else as a file at 42 columns).

    Raises :class:`PrinterUnavailable` (try again) or :class:`PrinterConfigError`.
    """
    settings = target if isinstance(target, PrinterSettings) else _settings_for(target)
    data = render_escpos(receipt, settings.width, partial_cut=settings.partial_cut)
    writer = {"device": _to_device, "serial": _to_serial, "file": _to_file}[settings.kind]
    writer(data, settings)
    return len(data)
