"""Load recipes: the shipped ones, the platform base recipes, and the user's `recipe_paths`.

Kept apart from :mod:`imagefactory.recipe`, so the recipe model does not import the platforms
(whose base recipes are recipes themselves).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from . import platforms  # noqa: F401  (registers the platform base recipes)
from .recipe import CATALOGUE, Catalogue, RecipeError

_SHIPPED = Path(__file__).resolve().parent.parent / "recipes"


def load_recipes(extra_paths: Iterable[str] = ()) -> Catalogue:
    """Import the shipped recipes, then each extra folder, file or module name from settings."""
    if _SHIPPED.is_dir() and "recipes" not in sys.modules:
        root = str(_SHIPPED.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
    _import_package_modules("recipes")
    for entry in extra_paths:
        _import_entry(entry)
    return CATALOGUE


def _import_package_modules(package: str) -> None:
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError:
        return
    for path in sorted(Path(pkg.__file__).parent.rglob("*.py")):
        if path.name.startswith("_") or "node_modules" in path.parts:
            continue
        rel = path.relative_to(Path(pkg.__file__).parent).with_suffix("")
        importlib.import_module(".".join([package, *rel.parts]))


def _import_entry(entry: str) -> None:
    path = Path(entry).expanduser()
    if path.is_dir():
        for file in sorted(path.glob("*.py")):
            if not file.name.startswith("_"):
                _import_file(file)
    elif path.suffix == ".py":
        if not path.is_file():
            raise RecipeError(f"recipe path {entry} does not exist; fix `recipe_paths` in your config")
        _import_file(path)
    else:
        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as exc:
            raise RecipeError(f"recipe path {entry!r} is neither a folder, a .py file nor an importable "
                              f"module ({exc}); fix `recipe_paths` in your config") from None


def _import_file(path: Path) -> None:
    module_name = "imagefactory_user_recipes." + "_".join(path.resolve().with_suffix("").parts[-2:])
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except RecipeError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:  # a user's file: say which file and line, not a traceback
        sys.modules.pop(module_name, None)
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path.resolve()
                  or Path(f.filename) == path]
        line = f" line {frames[-1].lineno}" if frames else ""
        raise RecipeError(f"recipe file {path}{line}: {type(exc).__name__}: {exc}") from None
