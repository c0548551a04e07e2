"""gateway_bridge: the server side.

MQTT service, key store, journal and idempotency, acquirer connectors (see docs/ and
DESIGN section 2). Imports paycore only.
"""
