"""MJCF of the Franka Panda pick-cube cell, built in code from primitive geoms (cheap to render on a CPU).

Kinematics are Franka's (the link frames of the URDF/DH table: d1=0.333, d3=0.316, a4=0.0825, a5=-0.0825,
d5=0.384, a7=0.088, flange 0.107; the hand sits on the flange turned -45 deg about z, its fingers slide
0-0.04 m each), with Franka's joint and torque limits and the identified link masses/inertias. The numbers
were checked against mujoco_menagerie's ``franka_emika_panda/panda.xml`` (Apache-2.0, see ``assets/NOTICE``);
the geometry below is our own capsule/box approximation, no mesh is used and nothing is loaded from disk.

World frame: the robot base is at the origin on the table top (z = 0), x points away from the robot.
"""
from __future__ import annotations

import numpy as np

# Franka Panda joint limits (rad) and torque limits (N m), joints 1..7.
JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
TORQUE_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
FINGER_RANGE = (0.0, 0.04)
"""Travel of each finger (m); the hand opens to 0.08 m between the finger joints."""
FLANGE_OFFSET = 0.107
"""Distance from the joint-7 frame to the flange along its z axis (m)."""
TCP_OFFSET = 0.1034
"""Distance from the flange to the point between the fingertip pads (m), Franka's default TCP."""
HOME_QPOS = np.array([0.0, 0.1, 0.0, -2.2, 0.0, 2.3, np.pi / 4])
"""Home posture (rad): hand pointing straight down, TCP about 0.48 m in front of the base, 0.23 m up."""

CUBE_HALF_SIZE = 0.02
"""The cube is 4 cm on a side (fits the 8 cm Franka hand with margin)."""
CUBE_MASS = 0.1
CUBE_HOME_XY = (0.5, 0.0)
"""Nominal cube position on the table (m)."""
TARGET_HOME_XY = (0.5, 0.15)
"""Nominal place-target position for the pick-and-place task (m)."""
TARGET_RADIUS = 0.035
FRONT_CAMERA_POS = np.array([1.3, -0.55, 0.75])
FRONT_CAMERA_LOOKAT = np.array([0.35, 0.0, 0.15])
FRONT_CAMERA_FOVY = 50.0
WRIST_CAMERA_FOVY = 70.0

# (name, mass kg, com xyz, full inertia ixx iyy izz ixy ixz iyz, parent->child offset xyz, quat wxyz, range)
# Link frames follow Franka's modified-DH convention: each joint rotates about its frame's z axis.
_SQ = "0.70710678"
_LINKS = [
    ("link1", 4.970684, "0.003875 0.002081 -0.04762", "0.70337 0.70661 0.009117 -0.000139 0.006772 0.019169",
     "0 0 0.333", "1 0 0 0"),
    ("link2", 0.646926, "-0.003141 -0.02872 0.003495", "0.007962 0.02811 0.025995 -0.003925 0.010254 0.000704",
     "0 0 0", f"{_SQ} -{_SQ} 0 0"),
    ("link3", 3.228604, "0.027518 0.039252 -0.066502", "0.037242 0.036155 0.01083 -0.004761 -0.011396 -0.012805",
     "0 -0.316 0", f"{_SQ} {_SQ} 0 0"),
    ("link4", 3.587895, "-0.05317 0.104419 0.027454", "0.025853 0.019552 0.028323 0.007796 -0.001332 0.008641",
     "0.0825 0 0", f"{_SQ} {_SQ} 0 0"),
    ("link5", 1.225946, "-0.011953 0.041065 -0.038437", "0.035549 0.029474 0.008627 -0.002117 -0.004037 0.000229",
     "-0.0825 0.384 0", f"{_SQ} -{_SQ} 0 0"),
    ("link6", 1.666555, "0.060149 -0.014117 -0.010517", "0.001964 0.004354 0.005433 0.000109 -0.001158 0.000341",
     "0 0 0", f"{_SQ} {_SQ} 0 0"),
    ("link7", 0.735522, "0.010517 -0.004252 0.061597", "0.012516 0.010027 0.004815 -0.000428 -0.001196 -0.000741",
     "0.088 0 0", f"{_SQ} {_SQ} 0 0"),
]
# Visual capsules per link, in the link's own frame: (fromto, radius). Approximate shells of the real links.
_LINK_SHAPES = {
    "link0": [("-0.04 0 0.0 -0.04 0 0.14", 0.075)],
    "link1": [("0 0 -0.19 0 0 -0.06", 0.065), ("0 0 -0.06 0 0 0", 0.06)],
    "link2": [("0 0 -0.06 0 0 0.06", 0.06), ("0 0 0 0 -0.2 0", 0.06)],
    "link3": [("0 0 -0.2 0 0 -0.05", 0.055), ("0 0 -0.05 0.0825 0 -0.05", 0.055)],
    "link4": [("0 0 -0.05 0 0 0.05", 0.055), ("0 0 0 -0.0825 0.12 0", 0.055)],
    "link5": [("0 0 -0.25 0 0 -0.05", 0.05), ("0 0.06 -0.08 0 0.06 -0.01", 0.035)],
    "link6": [("0 0 -0.03 0 0 0.03", 0.05), ("0 0 0 0.088 0 0", 0.045)],
    "link7": [("0 0 -0.04 0 0 0.08", 0.045)],
}


