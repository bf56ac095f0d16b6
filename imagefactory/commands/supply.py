"""Supply-chain subcommands: sbom, provenance, push, sign, verify-signature, reproduce.

Library entry points other commands call:

* :func:`write_sboms_for_results` — after ``build`` when ``settings.sbom_dir`` is set;
* :func:`sbom_for_target` — one image's SBOMs (SPDX + CycloneDX) from its mounted root;
* :func:`imagefactory.reproduce.check_reproducible` — ``reproduce`` and ``build --check-reproducible``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli import EXIT_FAIL, EXIT_OK, buildah_for, command, console, err_console, print_table

if TYPE_CHECKING:  # pragma: no cover
    from ..buildah import Buildah
    from ..config import Settings
    from ..recipe import Recipe
    from ..registry import PushRecord

# What each command needs is imported in its function: registering the commands stays cheap
# (`--help` imports neither rich nor buildah's dependencies).
SBOM_INDEX = "sboms.json"


def sbom_counts(cdx_path: Path) -> dict[str, int]:
    """Components per kind (see imagefactory.sbom.COMPONENT_KINDS) as written in the CycloneDX file."""
    data = json.loads(Path(cdx_path).read_text())
    from ..sbom import COMPONENT_KINDS

    counts = dict.fromkeys(COMPONENT_KINDS, 0)
    for comp in data.get("components", []):
        kind = next((p.get("value") for p in comp.get("properties", []) if p.get("name") == "imagefactory:kind"),
                    "other")
        counts[kind] = counts.get(kind, 0) + 1
    counts["total"] = len(data.get("components", []))
    return counts


def default_sbom_dir(settings: Settings) -> Path:
    return Path(settings.sbom_dir) if settings.sbom_dir else settings.state_path() / "sbom"


def build_stages(settings: Settings, cls: type[Recipe], arch: str | None = None) -> list[type[Recipe]]:
    """The stages the image and its recipe parents copy artifacts from (``CopyFrom``), nearest first."""
    return [cls for cls, _ref in stage_images(settings, cls, arch)]


def stage_images(settings: Settings, cls: type[Recipe], arch: str | None = None) -> list[tuple[type[Recipe], str]]:
    """:func:`build_stages` with the local name of each stage's image for the ``arch`` instance."""
    from ..plan import resolve_graph

    plan = resolve_graph([cls], settings)
    out: list[tuple[type[Recipe], str]] = []
    node = plan.node(cls, arch)
    while node is not None:
        for dep, name in zip(node.deps, node.dep_names):
            if dep is not node.parent and dep not in [c for c, _ in out]:
                out.append((dep, plan.node(name).ref))
        node = plan.node(node.parent_name) if node.parent_name else None
    return out


def sbom_for_target(settings: Settings, target: str | type[Recipe], out_dir: Path | None = None,
                    bd: Buildah | None = None, registry: str | None = None, arch: str | None = None) -> dict:
    """Mount the target's image (and the build stages it copies from, whose lockfiles say what went into
    the copied artifacts), write ``NAME.spdx.json`` + ``NAME.cdx.json``; return paths and counts.

    ``arch``: that architecture's instance; a foreign one's SBOMs go to ``OUT/ARCH/``."""
    from contextlib import ExitStack

    from ..arches import get_arch
    from ..facts import image_facts
    from ..recipe import CATALOGUE
    from ..sbom import write_sboms

    bd = bd or buildah_for(settings)
    cls = CATALOGUE.get(target) if isinstance(target, str) else target
    facts = image_facts(settings, cls, bd, registry=registry, arch=arch)
    out = Path(out_dir) if out_dir else default_sbom_dir(settings)
    ref = cls.image_ref(arch)
    if ref != cls.image_ref():
        out = out / get_arch(arch).name
    out.mkdir(parents=True, exist_ok=True)
    index = bd.image_index()
    with ExitStack() as stack:
        stages = {st.name: stack.enter_context(bd.mounted_image(st_ref))
                  for st, st_ref in stage_images(settings, cls, arch) if st_ref in index}
        root = stack.enter_context(bd.mounted_image(ref))
        paths = write_sboms(root, facts, out, stages=stages)
    entry = {"target": cls.target_name(), "image": cls.name, "ref": ref, "image_id": facts.image_id,
             "digest": facts.digest, "spdx": str(paths["spdx"]), "cyclonedx": str(paths["cyclonedx"]),
             "counts": sbom_counts(paths["cyclonedx"]), "written_at": time.time()}
    _update_sbom_index(settings, cls.name if ref == cls.image_ref() else f"{cls.name}@{get_arch(arch).name}", entry)
    return entry


