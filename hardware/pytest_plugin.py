"""pytest plugin: the fixtures that start the real and emulated devices.

Registered by the project's tests/conftest.py; another project testing against these
emulators adds ``pytest_plugins = ["hardware.pytest_plugin"]`` to its own conftest.
"""

pytest_plugins = [
    "hardware.pcsc.fixtures",
    "hardware.pinpad.fixtures",
    "hardware.cards.fixtures",
]
