"""A pool's replicas from DNS: every address a name resolves to, as base URLs.

A Kubernetes headless Service resolves to the addresses of its ready pods, so
re-resolving it periodically follows scale-up, scale-down and restarts. The
resolver is injectable: tests give the pool a table instead of a DNS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

# host, port -> the IP addresses the name has now. Raises OSError when it cannot say.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_dns(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def split_host_port(target: str) -> tuple[str, int]:
    """'rollgate-vllm:8000' -> ('rollgate-vllm', 8000)."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{target!r} is not host:port")
    return host, int(port)


def base_urls(addresses: list[str], port: int) -> list[str]:
    """One base URL per distinct address, in a stable order (IPv6 in brackets)."""
    urls = set()
    for address in addresses:
        ip = ipaddress.ip_address(address)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        urls.add(f"http://{host}:{port}")
    return sorted(urls)


async def discover(target: str, resolver: Resolver = resolve_dns) -> list[str]:
    """The base URLs of the replicas behind `target` (host:port) now."""
    host, port = split_host_port(target)
    return base_urls(await resolver(host, port), port)
