"""Episodes as rosbag2 bags (MCAP storage), for Foxglove and ``ros2 bag``.

:class:`EpisodeBag` collects serialized (CDR) messages of one episode: the sensor messages the node used and
the commands it sent, plus ``/robot_rl/action`` and ``/robot_rl/reward`` (``std_msgs/Float32MultiArray``).
:meth:`EpisodeBag.write` puts them in ``<dir>/<name>_0.mcap`` (written with the ``mcap`` library, schemas in
``ros2msg`` text with their dependencies, as rosbag2 does) plus the rosbag2 ``metadata.yaml``. Needs the
``.msg`` definitions of the types, found under the ROS prefixes (``AMENT_PREFIX_PATH``, then ``sys.prefix``).

What rosbag2's MCAP storage plugin writes, and so do we: one schema per message type (shared by its topics);
channel metadata ``offered_qos_profiles`` and ``topic_type_hash`` (the type's ``RIHS01_`` hash, from the
``<pkg>/msg/<Type>.json`` rosidl installs next to the ``.msg``); the ``rosbag2`` metadata record
(``serialized_metadata``: the same yaml as ``metadata.yaml``); per-channel message sequence numbers;
``log_time`` = receive time and ``publish_time`` = the message's header stamp when its type starts with a
``std_msgs/Header`` (the receive time otherwise); latched topics (``/tf_static``) offered transient-local.
"""
from __future__ import annotations

import json
import os
import re
import struct
import sys
import threading
from pathlib import Path

_BUILTIN = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
            "int64", "uint64", "string", "wstring"}
_SEPARATOR = "=" * 80
_RELIABILITY = {"reliable": 1, "best_effort": 2}                # rmw_qos_reliability_policy_e
_DURABILITY = {"transient_local": 1, "volatile": 2}              # rmw_qos_durability_policy_e
LATCHED_TOPICS = frozenset({"/tf_static", "/robot_description"})  # published transient-local by convention


def _msg_file(type_name: str, suffix: str = ".msg") -> Path:
    pkg, _, name = type_name.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {suffix} definition of {type_name} under {prefixes}")


def type_hash(type_name: str) -> str:
    """The ``RIHS01_...`` type hash (REP 2011) rosidl computed for ``type_name`` (``pkg/msg/Name``)."""
    doc = json.loads(_msg_file(type_name, ".json").read_text())
    for entry in doc["type_hashes"]:
        if entry["type_name"] == type_name:
            return entry["hash_string"]
    raise KeyError(f"{type_name}: no type hash in its rosidl .json")


