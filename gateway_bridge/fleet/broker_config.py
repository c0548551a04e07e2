"""A production Mosquitto 2 configuration: mTLS listener and per-terminal ACL (docs/broker.md).

Implements the access rules of DESIGN section 4 (a terminal writes only its own ``req`` and
``status`` and reads only its own ``resp`` and ``config``) with Mosquitto's ``acl_file``
``pattern`` lines, where ``%u`` is the username, which ``use_identity_as_username`` takes
from the CN of the client certificate the CA issued. It also applies the traps of DESIGN 9:
``set_tcp_nodelay true``, ``max_queued_messages`` sized for the bridge, ``log_dest
stderr``, and files readable by user ``mosquitto`` (the broker drops privileges and
re-reads configuration, ACL, certificates and the CRL as that user on SIGHUP).

``render_*`` are pure; :func:`write_broker_config` writes the directory.
"""

from __future__ import annotations

import contextlib
import grp
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway_bridge.fleet.ca import CaError
from paycore.wire import topics

CONF_NAME = "mosquitto.conf"
ACL_NAME = "acl"
BUNDLE_NAME = "ca-bundle.pem"
CRL_NAME = "crl.pem"
SERVER_CERT_NAME = "server-cert.pem"
SERVER_KEY_NAME = "server-key.pem"
DROPIN_NAME = "mosquitto.service.d/pos-gateway.conf"


@dataclass(frozen=True)
class BrokerDeployment:
    """What the configuration says; defaults suit one broker in front of a few bridges."""

    bridges: tuple[str, ...]
    """CNs of the bridges' client certificates (their usernames)."""
    install_dir: Path
    """Where the directory will live on the broker host (paths in the config point there)."""
    port: int = 8883
    bind_address: str = "0.0.0.0"  # noqa: S104 - a broker serves the terminals' network
    max_queued_messages: int = 100_000
    """Per client; past it Mosquitto drops QoS 1 (DESIGN 9). A bridge's shared-subscription
    queue must hold every request that arrives while all bridges restart."""
    max_inflight_messages: int = 1_000
    persistence_dir: Path = Path("/var/lib/mosquitto")
    autosave_interval_s: int = 60
    persistent_client_expiration: str = "14d"
    user: str = "mosquitto"
    mosquitto_binary: str = "/usr/sbin/mosquitto"
    log_types: tuple[str, ...] = field(
        default=("error", "warning", "notice", "information", "subscribe")
    )

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise CaError("port out of range")
        if not self.bridges:
            raise CaError("name at least one bridge")
        for bridge in self.bridges:
            topics.check_terminal_id(bridge)
        if self.max_queued_messages < 1000:
            raise CaError("max_queued_messages below 1000 drops bridge traffic (DESIGN 9)")


def render_acl(bridges: tuple[str, ...]) -> str:
    """The ``acl_file``: patterns for every client, then one block per bridge."""
    lines = [
        "# written by gateway-bridge broker-config; docs/broker.md explains each line.",
        "# %u is the username = the CN of the client certificate (use_identity_as_username).",
        "# Patterns apply to every authenticated client; anonymous clients are refused.",
        f"pattern write {topics.PREFIX}/t/%u/req",
        f"pattern write {topics.PREFIX}/t/%u/status",
        f"pattern read {topics.PREFIX}/t/%u/resp",
        f"pattern read {topics.PREFIX}/t/%u/config",
        f"pattern read {topics.BRIDGE_STATUS}",
    ]
    for bridge in bridges:
        lines += [
            "",
            f"user {bridge}",
            f"topic read {topics.REQUEST_SUBSCRIPTION}",
            f"topic read {topics.SHARED_REQUEST_SUBSCRIPTION}",
            f"topic write {topics.PREFIX}/t/+/resp",
            f"topic write {topics.BRIDGE_STATUS}",
            f"topic read {topics.PREFIX}/t/+/status",
        ]
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(deployment: BrokerDeployment) -> str:
    """The text of ``mosquitto.conf`` (Mosquitto 2.0) for ``deployment``."""
    base = deployment.install_dir
    lines = [
        "# written by gateway-bridge broker-config (docs/broker.md)",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {base / ACL_NAME}",
        f"user {deployment.user}",
        "set_tcp_nodelay true",
        f"max_queued_messages {deployment.max_queued_messages}",
        "max_queued_bytes 0",
        f"max_inflight_messages {deployment.max_inflight_messages}",
        "persistence true",
        f"persistence_location {deployment.persistence_dir}/",
        f"autosave_interval {deployment.autosave_interval_s}",
        f"persistent_client_expiration {deployment.persistent_client_expiration}",
        "log_dest stderr",
        *(f"log_type {kind}" for kind in deployment.log_types),
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages true",
        "",
        f"listener {deployment.port} {deployment.bind_address}",
        "protocol mqtt",
        f"cafile {base / BUNDLE_NAME}",
        f"certfile {base / SERVER_CERT_NAME}",
        f"keyfile {base / SERVER_KEY_NAME}",
        f"crlfile {base / CRL_NAME}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        "# a terminal cannot take over another client's session by choosing its client id.",
        "# A listener option: placed before `listener` it would open a default listener",
        "# on port 1883 instead (Mosquitto 2.0 does, silently).",
        "use_username_as_clientid true",
    ]
    return "\n".join(lines) + "\n"