def _sbom_index_path(settings: Settings) -> Path:
    return settings.state_path() / SBOM_INDEX


def _update_sbom_index(settings: Settings, name: str, entry: dict) -> None:
    path = _sbom_index_path(settings)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        data = {}
    data[name] = entry
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def current_sboms(settings: Settings, cls: type[Recipe], image_id: str, digest: str | None) -> dict | None:
    """The recorded SBOMs of this exact image (and digest), if their files still exist."""
    path = _sbom_index_path(settings)
    try:
        entry = (json.loads(path.read_text()) if path.is_file() else {}).get(cls.name)
    except ValueError:
        return None
    if not entry or entry.get("image_id") != image_id or entry.get("digest") != digest:
        return None
    if not all(Path(entry.get(k, "")).is_file() for k in ("spdx", "cyclonedx")):
        return None
    return entry


def write_sboms_for_results(settings: Settings, report) -> dict[str, dict]:
    """SBOMs for every built or cached image of a build report, into ``settings.sbom_dir``.

    ``report`` is the dict ``run_build`` returns (or an ``execute.BuildReport``). Bases and stages
    (hidden recipes) are skipped. Returns ``{image name: {"spdx", "cyclonedx", "counts", ...}}``;
    an empty dict when ``sbom_dir`` is not set.
    """
    if not settings.sbom_dir:
        return {}
    from ..recipe import CATALOGUE, RecipeError

    data = report.to_dict() if hasattr(report, "to_dict") else dict(report or {})
    bd = buildah_for(settings)
    out: dict[str, dict] = {}
    for img in data.get("images", []):
        if img.get("status") not in ("built", "cached") or not img.get("image_id"):
            continue
        try:
            cls = CATALOGUE.get(img["name"])
        except RecipeError:
            continue
        if cls.hidden:
            continue
        out[cls.name] = sbom_for_target(settings, cls, Path(settings.sbom_dir), bd)
    return out


def _counts_text(counts: dict[str, int]) -> str:
    from ..sbom import COMPONENT_KINDS

    parts = [f"{counts.get(k, 0)} {k}" for k in COMPONENT_KINDS]
    parts += [f"{v} {k}" for k, v in counts.items() if k not in (*COMPONENT_KINDS, "total")]
    return ", ".join(parts) + f" ({counts.get('total', 0)} components)"


def _sbom_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET", help="built targets (see `images`)")
    p.add_argument("--out", help="folder for NAME.spdx.json and NAME.cdx.json (default: sbom_dir setting, "
                                 "else the state folder)")
    p.add_argument("--registry", help="prefer the digest recorded for this registry by `push`")


@command("sbom", "write SPDX 2.3 and CycloneDX 1.6 SBOMs of built images", _sbom_args)
def cmd_sbom(args: argparse.Namespace, settings: Settings) -> int:
    from rich.markup import escape

    from ..facts import SupplyError
    from ..registry import normalize_registry

    out = Path(args.out) if args.out else None
    registry = normalize_registry(args.registry) if args.registry else None
    bd = buildah_for(settings)
    data = []
    try:
        for target, arch in [(t, a) for t in args.targets for a in settings.build_arches]:
            entry = sbom_for_target(settings, target, out, bd, registry=registry, arch=arch)
            data.append(entry)
            console.print(f"[bold]{escape(entry['ref'])}[/] {entry['image_id'][:12]}: {_counts_text(entry['counts'])}",
                          highlight=False, soft_wrap=True)
            console.print(f"  spdx:      {entry['spdx']}\n  cyclonedx: {entry['cyclonedx']}", highlight=False,
                          markup=False, soft_wrap=True)
    except SupplyError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        args._report_data = {"sboms": data, "error": str(exc)}
        return EXIT_FAIL
    args._report_data = {"sboms": data}
    return EXIT_OK


