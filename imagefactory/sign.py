"""Signing and attesting pushed images with cosign, and verifying them.

Only the immutable digest reference a registry served at push time is signed (``REPO@sha256:...``),
never a tag. SBOMs are attached as in-toto attestations (``--type spdxjson`` and ``--type cyclonedx``), the SLSA v1
provenance as ``--type slsaprovenance1``; verification can evaluate CUE or Rego policies against it.

Secrets: the key password comes from ``COSIGN_PASSWORD`` or a password file and reaches cosign only
through the child's environment; it never appears on a command line, in an exception or in a log.
Private setups default to ``--tlog-upload=false`` (no public Rekor); keyless users turn the log back
on and pass their own flags through ``cosign_args``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sh

from .config import Settings
from .registry import is_loopback

TAIL = 20
ATTESTATION_TYPES = {"spdxjson": "spdx", "cyclonedx": "cyclonedx"}  # cosign --type → SBOM kind
PROVENANCE_TYPE = "slsaprovenance1"  # cosign --type of the SLSA v1 provenance attestation


class SigningError(RuntimeError):
    """A cosign step failed; ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str = "", detail: str = ""):
        self.hint = hint
        self.detail = detail
        super().__init__(message)


@dataclass
class KeyMaterial:
    key: str | None  # path or KMS URI; None = keyless
    password: str | None = field(default=None, repr=False)  # never printed
    source: str = ""


@dataclass
class CosignResult:
    ok: bool
    command: list[str]
    output: str
    error: str = ""


def cosign_binary() -> str:
    found = shutil.which("cosign")
    if not found:
        raise SigningError("cosign is not installed",
                           "run ci/setup (installs cosign 2.5 from Debian trixie: apt-get install -t trixie cosign)")
    return found


def resolve_signing_key(settings: Settings, key: str | None = None, password_file: str | None = None,
                        keyless: bool = False, env: dict[str, str] | None = None) -> KeyMaterial:
    """Key: --key, COSIGN_KEY, settings.cosign_key. Password: --password-file, COSIGN_PASSWORD,
    settings.cosign_password_file, else empty (keys generated without a password)."""
    env = os.environ if env is None else env
    path = key or env.get("COSIGN_KEY") or settings.cosign_key
    source = "--key" if key else ("COSIGN_KEY" if env.get("COSIGN_KEY") else "cosign_key setting")
    if not path:
        if keyless:
            return KeyMaterial(None, None, "keyless")
        raise SigningError("no signing key",
                           "pass --key cosign.key, set COSIGN_KEY, or set cosign_key in imagefactory.yaml "
                           "(create one with `cosign generate-key-pair`); use --keyless for Fulcio/OIDC signing")
    if "://" not in path and not Path(path).is_file():
        raise SigningError(f"signing key {path} (from {source}) does not exist",
                           "create one with `cosign generate-key-pair` or point --key/COSIGN_KEY at it")
    password: str | None
    if password_file:
        password = _read_password(password_file, "--password-file")
    elif "COSIGN_PASSWORD" in env:
        password = env["COSIGN_PASSWORD"]
    elif settings.cosign_password_file:
        password = _read_password(settings.cosign_password_file, "cosign_password_file setting")
    else:
        password = ""
    return KeyMaterial(path, password, source)


