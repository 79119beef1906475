"""Learning algorithms, one per file. Importing this package registers the built-in ones."""
from robot_rl.algorithms import sac  # noqa: F401  (registers sac and rlpd)
from robot_rl.algorithms import adpo, bc, dppo, dsrl, fql, wsrl  # noqa: F401  (registers adpo, bc, dppo, dsrl, fql, wsrl)
from robot_rl.algorithms.base import Algorithm

__all__ = ["Algorithm"]
