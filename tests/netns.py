"""Separate "hosts" on one machine: one network namespace per name, joined to the host by veths.

Each namespace gets a veth pair with its own /30, all pairs carved from one free /24 in
10.200.0.0/16 .. 10.254.0.0/16. Every server a test starts binds to ONE host address,
`Network.server_address` (the host side of the first pair); the other namespaces reach it
through their own pair with a /32 route via their pair's host side. The host accepts packets
for any of its own addresses on any interface (the weak host model), so no forwarding or NAT
is needed, and with no default route a namespace reaches nothing else: its 127.0.0.1 is its
own loopback, not the machine's.

The reply from `server_address` to namespace i leaves through pair i (its connected /30), the
interface the request came in on, so strict reverse-path filtering passes as well.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

# Free /24s are looked for in 10.200.0.0/16 .. 10.254.0.0/16: private, and rarely routed.
FIRST_SECOND_OCTET, LAST_SECOND_OCTET = 200, 254
PAIRS_PER_BLOCK = 64  # a /24 holds 64 /30s
CLEANUP_TIMEOUT_S = 10


@dataclass(frozen=True)
class Namespace:
    """One namespace: its `ip netns` name, its address, and the host side of its pair."""

    netns: str
    address: str
    host_address: str
    host_interface: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this namespace (as root; cwd and environment are kept)."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass(frozen=True)
class Network:
    """The namespaces of `isolated_hosts`, by the names the caller gave them."""

    namespaces: dict[str, Namespace]
    block: str  # the /24 all pairs come from: what a server's access rules should trust
    server_address: str  # host side of the first pair: every server binds here

    def namespace(self, name: str) -> Namespace:
        return self.namespaces[name]


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def skip_unless_netns_available() -> None:
    """Skip (with the reason) where namespaces cannot be made: not root, or no `ip netns`."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) is not installed")
    try:
        _ip("netns", "list")
    except RuntimeError as error:
        pytest.skip(f"`ip netns` is unavailable: {error}")


ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable",
               "prohibit", "blackhole", "nat", "anycast"}  # fmt: skip


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to (default excepted)."""
    in_use = [
        ipaddress.IPv4Interface(line.split()[3]).network
        for line in _ip("-o", "-4", "addr").splitlines()
    ]
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        destination = words[1] if words[0] in ROUTE_TYPES else words[0]
        if destination != "default":
            in_use.append(ipaddress.IPv4Network(destination, strict=False))
    return in_use


def free_block() -> ipaddress.IPv4Network:
    """A random /24 of 10.200-254.x.0 that overlaps no address or route on this machine."""
    in_use = _networks_in_use()
    for _ in range(200):
        second, third = (
            random.randint(FIRST_SECOND_OCTET, LAST_SECOND_OCTET),
            random.randrange(256),
        )
        block = ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
        if not any(block.overlaps(network) for network in in_use):
            return block
    raise RuntimeError("no free /24 in 10.200.0.0/16 .. 10.254.0.0/16")


def _add_pair(netns: str, tag: str, index: int, pair: ipaddress.IPv4Network) -> Namespace:
    """Namespace `netns` with a veth pair on `pair` (host side .1, namespace side .2), up."""
    host_side, namespace_side = (str(address) for address in pair.hosts())
    host_if, namespace_if = f"mt{tag}h{index}", f"mt{tag}n{index}"  # <= 11 chars; the limit is 15
    _ip("netns", "add", netns)
    _ip("link", "add", host_if, "type", "veth", "peer", "name", namespace_if, "netns", netns)
    _ip("addr", "add", f"{host_side}/30", "dev", host_if)
    _ip("link", "set", host_if, "up")
    _ip("-n", netns, "addr", "add", f"{namespace_side}/30", "dev", namespace_if)
    _ip("-n", netns, "link", "set", namespace_if, "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    return Namespace(netns, namespace_side, host_side, host_if)


def _route_to_server(namespace: Namespace, server_address: str) -> None:
    """Reach `server_address` through this namespace's own pair: the host delivers it locally."""
    if namespace.host_address != server_address:
        _ip("-n", namespace.netns, "route", "add", f"{server_address}/32",
            "via", namespace.host_address)  # fmt: skip


def _kill_processes_in(netns: str) -> None:
    """SIGKILL whatever still runs in `netns` (servers, workers) and wait until none is left."""
    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    while pids := [int(pid) for pid in _ip("netns", "pids", netns).split()]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {netns} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove(netns: str, host_interface: str) -> None:
    """Kill the namespace's processes, then delete the pair and the namespace."""
    existing = _ip("netns", "list").split()
    if netns in existing:
        _kill_processes_in(netns)
    with contextlib.suppress(RuntimeError):  # the pair may not have been made yet
        _ip("link", "del", host_interface)
    if netns in existing:
        _ip("netns", "del", netns)


def _remove_all(planned: list[tuple[str, str]]) -> None:
    """Remove every namespace, even when one fails; then report all that failed."""
    problems = []
    for netns, host_interface in planned:
        try:
            _remove(netns, host_interface)
        except RuntimeError as error:
            problems.append(str(error))
    if problems:
        raise RuntimeError(f"namespaces left behind: {'; '.join(problems)}")


@contextlib.contextmanager
def isolated_hosts(names: Sequence[str]) -> Iterator[Network]:
    """One namespace per name (`mt-<name>-<hex>`), each reaching only `server_address`.

    Skips the test when namespaces cannot be made. Afterwards, also when the body raised, every
    process left in a namespace is killed and the namespaces and veths are gone.
    """
    skip_unless_netns_available()
    if not 0 < len(names) <= PAIRS_PER_BLOCK:
        raise ValueError(f"between 1 and {PAIRS_PER_BLOCK} names, got {len(names)}")
    tag = secrets.token_hex(3)
    block = free_block()
    pairs = list(block.subnets(new_prefix=30))
    planned = [(f"mt-{name}-{tag}", f"mt{tag}h{index}") for index, name in enumerate(names)]
    try:
        made = [
            _add_pair(netns, tag, index, pairs[index]) for index, (netns, _) in enumerate(planned)
        ]
        server_address = made[0].host_address
        for namespace in made:
            _route_to_server(namespace, server_address)
        yield Network(dict(zip(names, made, strict=True)), str(block), server_address)
    finally:
        _remove_all(planned)