# =============================================================================================== provenance
def _provenance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET", help="built targets (see `images`)")
    p.add_argument("--out", required=True, help="folder for NAME.provenance.json (in-toto Statement, SLSA v1)")
    p.add_argument("--registry", help="name the subject by the digest recorded for this registry by `push`")


@command("provenance", "write the SLSA v1 provenance (in-toto Statement) of built images, unsigned",
         _provenance_args)
def cmd_provenance(args: argparse.Namespace, settings: Settings) -> int:
    from ..facts import SupplyError
    from ..provenance import ProvenanceError, write_provenance
    from ..registry import normalize_registry

    registry = normalize_registry(args.registry) if args.registry else None
    bd = buildah_for(settings)
    written = []
    args._report_data = {"provenance": written}
    for target in args.targets:
        try:
            path = write_provenance(settings, target, Path(args.out), bd, registry=registry)
        except (ProvenanceError, SupplyError) as exc:
            _print_error(str(exc))
            args._report_data["error"] = str(exc)
            return EXIT_FAIL
        written.append({"target": target, "path": str(path)})
        console.print(f"{target}: {path}", highlight=False, markup=False, soft_wrap=True)
    return EXIT_OK


def _provenance_predicate(settings: Settings, cls: type[Recipe], out_dir: Path, bd: Buildah,
                          registry: str) -> tuple[Path, Path]:
    """(the statement next to the SBOMs, the predicate file cosign attests)."""
    from ..provenance import write_provenance

    statement = write_provenance(settings, cls, out_dir, bd, registry=registry)
    predicate = statement.with_name(statement.name.replace(".provenance.json", ".slsa-predicate.json"))
    predicate.write_text(json.dumps(json.loads(statement.read_text())["predicate"], indent=2, sort_keys=True) + "\n")
    return statement, predicate


# =============================================================================================== push
def _registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument("--registry", help="HOST[:PORT]/PREFIX (default: `registry` setting)")
    p.add_argument("--tls-verify", dest="tls_verify", action=argparse.BooleanOptionalAction, default=None,
                   help="verify the registry's TLS certificate (default: on, off for 127.0.0.1/localhost)")


def _tls_verify(args: argparse.Namespace, registry: str) -> bool:
    from ..registry import is_loopback

    return args.tls_verify if args.tls_verify is not None else not is_loopback(registry)


def push_target(settings: Settings, target: str, registry: str, *, tls_verify: bool = True,
                bd: Buildah | None = None) -> PushRecord:
    """Push a built target to ``CATALOGUE/NAME:TAG`` and record the digest the registry serves."""
    from ..facts import SupplyError
    from ..multiarch import is_multiarch
    from ..recipe import CATALOGUE
    from ..registry import new_record, record_push, remote_ref

    bd = bd or buildah_for(settings)
    cls = CATALOGUE.get(target)
    dest = remote_ref(registry, cls.name, cls.version)
    if is_multiarch(settings.build_arches):  # the manifest list, with every instance
        local = cls.manifest_ref()
        image_id = bd.image_index().get(local, "")
        if not image_id:
            raise SupplyError(f"{local} (the manifest list of {', '.join(settings.build_arches)}) is not built in "
                              f"this store: run `imagefactory build {cls.target_name()} --arch "
                              f"{','.join(settings.build_arches)}` first")
        digest = bd.push_manifest_list(local, dest, tls_verify=tls_verify)
    else:
        local = cls.image_ref()
        if not bd.exists(local):
            raise SupplyError(f"{local} is not built in this store: run `imagefactory build {cls.target_name()}` "
                              "first")
        image_id = str(bd.inspect(local)["FromImageID"]).removeprefix("sha256:")
        digest = bd.push(local, f"docker://{dest}", tls_verify=tls_verify)
    if not digest.startswith("sha256:"):
        raise SupplyError(f"push of {local} to {dest} returned no digest ({digest!r})")
    record = new_record(cls.target_name(), dest, digest, registry, local, image_id)
    record_push(settings, record)
    return record


