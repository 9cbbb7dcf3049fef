"""Loaded at start-up by every `livedesk` process a test spawns: no network but loopback, the same
rule as the `no_network` fixture (`tests.netguard.livedesk_netguard`;
the repository root is on the child's path)."""

from __future__ import annotations

from tests.netguard.livedesk_netguard import install

install()
