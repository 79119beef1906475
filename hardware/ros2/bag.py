"""Episodes as rosbag2 bags (MCAP storage), for Foxglove and ``ros2 bag``.

:class:`EpisodeBag` collects serialized (CDR) messages of one episode: the sensor messages the node used and
the commands it sent, plus ``/robot_rl/action`` and ``/robot_rl/reward`` (``std_msgs/Float32MultiArray``).
:meth:`EpisodeBag.write` puts them in ``<dir>/<name>_0.mcap`` (written with the ``mcap`` library, schemas in
``ros2msg`` text with their dependencies, as rosbag2 does) plus the rosbag2 ``metadata.yaml``. Needs the
``.msg`` definitions of the types, found under the ROS prefixes (``AMENT_PREFIX_PATH``, then ``sys.prefix``).
"""
from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

_BUILTIN = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
            "int64", "uint64", "string", "wstring"}
_SEPARATOR = "=" * 80
_QOS = {"reliable": ("reliable", 1), "best_effort": ("best_effort", 2)}


def _msg_file(type_name: str) -> Path:
    pkg, _, name = type_name.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no definition of {type_name} under {prefixes}")


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


def _qos_yaml(reliability: str) -> str:
    """The offered QoS profile as rosbag2 writes it (keep-last, volatile, the publisher's reliability)."""
    rel = _QOS[reliability][1]
    return (f"- history: 3\n  depth: 0\n  reliability: {rel}\n  durability: 2\n  deadline:\n    sec: 0\n"
            f"    nsec: 0\n  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n"
            f"  liveliness_lease_duration:\n    sec: 0\n    nsec: 0\n  avoid_ros_namespace_conventions: false")


class EpisodeBag:
    """One episode's messages, written as a rosbag2 MCAP bag when the episode ends. Thread-safe ``add``."""

    def __init__(self, topics: dict[str, tuple[str, str]]) -> None:
        """``topics``: name -> (type, e.g. ``sensor_msgs/msg/Image``; QoS reliability of the publisher)."""
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
        with open(tmp / mcap_name, "wb") as f:
            writer = Writer(f, compression=CompressionType.NONE)
            writer.start(profile="ros2", library="robot_rl")
            channels = {}
            for topic, (type_name, _) in self.topics.items():
                schema = writer.register_schema(type_name, "ros2msg", message_definition(type_name).encode())
                # rosbag2 stores the QoS in the channel metadata too; readers match it against metadata.yaml
                channels[topic] = writer.register_channel(topic, "cdr", schema, metadata={
                    "offered_qos_profiles": _qos_yaml(self.topics[topic][1]), "type_description_hash": ""})
            for seq, (topic, t_ns, data) in enumerate(records):
                writer.add_message(channels[topic], t_ns, data, t_ns, sequence=seq)
                counts[topic] += 1
            writer.finish()
        start = records[0][1] if records else 0
        duration = records[-1][1] - start if records else 0
        (tmp / "metadata.yaml").write_text(self._metadata(mcap_name, start, duration, counts, ros_distro))
        os.replace(tmp, directory)
        return directory

    def _metadata(self, mcap_name: str, start: int, duration: int, counts: dict[str, int], distro: str) -> str:
        lines = ["rosbag2_bagfile_information:", "  version: 8", "  storage_identifier: mcap",
                 f"  duration:\n    nanoseconds: {duration}",
                 f"  starting_time:\n    nanoseconds_since_epoch: {start}",
                 f"  message_count: {sum(counts.values())}", "  topics_with_message_count:"]
        for topic, (type_name, reliability) in self.topics.items():
            qos = _qos_yaml(reliability)
            lines += ["    - topic_metadata:", f"        name: {topic}", f"        type: {type_name}",
                      "        serialization_format: cdr",
                      "        offered_qos_profiles: " + repr(qos).replace("'", '"'),
                      '        type_description_hash: ""', f"      message_count: {counts[topic]}"]
        lines += ['  compression_format: ""', '  compression_mode: ""', "  relative_file_paths:",
                  f"    - {mcap_name}", "  files:", f"    - path: {mcap_name}",
                  f"      starting_time:\n        nanoseconds_since_epoch: {start}",
                  f"      duration:\n        nanoseconds: {duration}",
                  f"      message_count: {sum(counts.values())}", "  custom_data: ~", f"  ros_distro: {distro}"]
        return "\n".join(lines) + "\n"
