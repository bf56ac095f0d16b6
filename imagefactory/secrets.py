"""Build-time secrets: where each value comes from, and how it reaches one RUN step only.

A recipe names secrets by id (:class:`imagefactory.steps.Secret`); the user says where the
values live. Lookup order for an id: ``--secret`` on the command line, ``secrets:`` in
the config file (both as ``env:VAR``, ``file:PATH`` or a bare path), then the variable
``IMAGEFACTORY_SECRET_<ID>``. Values are handed to buildah as read-only bind mounts of
files (each value is written to a read-only file in a private 0700 folder, memory-backed
where possible, that is removed after the step), and every log line is scrubbed of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .buildah import Mount, redact
from .config import ConfigError
from .steps import Secret

ENV_PREFIX = "IMAGEFACTORY_SECRET_"


class SecretError(ConfigError):
    """A step needs a secret whose value cannot be found or read."""


def env_name(secret_id: str) -> str:
    return ENV_PREFIX + "".join(c if c.isalnum() else "_" for c in secret_id).upper()


def parse_cli_secret(text: str) -> tuple[str, str]:
    """``id=token,src=FILE`` or ``id=token,env=VAR`` (buildah's --secret syntax) → (id, spec)."""
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    sid = fields.get("id")
    if not sid or not (("src" in fields) ^ ("env" in fields)):
        raise SecretError(f"--secret {text!r}: expected id=ID,src=FILE or id=ID,env=VAR")
    return sid, (f"env:{fields['env']}" if "env" in fields else f"file:{os.path.abspath(fields['src'])}")


class Secrets:
    """Resolves secret ids to values for one build; knows every value it handed out (to scrub logs)."""

    def __init__(self, configured: Mapping[str, str], environ: Mapping[str, str] | None = None):
        self.configured = dict(configured)
        self.environ = os.environ if environ is None else environ
        self._seen: set[str] = set()

    def spec(self, secret_id: str) -> str | None:
        if secret_id in self.configured:
            return self.configured[secret_id]
        if env_name(secret_id) in self.environ:
            return f"env:{env_name(secret_id)}"
        return None

    def missing(self, secret_id: str) -> str | None:
        """Why ``secret_id`` cannot be used (None if it can): checked before any container starts."""
        spec = self.spec(secret_id)
        hint = (f"pass --secret id={secret_id},src=FILE (or env=VAR), add `secrets: {{{secret_id}: FILE}}` to "
                f"imagefactory.yaml, or export {env_name(secret_id)}")
        if spec is None:
            return f"secret {secret_id!r} is not provided; {hint}"
        kind, _, where = spec.partition(":") if spec.startswith(("env:", "file:")) else ("file", "", spec)
        if kind == "env" and where not in self.environ:
            return f"secret {secret_id!r} should come from ${where}, which is not set; {hint}"
        if kind == "file" and not os.access(where, os.R_OK):
            return f"secret {secret_id!r} should come from {where}, which is not a readable file; {hint}"
        return None

    def value(self, secret_id: str) -> bytes:
        problem = self.missing(secret_id)
        if problem:
            raise SecretError(problem)
        spec = self.spec(secret_id) or ""
        kind, _, where = spec.partition(":") if spec.startswith(("env:", "file:")) else ("file", "", spec)
        data = self.environ[where].encode() if kind == "env" else Path(where).read_bytes()
        text = data.decode("utf-8", "replace")
        # whole value, stripped value and each long line (logs are written line by line)
        for part in {text, text.strip(), *(line.strip() for line in text.splitlines() if len(line.strip()) >= 8)}:
            if len(part) >= 4:  # scrubbing "a" out of every log line would help nobody
                self._seen.add(part)
        return data

    def redactions(self) -> tuple[str, ...]:
        return tuple(sorted(self._seen, key=len, reverse=True))

    @contextmanager
    def mounts(self, secrets: Iterable[Secret]) -> Iterator[list[Mount]]:
        """Read-only bind mounts for one RUN; temporary files are gone when the block ends."""
        secrets = list(secrets)
        if not secrets:
            yield []
            return
        folder = Path(tempfile.mkdtemp(prefix="imagefactory-secrets-", dir=_private_tmp()))
        try:
            os.chmod(folder, 0o700)
            mounts = []
            for s in secrets:
                path = folder / s.id
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(self.value(s.id))
                # readable by the step's user whoever it is; the 0700 folder keeps other host users out
                os.chmod(path, 0o444)
                mounts.append(Mount(target=s.target, source=str(path), type="bind", readonly=True))
            yield mounts
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _private_tmp() -> str:
    """Memory-backed when possible, so secret values never touch a disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


__all__ = ["Secrets", "SecretError", "env_name", "parse_cli_secret", "redact"]
