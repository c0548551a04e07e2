"""paycore: pure, I/O-free payment primitives and the wire contract.

BER-TLV and the EMV tag dictionary (:mod:`paycore.tlv`, :mod:`paycore.tags`), DOL
building (:mod:`paycore.dol`), the log and display redactor (:mod:`paycore.redact`),
DUKPT (:mod:`paycore.dukpt`), PIN blocks and TR-31 key blocks through psec
(:mod:`paycore.pinblock`, :mod:`paycore.tr31`), PAN handling (:mod:`paycore.pan`), the
PIN pad serial protocol (:mod:`paycore.pinpad`) and the MQTT wire contract
(:mod:`paycore.wire`).

Nothing here opens a file, a socket or a device, reads the environment or the clock
behind the caller's back: randomness and time are parameters. The errors are in
:mod:`paycore.errors`.
"""
