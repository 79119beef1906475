"""CurveZMQ keys: ``robot-rl keys DIR`` makes them; the transports load them when ``transport.keys_dir`` is set.

Layout of DIR (copy only what each machine needs):
    learner.key, learner.key_secret        the learner's keypair (secret stays on the learner)
    actors/<name>.key, actors/<name>.key_secret   one keypair per actor machine (secret stays on that robot PC)
    authorized/<name>.key                  public keys the learner accepts (copies of actors/*.key)

The learner needs ``learner.key_secret`` and ``authorized/``; an actor needs ``learner.key`` and its own
``actors/<name>.key_secret``. Revoking an actor = deleting its file from ``authorized/`` on the learner.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


@dataclass(frozen=True)
class CurveKeys:
    public: bytes
    secret: bytes


def make_keys(directory: str | Path, actor_names: tuple[str, ...] = ("actor",)) -> Path:
    """Create the learner keypair (if absent) and one keypair per actor name, authorizing each actor."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    root = Path(directory)
    for sub in ("actors", "authorized"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not (root / "learner.key_secret").exists():
        zmq.auth.create_certificates(root, "learner")
    for name in actor_names:
        if not (root / "actors" / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(root / "actors", name)
        shutil.copy(root / "actors" / f"{name}.key", root / "authorized" / f"{name}.key")
    (root / "learner.key_secret").chmod(0o600)
    for p in (root / "actors").glob("*.key_secret"):
        p.chmod(0o600)
    return root


def learner_keys(directory: str | Path) -> tuple[CurveKeys, Path]:
    root = Path(directory)
    public, secret = zmq.auth.load_certificate(root / "learner.key_secret")
    authorized = root / "authorized"
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise FileNotFoundError(f"no authorized actor keys in {authorized}; run `robot-rl keys {root}`")
    return CurveKeys(public, secret), authorized


def actor_keys(directory: str | Path, actor_key_name: str = "actor") -> tuple[CurveKeys, bytes]:
    """(this actor's keypair, the learner's public key)."""
    root = Path(directory)
    own = root / "actors" / f"{actor_key_name}.key_secret"
    if not own.exists():
        candidates = sorted((root / "actors").glob("*.key_secret"))
        if len(candidates) != 1:
            raise FileNotFoundError(f"no actor secret key {own} (found {[c.name for c in candidates]})")
        own = candidates[0]
    public, secret = zmq.auth.load_certificate(own)
    learner_public, _ = zmq.auth.load_certificate(root / "learner.key")
    return CurveKeys(public, secret), learner_public


def make_server_socket_secure(sock: zmq.Socket, keys: CurveKeys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def make_client_socket_secure(sock: zmq.Socket, keys: CurveKeys, server_public: bytes) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public
