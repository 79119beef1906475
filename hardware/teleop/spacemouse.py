"""3Dconnexion SpaceMouse over Linux hidraw (``/dev/hidrawN``), no driver or library needed.

Report format (input reports, little-endian int16, about +-350 counts at full deflection):

- report id 1: translation ``x y z`` (7 bytes) on the older *split-report* devices (SpaceNavigator,
  SpaceMouse Pro, SpaceExplorer); on the newer *combined-report* devices (SpaceMouse Wireless/Compact,
  the universal receiver) report 1 carries translation and rotation ``x y z rx ry rz`` (13 bytes);
- report id 2: rotation ``rx ry rz`` (split-report devices only);
- report id 3: buttons, a little-endian bit mask (bit 0 = left/menu button, bit 1 = right/fit button).

The HID frame: x to the right, y towards the user, z down (pushing the cap down is +z). hidraw hands over one
report per ``read``, so the report length tells the two families apart. While the cap is displaced the
device keeps sending reports (it streams while active), so a displaced device that falls silent is lost.
"""
from __future__ import annotations

import logging
import struct

from robot_rl.hardware.teleop.device import DeviceReader

log = logging.getLogger("robot_rl.teleop")

VENDOR_IDS = (0x046D, 0x256F)
"""Logitech (which made 3Dconnexion's older devices) and 3Dconnexion."""
PRODUCT_IDS_046D = frozenset({0xC603, 0xC605, 0xC606, 0xC621, 0xC623, 0xC625, 0xC626, 0xC627, 0xC628, 0xC629,
                              0xC62B, 0xC62E, 0xC62F, 0xC631, 0xC632, 0xC633, 0xC635, 0xC636, 0xC640, 0xC652})
"""3Dconnexion products under Logitech's vendor id (every 0x256F product is a 3Dconnexion device)."""
AXES = ("x", "y", "z", "rx", "ry", "rz")
_TRIPLE = struct.Struct("<3h")
_SIX = struct.Struct("<6h")


class SpaceMouse(DeviceReader):
    kind = "spacemouse"
    streams_while_active = True
    read_size = 64

    def __init__(self, path: str = "", fd: int | None = None, full_scale: float = 350.0,
                 buttons: dict[str, str] | None = None, reconnect_s: float = 1.0) -> None:
        super().__init__(path, fd, reconnect_s)
        if full_scale <= 0:
            raise ValueError(f"full_scale must be positive, got {full_scale}")
        self.full_scale = float(full_scale)
        self.button_bits: dict[str, int] = {}
        for role, bit in (buttons or {}).items():
            if not str(bit).isdigit():
                raise ValueError(f"spacemouse button for {role!r} must be a bit index like '0', got {bit!r}")
            self.button_bits[role] = int(bit)
        self._s.axes = {a: 0.0 for a in AXES}
        self.combined_reports: bool | None = None
        """True once a 13-byte report 1 was seen (newer device), False after a split one."""
        self.malformed = 0

    def _set(self, names: tuple[str, ...], values: tuple[int, ...]) -> None:
        for name, raw in zip(names, values):
            self._s.axes[name] = min(max(raw / self.full_scale, -1.0), 1.0)

    def parse(self, data: bytes) -> None:
        report_id = data[0]
        if report_id == 1 and len(data) >= 13:
            self.combined_reports = True
            self._set(AXES, _SIX.unpack_from(data, 1))
        elif report_id == 1 and len(data) >= 7:
            self.combined_reports = False
            self._set(AXES[:3], _TRIPLE.unpack_from(data, 1))
        elif report_id == 2 and len(data) >= 7:
            self._set(AXES[3:], _TRIPLE.unpack_from(data, 1))
        elif report_id == 3 and len(data) >= 2:
            mask = int.from_bytes(data[1:], "little")
            for role, bit in self.button_bits.items():
                self._button(role, bool(mask >> bit & 1))
        elif report_id in (1, 2, 3):
            self.malformed += 1
            if self.malformed in (1, 100, 10_000):
                log.warning("spacemouse: %d short reports (latest %s)", self.malformed, data.hex())
        # Other report ids (battery level on the wireless ones, LED feature echoes) carry no motion.
