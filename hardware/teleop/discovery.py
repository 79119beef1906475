"""Finding teleop devices: SpaceMice among ``/sys/class/hidraw``, gamepads in ``/proc/bus/input/devices``.

Both read the kernel's own descriptions (text files), so they work without udev or a device library; the
roots are parameters so a different sysfs/procfs (a container's bind mount) can be named.
"""
from __future__ import annotations

from pathlib import Path

from robot_rl.hardware.teleop.gamepad import BTN_GAMEPAD
from robot_rl.hardware.teleop.spacemouse import PRODUCT_IDS_046D

HIDRAW_ROOT = "/sys/class/hidraw"
INPUT_DEVICES = "/proc/bus/input/devices"


def find_spacemice(sysfs_hidraw: str = HIDRAW_ROOT) -> list[tuple[str, str]]:
    """``(/dev/hidrawN, name)`` of every 3Dconnexion device, in hidraw order."""
    found = []
    root = Path(sysfs_hidraw)
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
        uevent = entry / "device" / "uevent"
        try:
            fields = dict(line.split("=", 1) for line in uevent.read_text().splitlines() if "=" in line)
        except OSError:
            continue
        try:
            _bus, vendor, product = (int(x, 16) for x in fields.get("HID_ID", "").split(":"))
        except ValueError:
            continue
        if vendor == 0x256F or (vendor == 0x046D and product in PRODUCT_IDS_046D):
            found.append((f"/dev/{entry.name}", fields.get("HID_NAME", "3Dconnexion device")))
    return found


def find_gamepads(devices_file: str = INPUT_DEVICES) -> list[tuple[str, str]]:
    """``(/dev/input/eventN, name)`` of every input device whose key bitmap has the gamepad buttons."""
    try:
        text = Path(devices_file).read_text()
    except OSError:
        return []
    found = []
    for block in text.strip().split("\n\n"):
        name, handlers, keys = "", [], 0
        for line in block.splitlines():
            if line.startswith("N: Name="):
                name = line.split("=", 1)[1].strip().strip('"')
            elif line.startswith("H: Handlers="):
                handlers = line.split("=", 1)[1].split()
            elif line.startswith("B: KEY="):
                # Space-separated hex words, most significant first, each one `long` (64 bits here).
                for word in line.split("=", 1)[1].split():
                    keys = (keys << 64) | int(word, 16)
        event = next((h for h in handlers if h.startswith("event")), None)
        if event and keys >> BTN_GAMEPAD & 1:
            found.append((f"/dev/input/{event}", name))
    return found


def discover(kind: str) -> str:
    """The first device of ``kind`` or a loud error saying what was looked at."""
    if kind == "spacemouse":
        found, where = find_spacemice(), HIDRAW_ROOT
    elif kind == "gamepad":
        found, where = find_gamepads(), INPUT_DEVICES
    else:
        raise ValueError(f"no discovery for {kind!r}")
    if not found:
        raise RuntimeError(f"no {kind} found in {where}; plug one in (and check read permission on its "
                           f"/dev node, e.g. a udev rule) or set hil.device.path")
    return found[0][0]
