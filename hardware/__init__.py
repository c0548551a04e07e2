"""hardware: emulated devices for hardware-in-the-loop work.

EMV cards behind a real PC/SC stack (pcscd + vpcd), a PIN pad on a pseudo-terminal,
card profiles as data, fault injection, and the pytest fixtures that start them. These
are the *other side* of the device protocols: the agent and the bridge never import them.
"""
