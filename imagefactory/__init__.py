"""imagefactory: build container image families from recipe classes with buildah.

The public API is re-exported here; modules behind it are private details::

    from imagefactory import Recipe, Install, Run, Copy, Config, AddUser

Names are imported on first use (PEP 562), so `python -m imagefactory --help` does not pay for
the executor, buildah wrapper or rich before it needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "buildah": ("Buildah", "BuildahError", "Mount"),
    "storage": ("StorageOptions",),
    "config": ("ConfigError", "Settings"),
    "execute": ("BuildFailed", "BuildReport", "Executor"),
    "plan": ("Plan", "PlanError", "build_plan"),
    "recipe": ("CATALOGUE", "Recipe", "RecipeError", "Runtime"),
    "loader": ("load_recipes",),
    "steps": ("AddUser", "Cmd", "Config", "Copy", "CopyFrom", "Entrypoint", "Env", "Expose", "Healthcheck",
              "HostCall", "Install", "Label", "Rendered", "Run", "RunCall", "Secret", "Step", "User", "Volume",
              "Workdir", "host_action"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
_WHERE["load_settings"] = "config"

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'imagefactory' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), "load" if name == "load_settings" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

