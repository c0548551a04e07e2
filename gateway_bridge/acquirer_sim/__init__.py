"""The acquirer host simulator: the other end of the ISO 8583 connector (docs/iso8583.md).

- :mod:`.server`: :class:`AcquirerSimulator` (asyncio TCP server), its settings and the
  :class:`Faults` switches for tests.
- :mod:`.pins`: :class:`ZonePinService`, DE52 deciphered under the shared zone PIN key.
- :mod:`.cli`: ``main(argv) -> int`` for ``gateway-bridge acquirer-sim``.
"""

from gateway_bridge.acquirer_sim.cli import main
from gateway_bridge.acquirer_sim.pins import ZonePinService
from gateway_bridge.acquirer_sim.server import AcquirerSimSettings, AcquirerSimulator, Faults

__all__ = ["AcquirerSimSettings", "AcquirerSimulator", "Faults", "ZonePinService", "main"]
