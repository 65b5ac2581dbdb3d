"""All-in-one (the default scenario: inventories/local): Redis is bound to loopback, so nothing outside
the host reaches it. Its network address refuses 6379, from the host itself and from outside."""

import socket

testinfra_hosts = ["ansible://redis"]


def test_redis_answers_on_loopback_only(host):
    address = host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]

    def reachable_on_host(ip: str) -> bool:
        return host.run(f"timeout 3 bash -c '</dev/tcp/{ip}/6379'").rc == 0

    def reachable_from_outside() -> bool:
        try:
            with socket.create_connection((address, 6379), timeout=3):
                return True
        except OSError:
            return False

    assert reachable_on_host("127.0.0.1")  # the probe sees an open port: Redis is there
    assert not reachable_on_host(address), f"Redis answers on {address}:6379"
    assert not reachable_from_outside(), f"Redis answers on {address}:6379 from outside the host"
