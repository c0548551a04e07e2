"""Fleet provisioning on the bridge side: the terminal CA and the broker's configuration.

See :mod:`gateway_bridge.fleet.ca`, :mod:`gateway_bridge.fleet.broker_config`, the CLI
entry points in :mod:`gateway_bridge.fleet.cli` and docs/broker.md.
"""