@command("push", "push built images to a registry and record their digests", _registry_args)
def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    from rich.markup import escape

    from ..facts import SupplyError
    from ..registry import normalize_registry

    registry = normalize_registry(args.registry, settings)
    tls = _tls_verify(args, registry)
    bd = buildah_for(settings)
    data = []
    try:
        for target in args.targets:
            rec = push_target(settings, target, registry, tls_verify=tls, bd=bd)
            console.print(f"{rec.ref}@{rec.digest}", highlight=False, markup=False, soft_wrap=True)
            data.append({"target": rec.target, "ref": rec.ref, "digest": rec.digest, "registry": rec.registry,
                         "image_id": rec.image_id})
    except SupplyError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        args._report_data = {"pushed": data, "error": str(exc)}
        return EXIT_FAIL
    args._report_data = {"pushed": data}
    return EXIT_OK


# =============================================================================================== sign
def _cosign_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cosign-arg", dest="cosign_args", action="append", default=[], metavar="ARG",
                   help="extra argument passed to every cosign call (repeatable), e.g. --cosign-arg=--rekor-url=URL")


def _sign_args(p: argparse.ArgumentParser) -> None:
    _registry_args(p)
    p.add_argument("--key", help="cosign private key or KMS URI (default: COSIGN_KEY, then cosign_key setting)")
    p.add_argument("--password-file", help="file holding the key password (default: COSIGN_PASSWORD, then the "
                                           "cosign_password_file setting)")
    p.add_argument("--tlog-upload", action=argparse.BooleanOptionalAction, default=None,
                   help="upload to the transparency log (default: off with a key, on with --keyless)")
    p.add_argument("--keyless", action="store_true", help="sign without a key (Fulcio/OIDC); implies --tlog-upload")
    p.add_argument("--sbom-dir", help="where to find or write the SBOMs to attest (default: sbom_dir setting)")
    p.add_argument("--no-attest", dest="attest", action="store_false",
                   help="sign only, attach no SBOMs and no provenance")
    _cosign_common(p)


def _print_error(message: str, hint: str = "", detail: str = "") -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if detail:
        err_console.print(f"  cosign: {detail}", highlight=False, markup=False, soft_wrap=True)
    if hint:
        err_console.print(f"  fix: {hint}", highlight=False, markup=False, soft_wrap=True)


def _pushed_for(settings: Settings, cls: type[Recipe], registry: str, bd: Buildah) -> PushRecord:
    from ..facts import SupplyError
    from ..multiarch import is_multiarch
    from ..registry import find_pushed, remote_ref

    ref = remote_ref(registry, cls.name, cls.version)
    rec = find_pushed(settings, ref=ref)
    if rec is None:
        raise SupplyError(f"{cls.target_name()} has not been pushed to {registry} from this store: run "
                          f"`imagefactory push {cls.target_name()} --registry {registry}` first")
    index = bd.image_index()
    local = cls.manifest_ref() if is_multiarch(settings.build_arches) else cls.image_ref()
    local_id = index.get(local)
    if local_id and rec.image_id and local_id != rec.image_id:
        raise SupplyError(f"{local} was rebuilt since it was pushed as {rec.ref}@{rec.digest}: run "
                          f"`imagefactory push {cls.target_name()} --registry {registry}` again before signing")
    return rec


@command("sign", "cosign-sign pushed images by digest and attest their SBOMs (SPDX + CycloneDX) and SLSA provenance",
         _sign_args)
