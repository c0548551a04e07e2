"""Line faults for the emulated PIN pad, switchable while it runs (from any thread).

* ``noise``: probability, per frame the pad sends, of random garbage bytes before it.
* ``drop``: probability, per frame the pad sends, that one of its bytes is lost.
* ``noise_inbound`` / ``drop_inbound``: the same on what the pad receives (per read chunk),
  so the host's frames and ACKs get damaged or lost too.
* ``silent``: the pad reads and ignores everything, and sends nothing.

Unplug/replug are methods of :class:`~hardware.pinpad.emulator.EmulatedPinpad`. The random
choices come from ``random.Random(seed)``: a failing test replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Faults:
    """The faults in force; plain attributes, change them between commands."""

    noise: float = 0.0
    drop: float = 0.0
    noise_inbound: float = 0.0
    drop_inbound: float = 0.0
    silent: bool = False
    #: LOAD KEY reports a check value that is not the key's (a pad whose key storage is
    #: damaged): what provisioning's KCV comparison exists to catch.
    wrong_kcv: bool = False
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - fault injection, not crypto

    def clear(self) -> None:
        """No faults."""
        self.noise = self.drop = self.noise_inbound = self.drop_inbound = 0.0
        self.silent = False
        self.wrong_kcv = False

    def outbound(self, wire: bytes) -> bytes:
        """``wire`` as it reaches the host."""
        return self._apply(wire, self.noise, self.drop)

    def inbound(self, chunk: bytes) -> bytes:
        """``chunk`` as it reaches the pad."""
        return self._apply(chunk, self.noise_inbound, self.drop_inbound)

    def _apply(self, data: bytes, noise: float, drop: float) -> bytes:
        if self.silent:
            return b""
        rng = self._rng
        if data and drop and rng.random() < drop:
            cut = rng.randrange(len(data))
            data = data[:cut] + data[cut + 1 :]
        if noise and rng.random() < noise:
            data = rng.randbytes(rng.randint(1, 16)) + data
        return data