def _starts_with_header(type_name: str) -> bool:
    for line in _msg_file(type_name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            return line.split()[0] in ("Header", "std_msgs/Header")
    return False


def header_stamp_ns(cdr: bytes) -> int | None:
    """``header.stamp`` (ns) of a CDR message whose first field is a ``std_msgs/Header``: after the 4-byte
    encapsulation header come ``int32 sec, uint32 nanosec``, in the byte order the encapsulation names."""
    if len(cdr) < 12 or cdr[0] != 0 or cdr[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from("<iI" if cdr[1] == 1 else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec if sec >= 0 and nanosec < 1_000_000_000 else None


def _dependencies(pkg: str, text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        field_type = re.sub(r"\[.*?\]", "", line.split()[0])
        field_type = re.sub(r"<=\d+$", "", field_type)  # bounded strings: string<=10
        if field_type in _BUILTIN:
            continue
        if field_type == "Header":
            field_type = "std_msgs/Header"
        if "/" not in field_type:
            field_type = f"{pkg}/{field_type}"
        p, _, n = field_type.partition("/")
        out.append(f"{p}/msg/{n.split('/')[-1]}")
    return out


def message_definition(type_name: str) -> str:
    """rosbag2's ``ros2msg`` schema: the type's ``.msg`` text, then each dependency after a separator line."""
    text = _msg_file(type_name).read_text()
    seen, order, todo = {type_name}, [], _dependencies(type_name.split("/")[0], text)
    while todo:
        dep = todo.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        dep_text = _msg_file(dep).read_text()
        order.append((dep, dep_text))
        todo += _dependencies(dep.split("/")[0], dep_text)
    parts = [text.rstrip("\n")]
    for dep, dep_text in order:
        pkg, _, name = dep.split("/")
        parts.append(f"{_SEPARATOR}\nMSG: {pkg}/{name}\n{dep_text.rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


def _qos_yaml(reliability: str, durability: str = "volatile") -> str:
    """The offered QoS profile as rosbag2 writes it (keep-last, the publisher's reliability and durability)."""
    rel, dur = _RELIABILITY[reliability], _DURABILITY[durability]
    return (f"- history: 3\n  depth: 0\n  reliability: {rel}\n  durability: {dur}\n  deadline:\n    sec: 0\n"
            f"    nsec: 0\n  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n"
            f"  liveliness_lease_duration:\n    sec: 0\n    nsec: 0\n  avoid_ros_namespace_conventions: false")


class EpisodeBag:
    """One episode's messages, written as a rosbag2 MCAP bag when the episode ends. Thread-safe ``add``."""

    def __init__(self, topics: dict[str, tuple[str, str]]) -> None:
        """``topics``: name -> (type, e.g. ``sensor_msgs/msg/Image``; QoS reliability of the publisher).
        Topics in :data:`LATCHED_TOPICS` are recorded as offered transient-local, the rest volatile."""
        self.topics = dict(topics)
        self._records: list[tuple[str, int, bytes]] = []
        self._lock = threading.Lock()

    def add(self, topic: str, time_ns: int, data: bytes) -> None:
        if topic not in self.topics:
            raise KeyError(f"topic {topic} was not declared for this bag")
        with self._lock:
            self._records.append((topic, int(time_ns), bytes(data)))

    def __len__(self) -> int:
        return len(self._records)

    def write(self, directory: str | Path, ros_distro: str = "jazzy") -> Path:
        """Write ``directory/<name>_0.mcap`` + ``metadata.yaml`` (atomically renamed into place)."""
        from mcap.writer import CompressionType, Writer

        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=False)
        with self._lock:
            records = sorted(self._records, key=lambda r: r[1])
        mcap_name = f"{directory.name}_0.mcap"
        counts = {t: 0 for t in self.topics}
        for topic, _, _ in records:
            counts[topic] += 1
        start = records[0][1] if records else 0
        duration = records[-1][1] - start if records else 0
        hashes = {type_name: type_hash(type_name) for type_name, _ in self.topics.values()}
        metadata = self._metadata(mcap_name, start, duration, counts, ros_distro, hashes)
        stamped = {type_name: _starts_with_header(type_name) for type_name, _ in self.topics.values()}
        with open(tmp / mcap_name, "wb") as f:
            writer = Writer(f, compression=CompressionType.NONE)
            writer.start(profile="ros2", library="robot_rl")
            schemas: dict[str, int] = {}
            channels = {}
            for topic, (type_name, reliability) in self.topics.items():
                if type_name not in schemas:  # one schema per type, as rosbag2
                    schemas[type_name] = writer.register_schema(type_name, "ros2msg",
                                                                message_definition(type_name).encode())
                channels[topic] = writer.register_channel(topic, "cdr", schemas[type_name], metadata={
                    "offered_qos_profiles": _qos_yaml(reliability, self._durability(topic)),
                    "topic_type_hash": hashes[type_name]})
            sequence = {t: 0 for t in self.topics}
            for topic, t_ns, data in records:
                publish = header_stamp_ns(data) if stamped[self.topics[topic][0]] else None
                writer.add_message(channels[topic], log_time=t_ns, data=data,
                                   publish_time=t_ns if publish is None else publish, sequence=sequence[topic])
                sequence[topic] += 1
            writer.add_metadata("rosbag2", {"serialized_metadata": metadata})
            writer.finish()
        (tmp / "metadata.yaml").write_text(metadata)
        os.replace(tmp, directory)
        return directory

    @staticmethod
    def _durability(topic: str) -> str:
        return "transient_local" if topic in LATCHED_TOPICS else "volatile"

    def _metadata(self, mcap_name: str, start: int, duration: int, counts: dict[str, int], distro: str,
                  hashes: dict[str, str]) -> str:
        lines = ["rosbag2_bagfile_information:", "  version: 8", "  storage_identifier: mcap",
                 f"  duration:\n    nanoseconds: {duration}",
                 f"  starting_time:\n    nanoseconds_since_epoch: {start}",
                 f"  message_count: {sum(counts.values())}", "  topics_with_message_count:"]
        for topic, (type_name, reliability) in self.topics.items():
            qos = _qos_yaml(reliability, self._durability(topic))
            lines += ["    - topic_metadata:", f"        name: {topic}", f"        type: {type_name}",
                      "        serialization_format: cdr",
                      "        offered_qos_profiles: " + repr(qos).replace("'", '"'),
                      f"        type_description_hash: {hashes[type_name]}",
                      f"      message_count: {counts[topic]}"]
        lines += ['  compression_format: ""', '  compression_mode: ""', "  relative_file_paths:",
                  f"    - {mcap_name}", "  files:", f"    - path: {mcap_name}",
                  f"      starting_time:\n        nanoseconds_since_epoch: {start}",
                  f"      duration:\n        nanoseconds: {duration}",
                  f"      message_count: {sum(counts.values())}", "  custom_data: ~", f"  ros_distro: {distro}"]
        return "\n".join(lines) + "\n"