def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    from ..facts import SupplyError
    from ..multiarch import is_multiarch
    from ..provenance import ProvenanceError
    from ..recipe import CATALOGUE
    from ..registry import normalize_registry
    from ..sign import ATTESTATION_TYPES, PROVENANCE_TYPE, Cosign, SigningError, resolve_signing_key

    registry = normalize_registry(args.registry, settings)
    tlog = args.tlog_upload if args.tlog_upload is not None else bool(args.keyless)
    results = []
    args._report_data = {"signed": results}
    try:
        cosign = Cosign(registry, insecure=None if args.tls_verify is None else not args.tls_verify, tlog=tlog,
                        extra_args=args.cosign_args)
        keys = resolve_signing_key(settings, args.key, args.password_file, keyless=args.keyless)
    except SigningError as exc:
        _print_error(str(exc), exc.hint)
        args._report_data["error"] = str(exc)
        return EXIT_FAIL
    bd = buildah_for(settings)
    sbom_dir = Path(args.sbom_dir) if args.sbom_dir else default_sbom_dir(settings)
    code = EXIT_OK
    for target in args.targets:
        cls = CATALOGUE.get(target)
        item: dict = {"target": cls.target_name(), "signed": False, "attested": {}}
        results.append(item)
        try:
            rec = _pushed_for(settings, cls, registry, bd)
            item.update(ref=rec.ref, digest=rec.digest, digest_ref=rec.digest_ref)
            sboms = None
            if args.attest:
                sboms = current_sboms(settings, cls, rec.image_id, rec.digest)
                if sboms is None or (args.sbom_dir and Path(sboms["spdx"]).parent != sbom_dir):
                    sboms = sbom_for_target(settings, cls, sbom_dir, bd, registry=registry)
                item["sboms"] = {"spdx": sboms["spdx"], "cyclonedx": sboms["cyclonedx"]}
            # a manifest list: the index and each instance (cosign --recursive)
            res = cosign.sign(rec.digest_ref, keys, recursive=is_multiarch(settings.build_arches))
            if not res.ok:
                raise SigningError(f"signing {rec.digest_ref} failed; nothing was signed", "", res.error)
            item["signed"] = True
            console.print(f"signed {rec.digest_ref}", highlight=False, markup=False, soft_wrap=True)
            if sboms is None:
                continue
            failed = []
            for kind, sbom_kind in ATTESTATION_TYPES.items():
                res = cosign.attest(rec.digest_ref, keys, Path(sboms[sbom_kind]), kind)
                item["attested"][kind] = res.ok
                if res.ok:
                    console.print(f"attested {kind} SBOM to {rec.digest_ref}", highlight=False, markup=False,
                                  soft_wrap=True)
                else:
                    failed.append(f"{kind}: {res.error}")
            try:
                statement, predicate = _provenance_predicate(settings, cls, Path(sboms["spdx"]).parent, bd, registry)
                item["provenance"] = str(statement)
                res = cosign.attest(rec.digest_ref, keys, predicate, PROVENANCE_TYPE)
                item["attested"][PROVENANCE_TYPE] = res.ok
                if res.ok:
                    console.print(f"attested SLSA provenance to {rec.digest_ref}", highlight=False, markup=False,
                                  soft_wrap=True)
                else:
                    failed.append(f"{PROVENANCE_TYPE}: {res.error}")
            except ProvenanceError as exc:
                item["attested"][PROVENANCE_TYPE] = False
                failed.append(f"{PROVENANCE_TYPE}: {exc}")
            if failed:
                item["error"] = "; ".join(failed)
                _print_error(f"{rec.digest_ref} IS SIGNED BUT NOT ATTESTED: an attestation failed "
                             f"({', '.join(f.split(':')[0] for f in failed)})",
                             f"run `imagefactory sign {cls.target_name()} --registry {registry}` again once "
                             "the cause is fixed (signing again is harmless)", "; ".join(failed))
                code = EXIT_FAIL
        except SigningError as exc:
            item["error"] = str(exc) + (f": {exc.detail}" if exc.detail else "")
            _print_error(f"{cls.target_name()}: {exc}", exc.hint, exc.detail)
            code = EXIT_FAIL
        except SupplyError as exc:
            item["error"] = str(exc)
            _print_error(str(exc))
            code = EXIT_FAIL
    return code


