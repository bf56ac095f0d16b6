"""Writers: SPDX 2.3 JSON and CycloneDX 1.6 JSON, each validated with its reference library first."""

from __future__ import annotations

import uuid
from pathlib import Path

from packageurl import PackageURL

from .licenses import _licensing
from .model import (_ORG_WORDS, _SERIAL_NAMESPACE, PROP_PREFIX, SPDX_NAMESPACE_BASE, Inventory,
                    SbomValidationError, _ancestors, _atomic_write, _creation_time, _hex_id, _image_purl, _safe_id,
                    _spdx_id, _tool_version)

# --------------------------------------------------------------------------------------------- SPDX


def build_spdx(inv: Inventory):
    """spdx_tools Document for an inventory (not yet validated)."""
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        ExtractedLicensingInfo,
        Package,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.validation.uri_validators import validate_download_location, validate_url

    facts = inv.facts
    image_hex = _hex_id(facts.image_id) or ""
    created = _creation_time(facts).replace(tzinfo=None)
    creation = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=f"{facts.name}:{facts.tag}",
        document_namespace=f"{SPDX_NAMESPACE_BASE}/{_safe_id(facts.name)}-{image_hex}",
        creators=[Actor(ActorType.TOOL, f"imagefactory-{_tool_version()}")],
        created=created,
        creator_comment="Generated from the mounted image root: package databases, the imagefactory build "
                        "manifest of source-built libraries, and npm lockfiles.",
    )
    alg = {"SHA-256": ChecksumAlgorithm.SHA256, "SHA-512": ChecksumAlgorithm.SHA512,
           "SHA-1": ChecksumAlgorithm.SHA1, "SHA-384": ChecksumAlgorithm.SHA384}
    lic = _licensing()

    def purl_ref(purl: str) -> ExternalPackageRef:
        return ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)

    def url_or_none(u: str | None) -> str | None:
        return u if u and not validate_url(u) else None

    def _spdx_actor(name: str) -> Actor:
        name = name.replace("(", "[").replace(")", "]")  # parentheses would break the "Name (email)" syntax
        org = _ORG_WORDS.search(name) is not None
        return Actor(ActorType.ORGANIZATION if org else ActorType.PERSON, name)

    image_id = "SPDXRef-image"
    labels = "\n".join(f"{k}={v}" for k, v in sorted(facts.labels.items()))
    image_comment = f"image id sha256:{image_hex}" + (f"\ndigest {facts.digest}" if facts.digest else "")
    image_comment += f"\nplatform {facts.platform}"
    if labels:
        image_comment += "\nlabels:\n" + labels
    image_license = lic.parse(inv.image_license) if inv.image_license else None
    packages = [Package(
        spdx_id=image_id,
        name=facts.name,
        version=facts.tag,
        download_location=SpdxNoAssertion(),
        files_analyzed=False,
        supplier=SpdxNoAssertion(),
        license_concluded=SpdxNoAssertion(),
        license_declared=image_license or SpdxNoAssertion(),
        copyright_text=SpdxNoAssertion(),
        primary_package_purpose=PackagePurpose.CONTAINER,
        built_date=created,
        comment=image_comment,
        external_references=[purl_ref(_image_purl(facts))],
    )]
    rels = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    prev = image_id
    for anc in _ancestors(facts):
        sid = _spdx_id("image", anc.name, anc.purl)
        comment = f"image id sha256:{anc.image_id}" if anc.image_id else None
        if anc.description:
            comment = f"{anc.description}" + (f"\n{comment}" if comment else "")
        packages.append(Package(
            spdx_id=sid, name=anc.name, download_location=SpdxNoAssertion(), files_analyzed=False,
            license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(), primary_package_purpose=PackagePurpose.CONTAINER,
            comment=comment, external_references=[purl_ref(anc.purl)],
        ))
        rels.append(Relationship(image_id, RelationshipType.DESCENDANT_OF, sid))
        if prev != image_id:
            rels.append(Relationship(prev, RelationshipType.DESCENDANT_OF, sid))
        prev = sid

    purpose = {"deb": PackagePurpose.INSTALL, "rpm": PackagePurpose.INSTALL,
               "source": PackagePurpose.LIBRARY, "npm": PackagePurpose.LIBRARY,
               "binary": PackagePurpose.APPLICATION, "golang": PackagePurpose.LIBRARY, "file": PackagePurpose.FILE}
    for c in inv.components:
        sid = _spdx_id(c.kind, c.name, c.ref)
        dl = c.download_url if c.download_url and not validate_download_location(c.download_url) else None
        source_info = None
        if c.kind == "source":
            parts = [f"built from source by imagefactory from {c.download_url or 'an upstream archive'}"]
            if c.hashes.get("SHA-256"):
                parts.append(f"archive sha256 {c.hashes['SHA-256']}")
            if c.patches:
                parts.append("patches applied: " + ", ".join(
                    f"{p.name} (sha256 {p.sha256})" if p.sha256 else p.name for p in c.patches))
            source_info = "; ".join(parts)
        elif c.source_name:
            source_info = f"built from source package {c.source_name} {c.source_version or ''}".strip()
        props = "\n".join(f"{k}={v}" for k, v in c.properties)
        packages.append(Package(
            spdx_id=sid,
            name=c.name,
            version=c.version or None,
            download_location=dl or SpdxNoAssertion(),
            files_analyzed=False,
            supplier=_spdx_actor(c.supplier) if c.supplier else SpdxNoAssertion(),
            checksums=[Checksum(alg[a], h) for a, h in sorted(c.hashes.items()) if a in alg],
            homepage=url_or_none(c.homepage),
            source_info=source_info,
            license_concluded=SpdxNoAssertion(),
            license_declared=lic.parse(c.license) if c.license else SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(),
            summary=c.description,
            comment=props or None,
            primary_package_purpose=purpose[c.kind],
            external_references=[purl_ref(c.purl)] if c.purl else [],
        ))
        rels.append(Relationship(image_id, RelationshipType.CONTAINS, sid))

    extracted = [
        ExtractedLicensingInfo(
            license_id=ref, license_name=name,
            extracted_text=f"License named '{name}' by the package metadata (Debian machine-readable copyright "
                           "file, rpm header or npm lockfile); see the package's own license files for the text.",
        )
        for ref, name in sorted(inv.license_refs.items())
    ]
    return Document(creation_info=creation, packages=packages, relationships=rels,
                    extracted_licensing_info=extracted)


