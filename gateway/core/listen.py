"""`HOST:PORT` listen addresses, shared by gateway.yaml's `http:` and relay.yaml: one parser, one notion of
"only this machine can connect", one rule for who may listen beyond it without TLS."""

from __future__ import annotations

import ipaddress


def check_listen(value: str, *, example: str) -> str:
    """The value if it is HOST:PORT with a port in 0..65535; else ValueError saying what to write."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"write HOST:PORT, e.g. {example}")
    return value


def listen_host(listen: str) -> str:
    return listen.rpartition(":")[0].strip("[]")


def listen_port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def is_loopback(host: str) -> bool:
    """True when only this machine can connect (127.0.0.0/8, ::1, localhost); a wildcard or another name is
    not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(
    *, listen: str, tls_certificate: object, tls_key: object, allow_plain_http: bool, plain_hint: str
) -> None:
    """TLS files go in pairs; plain HTTP beyond this machine needs `allow_plain_http: true`."""
    if bool(tls_certificate) != bool(tls_key):
        raise ValueError("tls_certificate and tls_key go together: set both or neither")
    if not is_loopback(listen_host(listen)) and not tls_certificate and not allow_plain_http:
        raise ValueError(
            f"listen {listen} reaches beyond this machine: set tls_certificate and tls_key, "
            f"or allow_plain_http: true {plain_hint}"
        )