# =============================================================================================== verify
def _verify_args(p: argparse.ArgumentParser) -> None:
    _registry_args(p)
    p.add_argument("--key", help="cosign public key (default: COSIGN_PUBLIC_KEY, then cosign_key with .pub)")
    p.add_argument("--tlog", action="store_true", help="require a transparency-log entry (default: ignore the log, "
                                                       "matching `sign`'s --no-tlog-upload default)")
    p.add_argument("--pushed-digest", action="store_true",
                   help="verify the digest recorded by `push` instead of what the tag points at now")
    p.add_argument("--no-attestations", dest="attestations", action="store_false",
                   help="check the signature only")
    p.add_argument("--policy", dest="policies", action="append", default=[], metavar="FILE",
                   help="CUE or Rego policy the SLSA provenance must satisfy (repeatable; passed to `cosign "
                        "verify-attestation --policy`), e.g. the shipped "
                        "imagefactory/policies/release-provenance.cue")
    _cosign_common(p)


@command("verify-signature", "verify cosign signatures, SBOM and provenance attestations (and policies) of pushed "
         "images", _verify_args)
def cmd_verify_signature(args: argparse.Namespace, settings: Settings) -> int:
    from rich.markup import escape

    from ..recipe import CATALOGUE
    from ..registry import find_pushed, normalize_registry, remote_ref
    from ..sign import ATTESTATION_TYPES, PROVENANCE_TYPE, Cosign, SigningError, resolve_public_key, signed_digests

    registry = normalize_registry(args.registry, settings)
    results: list[dict] = []
    args._report_data = {"verified": results}
    missing = [p for p in args.policies if not Path(p).is_file()]
    if missing:
        _print_error(f"policy file {missing[0]} does not exist",
                     "pass a CUE or Rego file, e.g. imagefactory/policies/release-provenance.cue")
        args._report_data["error"] = f"no policy file {missing[0]}"
        return EXIT_FAIL
    try:
        cosign = Cosign(registry, insecure=None if args.tls_verify is None else not args.tls_verify, tlog=args.tlog,
                        extra_args=args.cosign_args)
        pub = resolve_public_key(settings, args.key)
    except SigningError as exc:
        _print_error(str(exc), exc.hint)
        args._report_data["error"] = str(exc)
        return EXIT_FAIL
    code = EXIT_OK
    rows = []
    for target in args.targets:
        cls = CATALOGUE.get(target)
        tag_ref = remote_ref(registry, cls.name, cls.version)
        rec = find_pushed(settings, ref=tag_ref)
        if args.pushed_digest:
            if rec is None:
                _print_error(f"{tag_ref} was never pushed from this store; drop --pushed-digest to verify the tag")
                results.append({"target": cls.target_name(), "ref": tag_ref, "ok": False, "error": "not pushed"})
                code = EXIT_FAIL
                continue
            ref = rec.digest_ref
        else:
            ref = tag_ref
        item: dict = {"target": cls.target_name(), "ref": ref, "checks": {}}
        results.append(item)
        res = cosign.verify(ref, pub)
        item["checks"]["signature"] = {"ok": res.ok, "reason": res.error}
        digests = signed_digests(res.output) if res.ok else []
        item["signed_digests"] = digests
        rows.append([ref, "signature", "ok" if res.ok else "FAILED", res.error or ", ".join(digests)])
        if args.attestations:
            for kind in (*ATTESTATION_TYPES, PROVENANCE_TYPE):
                policies = args.policies if kind == PROVENANCE_TYPE else []
                att = cosign.verify_attestation(ref, pub, kind, policies)
                label = f"attestation {kind}" + (f" + policy {', '.join(Path(p).name for p in policies)}"
                                                 if policies else "")
                item["checks"][f"attestation:{kind}"] = {"ok": att.ok, "reason": att.error,
                                                         **({"policies": list(policies)} if policies else {})}
                rows.append([ref, label, "ok" if att.ok else "FAILED", att.error])
        item["ok"] = all(c["ok"] for c in item["checks"].values())
        if rec is not None and not args.pushed_digest:
            item["pushed_digest"] = rec.digest
            current = digests[0] if len(digests) == 1 else cosign.resolve_digest(ref)
            item["current_digest"] = current
            if current and current != rec.digest:
                item["note"] = (f"the tag now points at {current}, not at {rec.digest} which this store pushed "
                                "there: the registry serves different content under this tag")
        if not item["ok"]:
            code = EXIT_FAIL
    print_table("signature verification", ["reference", "check", "result", "detail"], rows)
    for item in results:
        if not item.get("ok"):
            reasons = "; ".join(f"{k}: {v['reason']}" for k, v in item.get("checks", {}).items() if not v["ok"])
            err_console.print(f"[bold red]verification failed[/] for {item['ref']}: {escape(reasons or str(item.get('error')))}",
                              highlight=False, soft_wrap=True)
        if item.get("note"):
            err_console.print(f"note: {item['note']}", highlight=False, markup=False, soft_wrap=True)
    return code