def render_systemd_dropin(deployment: BrokerDeployment) -> str:
    """A drop-in for ``mosquitto.service``: this configuration, and SIGHUP as reload."""
    return "\n".join(
        [
            "# /etc/systemd/system/mosquitto.service.d/pos-gateway.conf",
            "# written by gateway-bridge broker-config (docs/broker.md)",
            "[Service]",
            "ExecStart=",
            f"ExecStart={deployment.mosquitto_binary} -c {deployment.install_dir / CONF_NAME}",
            "# `systemctl reload mosquitto` re-reads the configuration, the ACL, the",
            "# certificates and the CRL (after `gateway-bridge ca crl`); open connections stay.",
            "ExecReload=",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "",
        ]
    )


@dataclass(frozen=True)
class BrokerFiles:
    directory: Path
    conf: Path
    acl: Path
    dropin: Path


def _check_server_material(bundle_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    try:
        cas = x509.load_pem_x509_certificates(bundle_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CaError(
            "the CA bundle, server certificate or (unencrypted) key does not load"
        ) from exc
    if key.public_key() != cert.public_key():
        raise CaError("the server key does not belong to the server certificate")
    if not any(ca.subject == cert.issuer for ca in cas):
        raise CaError("the server certificate was not issued by a CA in the bundle")


def _group_id(name: str) -> int | None:
    with contextlib.suppress(KeyError):
        return grp.getgrnam(name).gr_gid
    return None


def install_file(path: Path, data: bytes, *, mode: int, group: str | None) -> None:
    """Write ``data`` atomically with ``mode``, group-owned by ``group`` when we can chown."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    gid = _group_id(group) if group is not None else None
    if gid is not None and os.geteuid() == 0:
        os.chown(tmp, 0, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_broker_config(
    out_dir: Path,
    deployment: BrokerDeployment,
    *,
    bundle_pem: bytes,
    crl_pem: bytes,
    server_cert_pem: bytes,
    server_key_pem: bytes,
) -> BrokerFiles:
    """Write the configuration directory; the server key is 0640 root:``deployment.user``.

    Everything else is 0644 in a 0755 directory: user ``mosquitto`` must read all of it,
    again on every reload. Without root, the key stays 0640 with the caller's group; the
    installer must ``chgrp mosquitto`` it (docs/broker.md).
    """
    _check_server_material(bundle_pem, server_cert_pem, server_key_pem)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o755)  # noqa: S103 - user mosquitto must enter it
    conf = out_dir / CONF_NAME
    acl = out_dir / ACL_NAME
    dropin = out_dir / DROPIN_NAME
    dropin.parent.mkdir(exist_ok=True)
    public = 0o644
    install_file(out_dir / BUNDLE_NAME, bundle_pem, mode=public, group=None)
    install_file(out_dir / CRL_NAME, crl_pem, mode=public, group=None)
    install_file(out_dir / SERVER_CERT_NAME, server_cert_pem, mode=public, group=None)
    install_file(out_dir / SERVER_KEY_NAME, server_key_pem, mode=0o640, group=deployment.user)
    install_file(acl, render_acl(deployment.bridges).encode(), mode=public, group=None)
    install_file(conf, render_mosquitto_conf(deployment).encode(), mode=public, group=None)
    install_file(dropin, render_systemd_dropin(deployment).encode(), mode=public, group=None)
    return BrokerFiles(out_dir, conf, acl, dropin)
