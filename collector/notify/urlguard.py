"""SSRF guard for user-defined notification targets (webhook URLs, bot API bases, SMTP hosts).

Policy (docs/notifications.md, "Security"): only admins create or change channels; and the
collector refuses to deliver to loopback, private, link-local (cloud metadata at
169.254.169.254), carrier-grade NAT, multicast and reserved addresses unless the address or
host is in `notify.allowed_hosts`. The check runs on the addresses a name resolves to, and
the HTTP connection uses exactly those checked addresses (a resolver that filters), so a DNS
answer that changes between check and connect cannot slip through. Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedTarget(ValueError):
    """A delivery target the SSRF policy refuses; the message names the address."""


@dataclass(frozen=True)
class UrlGuard:
    allowed_networks: tuple[Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_list(cls, entries: Sequence[str]) -> UrlGuard:
        """Entries are CIDRs / addresses ("127.0.0.1", "10.0.0.0/8") or host names."""
        nets: list[Network] = []
        hosts: set[str] = set()
        for entry in entries:
            try:
                nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(entry.strip().lower().rstrip("."))
        return cls(tuple(nets), frozenset(hosts))

    def address_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed_networks):
            return True
        return ip.is_global and not ip.is_multicast

    def check_address(self, host: str, address: str) -> None:
        if host.lower().rstrip(".") in self.allowed_hosts:
            return
        if not self.address_allowed(address):
            raise BlockedTarget(
                f"{host} resolves to {address}, a private or local address; an admin can allow "
                "it with the notify.allowed_hosts setting"
            )

    def check_url(self, url: str) -> str:
        """Refuse non-HTTP(S) URLs and literal addresses outside the policy; returns the host."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise BlockedTarget(f"expected an http:// or https:// URL, got {url!r}")
        host = parts.hostname
        try:
            ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return host  # a name: checked when resolved
        self.check_address(host, host)
        return host

    def resolver(self) -> AbstractResolver:
        return _GuardedResolver(self)

    async def check_host(self, host: str, port: int) -> None:
        """For non-HTTP targets (SMTP): resolve and check every address."""
        try:
            ipaddress.ip_address(host)
            self.check_address(host, host)
            return
        except ValueError:
            pass
        for result in await DefaultResolver().resolve(host, port, socket.AF_UNSPEC):
            self.check_address(host, result["host"])


class _GuardedResolver(AbstractResolver):
    def __init__(self, guard: UrlGuard) -> None:
        self._guard = guard
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._guard.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def allow_all() -> UrlGuard:
    """For tests of the guard's absence only: every address allowed."""
    return UrlGuard((ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))


__all__: list[Any] = ["BlockedTarget", "UrlGuard"]
