# colcon's ament_python build type runs `setup.py`; everything else is declared in pyproject.toml.
from setuptools import setup
from setuptools.dist import Distribution


class _ColconReadableDistribution(Distribution):
    """colcon (colcon-python-setup-py) reads the package by ``ast.literal_eval(repr(dist.__dict__))`` after the
    config stage; setuptools keeps pyproject's ``requires-python`` as a ``SpecifierSet``, whose repr is not a
    literal, so ``colcon build`` failed. As a string it means the same to setuptools and pip."""

    def parse_config_files(self, *args, **kwargs):
        super().parse_config_files(*args, **kwargs)
        for holder in (self, self.metadata):
            if getattr(holder, "python_requires", None) is not None:
                holder.python_requires = str(holder.python_requires)


setup(distclass=_ColconReadableDistribution)