def validate_spdx_document(doc) -> list[str]:
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    return [m.validation_message for m in validate_full_spdx_document(doc, "SPDX-2.3")]


def write_spdx(inv: Inventory, path: Path) -> Path:
    """Validate and write the SPDX 2.3 JSON document; raises SbomValidationError on invalid content."""
    import io

    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    doc = build_spdx(inv)
    msgs = validate_spdx_document(doc)
    if msgs:
        raise SbomValidationError("SPDX 2.3", msgs)
    buf = io.StringIO()
    write_document_to_stream(doc, buf, validate=False)
    return _atomic_write(path, buf.getvalue() + "\n")


# --------------------------------------------------------------------------------------------- CycloneDX


def _cdx_licenses(expr: str | None, refs: dict[str, str]):
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.spdx import is_supported_id

    if not expr:
        return []
    if is_supported_id(expr):
        return [DisjunctiveLicense(id=expr)]
    if expr in refs:
        return [DisjunctiveLicense(name=refs[expr])]
    return [LicenseExpression(expr)]


def build_cyclonedx(inv: Inventory):
    """cyclonedx Bom for an inventory (not yet validated)."""
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import (
        Component as CdxComponent,
    )
    from cyclonedx.model.component import (
        ComponentScope,
        ComponentType,
        Diff,
        Patch,
        PatchClassification,
        Pedigree,
    )
    from cyclonedx.model.contact import OrganizationalEntity
    from cyclonedx.model.tool import ToolRepository

    facts = inv.facts
    image_hex = _hex_id(facts.image_id) or ""
    algs = {"SHA-256": HashAlgorithm.SHA_256, "SHA-512": HashAlgorithm.SHA_512,
            "SHA-1": HashAlgorithm.SHA_1, "SHA-384": HashAlgorithm.SHA_384}

    def purl(s: str) -> PackageURL:
        return PackageURL.from_string(s)

    ancestors = []
    for depth, anc in enumerate(_ancestors(facts), start=1):
        # the library sorts ancestors by name: keep "nearest first" explicit
        props = [Property(name=f"{PROP_PREFIX}:ancestor_depth", value=str(depth))]
        if anc.image_id:
            props.append(Property(name=f"{PROP_PREFIX}:image_id", value=f"sha256:{anc.image_id}"))
        ancestors.append(CdxComponent(
            type=ComponentType.CONTAINER, name=anc.name, bom_ref=f"ancestor:{anc.purl}",
            version=f"sha256:{anc.digest or anc.image_id}" if (anc.digest or anc.image_id) else None,
            purl=purl(anc.purl), description=anc.description, properties=props,
        ))
    image_props = [Property(name=f"{PROP_PREFIX}:image_id", value=f"sha256:{image_hex}"),
                   Property(name=f"{PROP_PREFIX}:platform", value=facts.platform)]
    if facts.digest:
        image_props.append(Property(name=f"{PROP_PREFIX}:digest", value=facts.digest))
    if facts.base:
        image_props.append(Property(name=f"{PROP_PREFIX}:base", value=facts.base.description))
    image_props += [Property(name=f"{PROP_PREFIX}:label:{k}", value=v) for k, v in sorted(facts.labels.items())]
    image_purl = _image_purl(facts)
    image = CdxComponent(
        type=ComponentType.CONTAINER, name=facts.name, version=facts.tag, bom_ref=image_purl,
        purl=purl(image_purl), properties=image_props,
        licenses=_cdx_licenses(inv.image_license, inv.license_refs),
        pedigree=Pedigree(ancestors=ancestors) if ancestors else None,
    )

    comps = []
    for c in inv.components:
        ext = []
        if c.download_url:
            ext.append(ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(c.download_url)))
        if c.homepage and c.homepage.startswith(("http://", "https://")):
            ext.append(ExternalReference(type=ExternalReferenceType.WEBSITE, url=XsUri(c.homepage)))
        pedigree = None
        if c.patches:
            pedigree = Pedigree(
                patches=[Patch(type=PatchClassification.UNOFFICIAL,
                               diff=Diff(url=XsUri(p.url)) if p.url else None) for p in c.patches],
                notes="Patches applied by imagefactory: " + ", ".join(
                    f"{p.name} (sha256 {p.sha256})" if p.sha256 else p.name for p in c.patches),
            )
        props = [Property(name=f"{PROP_PREFIX}:kind", value=c.kind)]
        props += [Property(name=k, value=v) for k, v in c.properties]
        comps.append(CdxComponent(
            type={"binary": ComponentType.APPLICATION, "file": ComponentType.FILE}.get(c.kind, ComponentType.LIBRARY),
            name=c.name,
            version=c.version or None,
            bom_ref=c.ref,
            purl=purl(c.purl) if c.purl else None,
            description=c.description,
            supplier=OrganizationalEntity(name=c.supplier) if c.supplier else None,
            scope=ComponentScope.OPTIONAL if c.optional else None,
            hashes=[HashType(alg=algs[a], content=h) for a, h in sorted(c.hashes.items()) if a in algs],
            licenses=_cdx_licenses(c.license, inv.license_refs),
            external_references=ext,
            properties=props,
            pedigree=pedigree,
        ))

    tool = CdxComponent(type=ComponentType.APPLICATION, name="imagefactory", version=_tool_version(),
                        bom_ref="tool:imagefactory")
    meta = BomMetaData(
        tools=ToolRepository(components=[tool]),
        component=image,
        timestamp=_creation_time(facts),
        properties=[Property(name=f"{PROP_PREFIX}:note", value=n) for n in inv.notes],
    )
    bom = Bom(
        components=comps,
        metadata=meta,
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, f"sha256:{image_hex}"),
        version=1,
    )
    bom.register_dependency(image, comps)
    return bom


