"""Whether a host is this machine's loopback: what `qsave serve` and `qsave annotate serve`
bind to without an explicit opt-in, and what the reward server's guard accepts without a token.

>>> is_loopback("localhost"), is_loopback("::1"), is_loopback("[::1]"), is_loopback("0.0.0.0")
(True, True, True, False)
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without port) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