def _link_geoms(name: str) -> str:
    rgba = "0.93 0.93 0.95 1" if name not in ("link5", "link7") else "0.3 0.3 0.32 1"
    return "".join(
        f'<geom name="{name}_vis{i}" type="capsule" fromto="{fromto}" size="{radius}" rgba="{rgba}" class="visual"/>'
        for i, (fromto, radius) in enumerate(_LINK_SHAPES[name])
    )


def look_at_quat(pos: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera orientation (wxyz) looking from ``pos`` at ``target`` with ``up`` as image up (cameras look along -z)."""
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rot = np.stack([right, up, -forward], axis=1)  # columns = camera x, y, z axes in world coordinates
    w = np.sqrt(max(1e-12, 1.0 + rot[0, 0] + rot[1, 1] + rot[2, 2])) / 2.0
    return np.array([w, (rot[2, 1] - rot[1, 2]) / (4 * w), (rot[0, 2] - rot[2, 0]) / (4 * w),
                     (rot[1, 0] - rot[0, 1]) / (4 * w)])


def build_mjcf(timestep: float = 0.002, with_target: bool = False, offscreen_size: int = 512) -> str:
    """The whole cell as an MJCF string: table, Panda + hand, a free cube, (target marker), two cameras.

    ``timestep`` is the physics step (s); the OSC runs at this rate. ``with_target`` adds the flat, non-colliding
    place-target disc. ``offscreen_size`` bounds the largest frame :func:`mujoco.Renderer` may draw.
    """
    front_quat = " ".join(f"{v:.6f}" for v in look_at_quat(FRONT_CAMERA_POS, FRONT_CAMERA_LOOKAT))
    front_pos = " ".join(f"{v:.4f}" for v in FRONT_CAMERA_POS)
    # Wrist camera on the hand's back, looking past the fingertips (hand frame; image up = hand +x).
    wrist_quat = " ".join(f"{v:.6f}" for v in look_at_quat(np.array([0.07, 0.0, 0.02]), np.array([0.0, 0.0, 0.14]),
                                                            up=(1.0, 0.0, 0.0)))
    body_open, body_close = [], []
    for name, mass, com, inertia, pos, quat in _LINKS:
        index = int(name[-1]) - 1
        body_open.append(
            f'<body name="{name}" pos="{pos}" quat="{quat}">'
            f'<inertial mass="{mass}" pos="{com}" fullinertia="{inertia}"/>'
            f'<joint name="joint{index + 1}" range="{JOINT_LOWER[index]} {JOINT_UPPER[index]}"/>'
            + _link_geoms(name)
        )
        body_close.append("</body>")
    hand = f"""
      <body name="link8" pos="0 0 {FLANGE_OFFSET}">
        <body name="hand" quat="0.9238795 0 0 -0.3826834">
          <inertial mass="0.73" pos="-0.01 0 0.03" diaginertia="0.001 0.0025 0.0017"/>
          <geom name="hand_body" type="box" size="0.02 0.095 0.025" pos="0 0 0.035" rgba="0.93 0.93 0.95 1"
                class="collision"/>
          <geom name="hand_mount" type="cylinder" size="0.04 0.005" pos="0 0 0.005" rgba="0.3 0.3 0.32 1"
                class="visual"/>
          <site name="tcp" pos="0 0 {TCP_OFFSET}" size="0.005" rgba="1 0 0 0"/>
          <camera name="wrist" pos="0.07 0 0.02" quat="{wrist_quat}" fovy="{WRIST_CAMERA_FOVY}"/>
          <body name="left_finger" pos="0 0 0.0584">
            <inertial mass="0.015" pos="0 0.01 0.025" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
            <joint name="finger_left" class="finger"/>
            <geom name="left_finger_base" type="box" size="0.01 0.01 0.02" pos="0 0.012 0.02"
                  rgba="0.93 0.93 0.95 1" class="visual"/>
            <geom name="left_pad" type="box" size="0.009 0.006 0.011" pos="0 0.008 0.045" rgba="0.2 0.2 0.2 1"
                  class="pad"/>
          </body>
          <body name="right_finger" pos="0 0 0.0584" quat="0 0 0 1">
            <inertial mass="0.015" pos="0 0.01 0.025" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
            <joint name="finger_right" class="finger"/>
            <geom name="right_finger_base" type="box" size="0.01 0.01 0.02" pos="0 0.012 0.02"
                  rgba="0.93 0.93 0.95 1" class="visual"/>
            <geom name="right_pad" type="box" size="0.009 0.006 0.011" pos="0 0.008 0.045" rgba="0.2 0.2 0.2 1"
                  class="pad"/>
          </body>
        </body>
      </body>"""
    target = ""
    if with_target:
        target = (f'<geom name="target" type="cylinder" size="{TARGET_RADIUS} 0.001" '
                  f'pos="{TARGET_HOME_XY[0]} {TARGET_HOME_XY[1]} 0.001" rgba="0.1 0.8 0.2 1" class="visual"/>')
    return f"""
<mujoco model="panda_pick_cube">
  <compiler angle="radian" autolimits="true"/>
  <!-- implicitfast integrates joint damping implicitly: stable OSC gains at a 2 ms step. -->
  <option timestep="{timestep}" integrator="implicitfast" cone="pyramidal" impratio="1"/>
  <visual>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <!-- No MSAA and no shadow map: software GL (llvmpipe) renders a 96 px frame in a few ms. -->
    <quality offsamples="0" shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.4 0.4 0.4" specular="0 0 0"/>
    <rgba haze="0.6 0.65 0.7 1"/>
  </visual>
  <default>
    <joint axis="0 0 1" armature="0.1" damping="1"/>
    <geom contype="0" conaffinity="0" friction="1 0.005 0.0001" solref="0.01 1"/>
    <default class="visual"><geom contype="0" conaffinity="0" group="2"/></default>
    <default class="collision"><geom contype="1" conaffinity="1" group="3"/></default>
    <default class="pad"><geom contype="1" conaffinity="1" condim="4" friction="1.2 0.01 0.0001"/></default>
    <default class="finger"><joint type="slide" axis="0 1 0" range="0 0.04" armature="0.01" damping="2"/></default>
  </default>
  <worldbody>
    <light name="key_light" pos="0.6 -0.6 1.8" dir="-0.2 0.4 -1" directional="true" castshadow="false"
           diffuse="0.6 0.6 0.6" specular="0 0 0"/>
    <geom name="table" type="box" size="0.7 0.6 0.02" pos="0.4 0 -0.02" rgba="0.55 0.45 0.35 1"
          contype="1" conaffinity="1"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" rgba="0.35 0.37 0.4 1" class="visual"/>
    <camera name="front" pos="{front_pos}" quat="{front_quat}" fovy="{FRONT_CAMERA_FOVY}"/>
    {target}
    <body name="link0">
      <inertial mass="0.629769" pos="-0.041018 -0.00014 0.049974"
                fullinertia="0.00315 0.00388 0.004285 8.2904e-7 0.00015 8.2299e-6"/>
      {_link_geoms("link0")}
      {"".join(body_open)}{hand}{"".join(body_close)}
    </body>
    <!-- The cube comes after the robot so that qpos[:7] are the arm joints and qpos[7:9] the fingers. -->
    <body name="cube" pos="{CUBE_HOME_XY[0]} {CUBE_HOME_XY[1]} {CUBE_HALF_SIZE}">
      <freejoint name="cube_joint"/>
      <geom name="cube" type="box" size="{CUBE_HALF_SIZE} {CUBE_HALF_SIZE} {CUBE_HALF_SIZE}" mass="{CUBE_MASS}"
            rgba="0.85 0.15 0.15 1" contype="1" conaffinity="1" condim="4" friction="1 0.01 0.0001"/>
    </body>
  </worldbody>
  <actuator>
    {"".join(f'<motor name="torque{i + 1}" joint="joint{i + 1}" ctrlrange="{-t} {t}"/>'
             for i, t in enumerate(TORQUE_LIMITS))}
    <!-- Fingers: stiff position servos with Franka's grasp force scale (about 35 N each). -->
    <position name="finger_left" joint="finger_left" kp="1500" kv="20" ctrlrange="0 0.04" forcerange="-35 35"/>
    <position name="finger_right" joint="finger_right" kp="1500" kv="20" ctrlrange="0 0.04" forcerange="-35 35"/>
  </actuator>
</mujoco>
"""


def flange_pose_dh(q: np.ndarray) -> np.ndarray:
    """Flange pose (4x4) from Franka's published modified-DH table: an independent check of the MJCF.

    Rows (a, d, alpha) per joint, Craig convention: T_i = RotX(alpha) TransX(a) RotZ(q_i) TransZ(d).
    """
    dh = [(0.0, 0.333, 0.0), (0.0, 0.0, -np.pi / 2), (0.0, 0.316, np.pi / 2), (0.0825, 0.0, np.pi / 2),
          (-0.0825, 0.384, -np.pi / 2), (0.0, 0.0, np.pi / 2), (0.088, 0.0, np.pi / 2)]
    pose = np.eye(4)
    for (a, d, alpha), angle in zip(dh, q):
        ca, sa, cq, sq = np.cos(alpha), np.sin(alpha), np.cos(angle), np.sin(angle)
        pose = pose @ np.array([[cq, -sq, 0, a], [sq * ca, cq * ca, -sa, -d * sa], [sq * sa, cq * sa, ca, d * ca],
                                [0, 0, 0, 1]])
    flange = np.eye(4)
    flange[2, 3] = FLANGE_OFFSET
    return pose @ flange
