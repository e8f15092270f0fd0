"""The CURVE keys that authenticate TCP clients of the daemon, kept in the private home.

``HOME/keys/`` (0700) holds the daemon's keypair (``server.public``, ``server.secret``), one client
keypair (``client.public``, ``client.secret``) and ``authorized_clients`` (one Z85 public key per
line): a TCP client must prove it holds the secret of a listed key. Each file is 0600. Torch-free;
the client reads the same files (copy the folder to use the daemon from elsewhere through a tunnel).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

KEY_LEN = 40  # a Z85-encoded 32-byte key


class CurveKeyError(Exception):
    """The keys are missing, unreadable, malformed or not private; the message says which file."""


@dataclass(frozen=True)
class ClientKeys:
    server_public: bytes
    public: bytes
    secret: bytes


def keys_dir(home: Path) -> Path:
    return Path(home) / "keys"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_private(path: Path) -> None:
    try:
        st = path.lstat()
    except OSError as e:
        raise CurveKeyError(f"{path}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise CurveKeyError(f"{path}: must be a regular file owned by you with mode 0600 "
                            f"(is {oct(stat.S_IMODE(st.st_mode))}); fix it with chmod 600")


def _read_key(path: Path) -> bytes:
    _check_private(path)
    data = path.read_bytes().strip()
    if len(data) != KEY_LEN:
        raise CurveKeyError(f"{path}: not a Z85 CURVE key ({len(data)} characters, expected {KEY_LEN})")
    return data


def ensure(home: Path) -> None:
    """Create the keys folder and any missing keypair (server and one authorized client)."""
    d = keys_dir(home)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = d.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise CurveKeyError(f"{d}: not a directory owned by you")
    os.chmod(d, 0o700)
    for who in ("server", "client"):
        if not (d / f"{who}.secret").exists():
            public, secret = zmq.curve_keypair()
            (d / f"{who}.public").unlink(missing_ok=True)
            _write_private(d / f"{who}.secret", secret)
            _write_private(d / f"{who}.public", public)
            if who == "client":
                with open(d / "authorized_clients", "ab") as f:
                    os.fchmod(f.fileno(), 0o600)
                    f.write(public + b"\n")


def server_secret(home: Path) -> bytes:
    return _read_key(keys_dir(home) / "server.secret")


def authorized(home: Path) -> set[bytes]:
    """The raw 32-byte public keys allowed in (ZAP hands us raw keys)."""
    path = keys_dir(home) / "authorized_clients"
    _check_private(path)
    keys = set()
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if len(line) != KEY_LEN:
            raise CurveKeyError(f"{path}:{n}: not a Z85 CURVE public key")
        keys.add(z85.decode(line))
    return keys


def client(home: Path) -> ClientKeys:
    d = keys_dir(home)
    return ClientKeys(_read_key(d / "server.public"), _read_key(d / "client.public"), _read_key(d / "client.secret"))