def _memoize_iri_format_check() -> None:
    """The schema's ``iri-reference`` format check (jsonschema -> rfc3987_syntax, an Earley parser) costs
    ~15 ms per URL, i.e. seconds for an image with hundreds of packages.  It is a pure function of its
    arguments, so memoize it process-wide: images built in one run share most package homepages.
    Behaviour is unchanged; if the private hook is not there (other jsonschema version) nothing happens."""
    import functools

    try:
        import jsonschema._format as fmt
    except ImportError:  # pragma: no cover
        return
    fn = getattr(fmt, "_rfc3987_is_valid_syntax", None)
    if fn is not None and not hasattr(fn, "cache_info"):
        fmt._rfc3987_is_valid_syntax = functools.lru_cache(maxsize=65536)(fn)


def validate_cyclonedx_json(text: str) -> list[str]:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    _memoize_iri_format_check()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    if not errors:
        return []
    return [str(getattr(e, "data", e)) for e in errors]


def write_cyclonedx(inv: Inventory, path: Path) -> Path:
    """Validate and write the CycloneDX 1.6 JSON document; raises SbomValidationError on invalid content."""
    from cyclonedx.output.json import JsonV1Dot6

    bom = build_cyclonedx(inv)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    msgs = validate_cyclonedx_json(text)
    if msgs:
        raise SbomValidationError("CycloneDX 1.6", msgs)
    return _atomic_write(path, text + "\n")


