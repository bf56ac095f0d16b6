"""The library test images: real cJSON + llhttp builds in both profiles, built once per test run.

Two images share one Debian 13 slim base plus the build dependencies:
``a`` = cJSON debug + llhttp release (and a program compiled against both),
``b`` = cJSON release + llhttp debug, ``unsafe`` = a hardened llhttp next to an
unhardened binary. test_libraries.py, test_verify_cli.py and test_sbom.py read them
through the session fixture ``lib_images`` (conftest.py). They live in the run's shared
store: every xdist worker executes the same plan under one lock, the first one builds,
the others get a report of cache hits, and the controller removes the store at the end.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import require_tool, run_lock, shared_store

from imagefactory.libraries import BUILD_DEPS, BuildLibrary
from imagefactory.recipe import Recipe
from imagefactory.toolchain import DEBUG, RELEASE
from recipes.libs import CJSON, LLHTTP

REPO = Path(__file__).resolve().parents[1]
REVISION: dict[str, str] = {}  # the checkout's git HEAD when this worker executed the plan

# A program using cJSON and llhttp together; ``{success}`` is what it prints when both work.
CONSUMER_C = r"""#include <string.h>
#include <stdio.h>
#include <cjson/cJSON.h>
#include <llhttp.h>
int main(void) {
  llhttp_t parser; llhttp_settings_t settings;
  const char *req = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  cJSON *o = cJSON_Parse("{\"a\": 42}");
  llhttp_settings_init(&settings);
  llhttp_init(&parser, HTTP_REQUEST, &settings);
  if (llhttp_execute(&parser, req, strlen(req)) != HPE_OK) return 1;
  if (!o || cJSON_GetObjectItem(o, "a")->valueint != 42) return 2;
  cJSON_Delete(o);
  SUCCESS
  return 0;
}
"""


def consumer_program(success: str) -> str:
    """:data:`CONSUMER_C` with the line that prints what it proved."""
    return CONSUMER_C.replace("SUCCESS", success)


CONSUMER = r"""
d=$(mktemp -d); cd "$d"
cat > t.c <<'EOF'
""" + consumer_program('puts("cjson+llhttp ok");') + r"""EOF
cc $(pkg-config --cflags libcjson llhttp) t.c -o t $(pkg-config --libs libcjson llhttp)
./t
cd / && rm -rf "$d"
"""


def _define_recipes():
    from imagefactory.steps import Install, Run

    class Deps(Recipe):
        """test: Debian 13 slim + the library build dependencies"""

        name = "imagefactory-test-libdeps"
        base = "slim"
        hidden = True
        squash = False  # squashing leaves costs ~20 s per image and proves nothing here

        def steps(self):
            yield Install(*BUILD_DEPS)

    class ImageA(Deps):
        """test: cJSON debug + llhttp release"""

        name = "imagefactory-test-libs-a"

        def steps(self):
            yield BuildLibrary(CJSON, DEBUG)
            yield BuildLibrary(LLHTTP, RELEASE)
            yield Run(CONSUMER, title="compile and run a program against both libraries")

    class ImageB(Deps):
        """test: cJSON release + llhttp debug"""

        name = "imagefactory-test-libs-b"

        def steps(self):
            yield BuildLibrary(CJSON, RELEASE)
            yield BuildLibrary(LLHTTP, DEBUG)

    class Unsafe(Deps):
        """test: a hardened llhttp next to a deliberately unhardened binary"""

        name = "imagefactory-test-libs-unsafe"

        def steps(self):
            yield BuildLibrary(LLHTTP, RELEASE)
            yield Run("d=$(mktemp -d)\nprintf 'int main(void){char b[64]; return b[0];}\\n' > \"$d/u.c\"\n"
                      "gcc -O0 -no-pie -fno-stack-protector -Wl,-z,execstack -Wl,-z,norelro \"$d/u.c\" "
                      "-o /usr/local/bin/unsafe-tool\nstrip /usr/local/bin/unsafe-tool\nrm -rf \"$d\"",
                      title="install an unhardened binary")

    return {"deps": Deps, "a": ImageA, "b": ImageB, "unsafe": Unsafe}


def build_lib_images():
    """Returns (store, recipes, report, seconds) for the images above."""
    require_tool("buildah")
    from imagefactory.execute import Executor
    from imagefactory.plan import build_plan

    recipes = _define_recipes()
    REVISION["at_build"] = git_head()
    with run_lock("lib-images"):
        store = shared_store("lib-images")
        settings = store.settings()
        t0 = time.monotonic()
        report = Executor(settings, store.buildah()).execute(
            build_plan([recipes["a"], recipes["b"], recipes["unsafe"]], settings))
        seconds = time.monotonic() - t0
    return store, recipes, report, seconds


def git_head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