# =============================================================================================== reproduce
def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument("--source-date-epoch", type=int, help="timestamp for both builds (default: SOURCE_DATE_EPOCH / "
                                                          "source_date_epoch setting, else the recipes' git HEAD time)")
    p.add_argument("--work-dir", help="where the two temporary stores go (default: next to the state folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary stores (and exported layers) for inspection")
    p.add_argument("--against-store", action="store_true",
                   help="one cold build instead of two: compare it with the targets built in this store "
                        "(built there first, with the cache, if they are not yet)")


@command("reproduce", "build targets twice, cold, in two temporary stores and compare image IDs and layers",
         _reproduce_args)
def cmd_reproduce(args: argparse.Namespace, settings: Settings) -> int:
    from ..reproduce import ReproduceError, check_reproducible

    try:
        report = check_reproducible(args.targets, settings, source_date_epoch=args.source_date_epoch,
                                    work_dir=Path(args.work_dir) if args.work_dir else None, keep=args.keep,
                                    against_store=args.against_store,
                                    progress=lambda msg: err_console.print(msg, highlight=False, markup=False,
                                                                          soft_wrap=True))
    except ReproduceError as exc:
        _print_error(str(exc))
        args._report_data = {"reproducible": False, "error": str(exc)}
        return EXIT_FAIL
    args._report_data = report
    print_reproduce_report(report)
    return EXIT_OK if report["reproducible"] else EXIT_FAIL


def print_reproduce_report(report: dict) -> None:
    from rich.markup import escape

    from ..layerdiff import describe as describe_layer_diff

    rows = []
    for img in report["images"]:
        rows.append([img["name"], "image", "same" if img["same"] else "DIFFERS",
                     " / ".join(i[:12] for i in img["image_ids"])])
        for st in img["steps"]:
            if st["same"]:
                continue
            result = "same layer, parent differs" if st["layer_same"] else "LAYER DIFFERS"
            rows.append([img["name"], f"step {st['index']} {st['kind']}", result,
                         f"{st['summary'][:60]} (layers {' / '.join((d or '-')[7:19] for d in st['layers'])})"])
    print_table(f"reproducibility (SOURCE_DATE_EPOCH={report['source_date_epoch']})",
                ["image", "what", "result", "detail"], rows)
    if report["reproducible"]:
        console.print("[green]reproducible:[/] both cold builds gave the same image IDs")
    else:
        for d in report["differing_steps"]:
            console.print(f"[red]differs:[/] {d['image']} step {d['index']} ({d['kind']}): {escape(d['summary'])}",
                          highlight=False, soft_wrap=True)
            if d.get("config"):
                console.print(f"  same layer, the image configs differ: {', '.join(d['config'])}", highlight=False)
            files = d.get("files")
            if files:
                console.print(f"  {files['count']} file(s) differ in the layer:", highlight=False)
                for line in describe_layer_diff(files):
                    console.print(f"    {escape(line)}", highlight=False, soft_wrap=True)


__all__ = ["push_target", "sbom_for_target", "write_sboms_for_results"]
