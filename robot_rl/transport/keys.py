"""CurveZMQ keys: ``robot-rl keys DIR`` makes them; the transports load them when ``transport.keys_dir`` is set.

Layout of DIR (copy only what each machine needs):
    learner.key, learner.key_secret        the learner's keypair (secret stays on the learner)
    actors/<name>.key, actors/<name>.key_secret   one keypair per actor machine (secret stays on that robot PC)
    authorized/<name>.key                  public keys the learner accepts (copies of actors/*.key)

The learner needs ``learner.key_secret`` and ``authorized/``; an actor needs ``learner.key`` and its own
``actors/<name>.key_secret``. Revoking an actor = deleting its file from ``authorized/`` on the learner: the
learner notices the change within a second (:class:`AuthorizedKeys`), refuses new connections with that key
and rejects every further message of actors already connected with it; no restart needed.

A key speaks for the actors its name names: ``authorized/<name>.key`` may say hello as ``actor_id`` ``<name>``
or ``<name>-<anything>`` (one robot PC running ``robot1-0``, ``robot1-1``), nothing else
(:func:`key_may_speak_for`). So a stolen or misconfigured robot key cannot inject data under another robot's id.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

log = logging.getLogger("robot_rl.learner.transport")


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


def key_may_speak_for(key_name: str, actor_id: str) -> bool:
    """Whether the authorized key ``key_name`` may act as ``actor_id`` (``name`` or ``name-<suffix>``)."""
    return actor_id == key_name or actor_id.startswith(key_name + "-")


class AuthorizedKeys:
    """The learner's view of ``authorized/``: public key -> key name, reloaded when the directory changes.

    pyzmq's authenticator tags each message with its connection's public key (the ``User-Id`` property: the
    key's z85 text, as in the ``.key`` file);
    :meth:`name_of` maps it to the key's file name, or None once the file is gone (revoked)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._signature: tuple = ()
        self._names: dict[str, str] = {}
        self.reload_if_changed()

    def _current_signature(self) -> tuple:
        entries = []
        for p in sorted(self.directory.glob("*.key")):
            try:
                st = p.stat()
            except FileNotFoundError:  # removed while listing: the next check sees it gone
                continue
            entries.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(entries)

    def reload_if_changed(self) -> bool:
        """Re-read the directory when a file was added, removed or rewritten; True when it changed."""
        signature = self._current_signature()
        if signature == self._signature:
            return False
        names = {}
        for p in sorted(self.directory.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(p)
            except (OSError, ValueError) as exc:
                log.error("ignoring unreadable authorized key %s: %s", p, exc)
                continue
            names[public.decode() if isinstance(public, bytes) else str(public)] = p.stem
        if self._signature:
            gone = sorted(set(self._names.values()) - set(names.values()))
            added = sorted(set(names.values()) - set(self._names.values()))
            log.warning("authorized keys changed in %s: revoked %s, added %s", self.directory, gone, added)
        self._signature, self._names = signature, names
        return True

    def name_of(self, user_id: str | None) -> str | None:
        return self._names.get(user_id) if user_id else None
