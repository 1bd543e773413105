"""Which certificate authorities the CMMS client trusts (`cmms.http.verify_tls` and `ca`).

- `ca: FILE`: that file only (a plant proxy's CA, a private CMMS).
- `verify_tls: false`: no verification.
- Otherwise the operating system's trust store, what OpenSSL itself uses (`ssl.get_default_verify_paths()`:
  on Debian and Raspberry Pi OS the `ca-certificates` package, where integrators also add a plant proxy's
  CA with `update-ca-certificates`; SSL_CERT_FILE / SSL_CERT_DIR steer it as they steer OpenSSL). certifi's
  bundle (which httpx would load) is used only when the system has no store at all.

Memory: a CA bundle file is parsed whole into OpenSSL at start (about 1 MiB for the 140-odd certificates of
Debian's or certifi's), while a hashed certificate directory (`/etc/ssl/certs`) is read on demand, one CA at
a handshake. With OpenSSL's own default locations, whose directory holds at least as many hashed
certificates as the bundle (update-ca-certificates writes both from the same list), the directory alone is
used. A bundle with more certificates than the directory (one appended by hand) or any location set by
SSL_CERT_FILE / SSL_CERT_DIR is loaded exactly as OpenSSL would: the file and the directory.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass

from gateway.cmms.schema import HttpClientOptions

_HASHED = re.compile(r"[0-9a-f]{8}\.[0-9]+")  # c_rehash / `openssl rehash` names: <subject hash>.<n>


@dataclass(frozen=True)
class Trust:
    """What to give httpx as `verify`, and one phrase for the start-up log."""

    verify: ssl.SSLContext | bool
    description: str


def trust_for(options: HttpClientOptions) -> Trust:
    if options.ca:
        return Trust(ssl.create_default_context(cafile=options.ca), f"the CA file {options.ca} (ca:)")
    if not options.verify_tls:
        return Trust(False, "nothing: certificates are NOT verified (verify_tls: false)")
    return system_trust()


def system_trust(paths: ssl.DefaultVerifyPaths | None = None) -> Trust:
    """The operating system's trust store as OpenSSL finds it (`paths`: ssl.get_default_verify_paths())."""
    paths = ssl.get_default_verify_paths() if paths is None else paths
    hashed = _hashed_certificates(paths.capath)
    if hashed and _is_default(paths) and (paths.cafile is None or _bundle_size(paths.cafile) <= hashed):
        return Trust(
            ssl.create_default_context(capath=paths.capath),
            f"the system trust store ({paths.capath}, read on demand)",
        )
    if paths.cafile or hashed:
        where = " and ".join(p for p in (paths.cafile, paths.capath if hashed else None) if p)
        return Trust(
            ssl.create_default_context(cafile=paths.cafile, capath=paths.capath if hashed else None),
            f"the system trust store ({where})",
        )
    import certifi  # httpx's dependency

    return Trust(
        ssl.create_default_context(cafile=certifi.where()),
        f"certifi's CA bundle (no system trust store: neither {paths.openssl_cafile} nor"
        f" {paths.openssl_capath} holds certificates; install ca-certificates)",
    )


def _is_default(paths: ssl.DefaultVerifyPaths) -> bool:
    """True when the locations are OpenSSL's compiled-in ones (SSL_CERT_FILE / SSL_CERT_DIR unset, or set
    to those same places)."""

    def same(found: str | None, default: str) -> bool:
        return found is None or os.path.realpath(found) == os.path.realpath(default)

    return same(paths.cafile, paths.openssl_cafile) and same(paths.capath, paths.openssl_capath)


def _hashed_certificates(capath: str | None) -> int:
    if not capath:
        return 0
    try:
        return sum(1 for name in os.listdir(capath) if _HASHED.fullmatch(name))
    except OSError:
        return 0


def _bundle_size(cafile: str) -> int:
    """The number of certificates in a PEM bundle (read line by line: nothing kept in memory)."""
    try:
        with open(cafile, encoding="ascii", errors="replace") as f:
            return sum(1 for line in f if line.startswith("-----BEGIN CERTIFICATE-----"))
    except OSError:
        return 0