def resolve_public_key(settings: Settings, key: str | None = None, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    path = key or env.get("COSIGN_PUBLIC_KEY")
    if not path and settings.cosign_key and settings.cosign_key.endswith(".key"):
        candidate = settings.cosign_key[:-4] + ".pub"
        path = candidate if Path(candidate).is_file() else None
    if not path:
        raise SigningError("no public key to verify with",
                           "pass --key cosign.pub or set COSIGN_PUBLIC_KEY")
    if "://" not in path and not Path(path).is_file():
        raise SigningError(f"public key {path} does not exist", "pass the .pub file written by "
                           "`cosign generate-key-pair`")
    return path


def _read_password(path: str, source: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SigningError(f"cannot read the cosign password file given by {source}: {exc.strerror}",
                           "fix the path, or set COSIGN_PASSWORD instead") from None
    return text[:-1] if text.endswith("\n") else text


class Cosign:
    """Typed cosign calls; every call runs with a scrubbed env holding only what cosign needs."""

    def __init__(self, registry: str, *, insecure: bool | None = None, tlog: bool = False,
                 extra_args: Sequence[str] = (), timeout: float = 300):
        self.binary = cosign_binary()
        self.registry = registry
        self.insecure = is_loopback(registry) if insecure is None else insecure
        self.tlog = tlog
        self.extra_args = list(extra_args)
        self.timeout = timeout

    # -- plumbing -------------------------------------------------------------------------------
    def _registry_flags(self) -> list[str]:
        return ["--allow-insecure-registry", "--allow-http-registry"] if self.insecure else []

    def _env(self, keys: KeyMaterial | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "COSIGN_PASSWORD"}
        if keys is not None and keys.key is not None:
            env["COSIGN_PASSWORD"] = keys.password or ""
        env.setdefault("COSIGN_YES", "true")
        return env

    def _run(self, args: list[str], keys: KeyMaterial | None) -> CosignResult:
        argv = [self.binary, *args]
        try:
            proc = sh.Command(self.binary)(*args, _env=self._env(keys), _in="", _timeout=self.timeout, _tty_out=False,
                                           _return_cmd=True)
            return CosignResult(True, argv, proc.stdout.decode("utf-8", "replace"))
        except sh.ErrorReturnCode as exc:
            out = exc.stdout.decode("utf-8", "replace")
            err = exc.stderr.decode("utf-8", "replace")
            return CosignResult(False, argv, out, _reason(err))
        except sh.TimeoutException:
            return CosignResult(False, argv, "", f"cosign timed out after {self.timeout:.0f}s")

    def _key_args(self, keys: KeyMaterial) -> list[str]:
        return ["--key", keys.key] if keys.key else []

    # -- signing ----------------------------------------------------------------------------------
    def sign(self, digest_ref: str, keys: KeyMaterial, *, recursive: bool = False) -> CosignResult:
        """Sign the image; with ``recursive``, a manifest list and every image it lists."""
        _require_digest(digest_ref)
        args = ["sign", *self._key_args(keys), *(["--recursive"] if recursive else []), f"--tlog-upload={'true' if self.tlog else 'false'}", "--yes",
                *self._registry_flags(), *self.extra_args, digest_ref]
        return self._raise_on_key_problems(self._run(args, keys))

    def attest(self, digest_ref: str, keys: KeyMaterial, predicate: Path, kind: str) -> CosignResult:
        _require_digest(digest_ref)
        args = ["attest", *self._key_args(keys), f"--tlog-upload={'true' if self.tlog else 'false'}", "--yes",
                "--replace", "--type", kind, "--predicate", str(predicate), *self._registry_flags(),
                *self.extra_args, digest_ref]
        return self._raise_on_key_problems(self._run(args, keys))

    def _raise_on_key_problems(self, res: CosignResult) -> CosignResult:
        if not res.ok and "decrypt" in res.error and ("failed" in res.error or "password" in res.error):
            raise SigningError("cosign could not open the signing key: wrong password",
                               "set COSIGN_PASSWORD or pass --password-file with the key's password",
                               res.error)
        return res

    # -- verification -----------------------------------------------------------------------------
    def _verify_flags(self) -> list[str]:
        return [] if self.tlog else ["--insecure-ignore-tlog=true"]

    def verify(self, ref: str, public_key: str) -> CosignResult:
        args = ["verify", "--key", public_key, *self._verify_flags(), *self._registry_flags(),
                "--output", "json", *self.extra_args, ref]
        return self._run(args, None)

    def verify_attestation(self, ref: str, public_key: str, kind: str, policies: Sequence[str] = ()) -> CosignResult:
        """Verify the attestation of ``kind``; each policy (CUE or Rego file) must pass too."""
        pol = [a for p in policies for a in ("--policy", str(p))]
        args = ["verify-attestation", "--key", public_key, "--type", kind, *pol, *self._verify_flags(),
                *self._registry_flags(), *self.extra_args, ref]
        return self._run(args, None)


    def resolve_digest(self, ref: str) -> str | None:
        """The manifest digest a tag points at right now (via ``cosign triangulate``), or None."""
        res = self._run(["triangulate", *self._registry_flags(), ref], None)
        m = re.search(r":sha256-([0-9a-f]{64})\.sig\s*$", res.output.strip()) if res.ok else None
        return f"sha256:{m.group(1)}" if m else None


def _require_digest(ref: str) -> None:
    if "@sha256:" not in ref:
        raise ValueError(f"refusing to sign a tag ({ref}); sign the pushed digest reference")


def _reason(stderr: str) -> str:
    """cosign's own reason: its last 'Error:' line, else the tail of stderr (warnings dropped)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("Error:")]
    if errors:
        reason = lines[errors[-1]].removeprefix("Error:").strip()
        if "validation error" in reason:  # a policy failed: cosign lists what before its summary line
            details = [ln.strip() for ln in lines[max(0, errors[-1] - 10):errors[-1]]
                       if not ln.startswith(("Verification for", "The following", "{", "will be validating"))]
            reason = "; ".join([reason, *details])
        return reason
    return "\n".join(lines[-TAIL:]) or "cosign failed without a message"


def signed_digests(verify_output: str) -> list[str]:
    """Manifest digests named by the payloads ``cosign verify --output json`` printed."""
    out: list[str] = []
    for line in verify_output.splitlines():
        line = line.strip()
        if not line.startswith("["):
            continue
        try:
            for item in json.loads(line):
                digest = item.get("critical", {}).get("image", {}).get("docker-manifest-digest")
                if digest and digest not in out:
                    out.append(digest)
        except (ValueError, AttributeError):
            continue
    return out


__all__ = ["ATTESTATION_TYPES", "PROVENANCE_TYPE", "Cosign", "CosignResult", "KeyMaterial", "SigningError", "cosign_binary",
           "resolve_public_key", "resolve_signing_key", "signed_digests"]
