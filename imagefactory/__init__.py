"""imagefactory: build container image families from recipe classes with buildah.

The public API is re-exported here; modules behind it are private details::

    from imagefactory import Recipe, Install, Run, Copy, Config, AddUser
"""

from .buildah import Buildah, BuildahError, Mount, StorageOptions
from .config import ConfigError, Settings, load as load_settings
from .execute import BuildFailed, BuildReport, Executor
from .plan import Plan, PlanError, build_plan
from .recipe import CATALOGUE, Recipe, RecipeError, Runtime
from .loader import load_recipes
from .steps import (AddUser, Cmd, Config, Copy, CopyFrom, Entrypoint, Env, Expose, Healthcheck, Install, Label,
                    Run, Secret, Step, User, Volume, Workdir)

__version__ = "0.1.0"

__all__ = [
    "AddUser", "BuildFailed", "BuildReport", "Buildah", "BuildahError", "Cmd", "Config", "ConfigError", "Copy",
    "CopyFrom", "Entrypoint", "Env", "Executor", "Expose", "Healthcheck", "Install", "Label", "Mount", "Plan",
    "PlanError", "CATALOGUE", "Recipe", "RecipeError", "Run", "Secret", "Runtime", "Settings", "Step", "StorageOptions", "User",
    "Volume", "Workdir", "build_plan", "load_recipes", "load_settings",
]
