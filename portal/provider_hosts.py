"""The provider's API hosts as IP addresses, for the gateway firewall to keep guests away from.

A guest who reaches the provider's API through the venue's NAT can send it wrong logins until the
provider blocks the venue's address (SMSC: 5 wrong logins in 30 minutes, error 4), and then
nobody can sign in. So the firewall rejects guest traffic to every address of provider.base_url
and provider.fallback_urls. callpass itself, on the gateway, is not affected.

The maintenance thread calls `ProviderAddresses.update` every minute; it resolves the hosts at
start, every REFRESH_SECONDS, and at once when the effective settings name other hosts.
"""

import ipaddress
import logging
import socket
import time
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

REFRESH_SECONDS = 600
RETRY_SECONDS = 60  # after a host did not resolve


def hosts(provider):
    """The host names (or address literals) of provider["base_url"] and ["fallback_urls"]."""
    urls = [provider["base_url"], *provider["fallback_urls"]]
    return sorted({urlsplit(url).hostname for url in urls if urlsplit(url).hostname})


def resolve(host):
    """Every IPv4 and IPv6 address host resolves to, sorted; OSError when it does not resolve."""
    found = set()
    for *_, address in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        # A link-local IPv6 answer carries its zone ("fe80::1%eth0"): the firewall wants none.
        found.add(str(ipaddress.ip_address(address[0].partition("%")[0])))
    return sorted(found)


class ProviderAddresses:
    """The provider's hosts and what they resolved to, refreshed when due."""

    def __init__(self):
        self.by_host = {}   # host -> its addresses at the last refresh
        self._due = 0.0     # time.monotonic() of the next refresh: at once

    def update(self, provider):
        """The addresses of every provider host when a refresh was due (else None).

        A host that does not resolve now keeps the addresses it had (logged): a passing DNS
        failure must not open the way to the provider.
        """
        wanted = hosts(provider)
        if wanted == sorted(self.by_host) and time.monotonic() < self._due:
            return None
        by_host = {}
        wait = REFRESH_SECONDS
        for host in wanted:
            try:
                by_host[host] = resolve(host)
            except (OSError, UnicodeError) as exc:
                log.warning("provider host %s does not resolve (%s); guests are kept away from "
                            "its last known addresses", host, exc)
                by_host[host] = self.by_host.get(host, [])
                wait = RETRY_SECONDS
        self.by_host = by_host
        self._due = time.monotonic() + wait
        return sorted({address for addresses in by_host.values() for address in addresses})
