"""The agent's CURVE client allowlist: a ZAP handler that admits only the owner's client key.

The HMAC key already refuses unsigned messages; this refuses the connection itself, so a
client that learnt an agent's address and server key (both public) but holds another client
key cannot even complete a handshake. ZAP runs once per connection, never per message. The
refused client sees ``EVENT_HANDSHAKE_FAILED_AUTH`` (status 400) on its socket monitor.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq

log = logging.getLogger("jupyter_kremote.agent")


class _Allowlist:
    """pyzmq's credentials-provider interface: ``callback(domain, z85_key) -> bool``."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = frozenset(keys)
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.refused += 1
        log.warning("refused a client whose CURVE key %s... is not the owner's",
                    key[:8].decode("ascii", "replace"))
        return False


def start_allowlist(ctx: zmq.Context, keys: tuple[bytes, ...]) -> Any:
    """Start a ZAP handler in ``ctx`` admitting only ``keys`` (Z85 public keys) on every
    CURVE socket of the context; returns the authenticator (``.stop()`` ends it)."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger("jupyter_kremote.agent.zap"))
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_Allowlist(keys))
    return auth


def parse_keys(text: str) -> tuple[bytes, ...]:
    """``KREMOTE_CURVE_CLIENTS``: comma-separated Z85 public keys (40 characters each)."""
    keys = tuple(k.strip().encode("ascii") for k in text.split(",") if k.strip())
    bad = [k for k in keys if len(k) != 40]
    if bad:
        raise ValueError(f"KREMOTE_CURVE_CLIENTS: {bad[0][:12]!r}... is not a Z85 CURVE public "
                         "key (40 characters)")
    return keys
