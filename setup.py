# colcon's ament_python build type runs `setup.py`; everything else is declared in pyproject.toml.
from setuptools import setup

setup()
