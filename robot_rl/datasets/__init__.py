"""Datasets in and out of our episode store: LeRobotDataset (v3.0 and v2.1) import, v3.0 export, and
rosbag2/MCAP import (``robot-rl data ...``, see :mod:`robot_rl.datasets.cli`).

Needs the ``data`` extra (pyarrow for parquet, PyAV for video, rosbags for bags); importing this package
imports none of them, so the CLI starts without them.
"""
