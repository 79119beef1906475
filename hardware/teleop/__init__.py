"""Teleop devices, the intervention arbiter, the virtual operator and the graded HIL protocol.

Importing this package is light (the config schema imports it); device modules use only the standard
library and numpy, and read the device nodes themselves (hidraw, evdev, a terminal).
"""
