"""One registry mechanism for policies, algorithms, reward models and envs (a real robot is reached through its ROS 2 env).

Components register a factory under a name; configs refer to them by that name (``env.name=panda_pick_cube``).
Feature packages register themselves on import; :func:`load_builtin` imports them lazily so that
``import robot_rl`` stays light (no mujoco, rclpy or device libraries at import time).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory. Registering the same name twice is an error (it usually means two plugins collide)."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._builtin_modules = builtin_modules
        self._loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            existing = self._factories.get(name)
            if existing is not None and existing is not factory:
                raise KeyError(f"{self.kind} {name!r} is already registered by {existing!r}")
            self._factories[name] = factory
            return factory
        return deco

    def _load_builtin(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def get(self, name: str) -> Callable[..., T]:
        self._load_builtin()
        if name not in self._factories:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {sorted(self._factories)}")
        return self._factories[name]

    def make(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        self._load_builtin()
        return name in self._factories


ENVS: Registry = Registry("env", ("robot_rl.sim",))
POLICIES: Registry = Registry("policy", ("robot_rl.policies",))
ALGORITHMS: Registry = Registry("algorithm", ("robot_rl.algorithms",))
REWARD_MODELS: Registry = Registry("reward model", ("robot_rl.reward_models",))


def make_policy(cfg: Any, obs_spec: Any, action_spec: Any) -> Any:
    """The run's policy (``cfg.policy``) built on the observation keys it reads: ``policy.obs_keys`` of the env's
    ``obs_spec`` (all of them when empty; an unknown key fails loudly). Every place that builds a run's policy
    (learner, actors, evaluation, export) goes through here, so they all agree on its parameters."""
    return POLICIES.make(cfg.policy.name, cfg.policy, obs_spec.select(cfg.policy.obs_keys), action_spec)


def env_specs(cfg: Any) -> tuple[Any, Any]:
    """The task's (``ObsSpec``, ``ActionSpec``) from its registered env (``cfg.env``) without keeping an env
    around: a factory's ``specs`` where it has one (real robots provide a spec-only factory), else a throwaway
    env's."""
    factory = ENVS.get(cfg.env.name)
    specs_fn = getattr(factory, "specs", None)
    if specs_fn is not None:
        return specs_fn(cfg.env)
    env = factory(cfg.env, seed=0)
    try:
        return env.obs_spec, env.action_spec
    finally:
        env.close()
