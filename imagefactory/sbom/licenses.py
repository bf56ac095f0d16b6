"""Licence names (Debian DEP-5 short names, rpm/npm free text) to SPDX expressions."""

from __future__ import annotations

import hashlib
import re

# --------------------------------------------------------------------------------------------- licenses

_DEB_LICENSE_MAP = {
    "expat": "MIT",
    "mit/x11": "MIT",
    "apache-2": "Apache-2.0",
    "apache2": "Apache-2.0",
    "apache-2.0+": "Apache-2.0",
    "bsd-2": "BSD-2-Clause",
    "bsd-3": "BSD-3-Clause",
    "bsd-4": "BSD-4-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "bsd-4-clause-uc": "BSD-4-Clause-UC",
    "cc0": "CC0-1.0",
    "openldap-2.8": "OLDAP-2.8",
    "artistic": "Artistic-1.0",
    "artistic-1": "Artistic-1.0",
    "artistic-2": "Artistic-2.0",
    "mpl-1.1": "MPL-1.1",
    "mpl-2": "MPL-2.0",
    "psf-2": "PSF-2.0",
    "python": "Python-2.0",
    "zlib": "Zlib",
    "gfdl-niv-1.3": "GFDL-1.3-no-invariants-only",
    "gfdl-niv-1.3+": "GFDL-1.3-no-invariants-or-later",
    "gfdl-niv-1.2+": "GFDL-1.2-no-invariants-or-later",
}
_DEB_EXCEPTION_MAP = {
    "autoconf": {"2": "Autoconf-exception-2.0", "3": "Autoconf-exception-3.0"},
    "bison": "Bison-exception-2.2",
    "libtool": "Libtool-exception",
    "linux-syscall-note": "Linux-syscall-note",
    "classpath": "Classpath-exception-2.0",
    "llvm": "LLVM-exception",
    "gcc-3.1": "GCC-exception-3.1",
    "gcc runtime library": "GCC-exception-3.1",
    "font": "Font-exception-2.0",
}
_GNU_RE = re.compile(r"^(A|L)?GPL-?v?(\d)(?:\.(\d))?(\+|-or-later|-only)?$", re.IGNORECASE)
_GFDL_RE = re.compile(r"^GFDL-?v?(1\.[123])(\+|-or-later|-only)?$", re.IGNORECASE)


def _licensing():
    from spdx_tools.common.spdx_licensing import spdx_licensing

    return spdx_licensing


def _is_spdx_id(token: str) -> bool:
    try:
        res = _licensing().validate(token)
    except Exception:  # noqa: BLE001 - library crashes on odd characters
        return False
    return not res.errors and not res.invalid_symbols


def _license_ref(name: str, refs: dict[str, str]) -> str:
    ident = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-.") or "unknown"
    ref = f"LicenseRef-{ident}"
    if ref in refs and refs[ref] != name:
        ref = f"{ref}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    refs[ref] = name
    return ref


def _map_license_atom(atom: str, refs: dict[str, str]) -> str:
    atom = " ".join(atom.split())
    exc_id: str | None = None
    m = re.match(r"^(.*?)\s+with\s+(.+?)(?:\s+exception)?$", atom, re.IGNORECASE)
    base = atom
    if m:
        base, exc = m.group(1), m.group(2).strip().lower()
        exc_id = _DEB_EXCEPTION_MAP.get(exc)
        if isinstance(exc_id, dict):
            gm = _GNU_RE.match(base)
            exc_id = exc_id.get(gm.group(2)) if gm else None
        if exc_id is None:
            return _license_ref(atom, refs)
    spdx = _map_license_name(base)
    if spdx is None:
        return _license_ref(atom, refs)
    return f"{spdx} WITH {exc_id}" if exc_id else spdx


def _map_license_name(name: str) -> str | None:
    low = name.lower()
    cand: str | None = _DEB_LICENSE_MAP.get(low)
    if cand is None:
        m = _GNU_RE.match(name)
        if m:
            fam = {"a": "AGPL", "l": "LGPL", None: "GPL"}[(m.group(1) or "").lower() or None]
            ver = f"{m.group(2)}.{m.group(3) or '0'}"
            if fam == "LGPL" and m.group(2) == "2" and m.group(3) is None:
                ver = "2.0"
            suffix = "-or-later" if m.group(4) in ("+", "-or-later") else "-only"
            cand = f"{fam}-{ver}{suffix}"
        else:
            m = _GFDL_RE.match(name)
            if m:
                cand = f"GFDL-{m.group(1)}{'-or-later' if m.group(2) in ('+', '-or-later') else '-only'}"
    if cand is None:
        from cyclonedx.spdx import fixup_id

        cand = fixup_id(name)
    if cand is None and _is_spdx_id(name):
        cand = name
    if cand is None or not _is_spdx_id(cand):
        return None
    return cand


def debian_license_to_spdx(expr: str, refs: dict[str, str]) -> str:
    """Translate a DEP-5 ``License:`` short-name expression to an SPDX expression.

    Unknown names become ``LicenseRef-*`` entries recorded in ``refs``.
    """
    expr = " ".join(expr.split())
    # a comma before and/or lowers precedence in DEP-5
    groups = re.split(r",\s*(and|or)\s+", expr, flags=re.IGNORECASE)
    terms = groups[0::2]
    ops = [o.upper() for o in groups[1::2]]

    def simple(term: str) -> str:
        ors = re.split(r"\s+or\s+", term.strip().rstrip(","), flags=re.IGNORECASE)
        out = []
        for o in ors:
            ands = [_map_license_atom(a, refs) for a in re.split(r"\s+and\s+", o, flags=re.IGNORECASE) if a]
            out.append(" AND ".join(ands) if len(ands) == 1 else "(" + " AND ".join(ands) + ")")
        return out[0] if len(out) == 1 else "(" + " OR ".join(out) + ")"

    result = simple(terms[0])
    for op, term in zip(ops, terms[1:], strict=True):
        result = f"({result} {op} {simple(term)})"
    if result.startswith("(") and result.endswith(")") and _balanced(result[1:-1]):
        result = result[1:-1]
    return result


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def _combine_and(exprs: list[str]) -> str | None:
    uniq = sorted(set(exprs))
    if not uniq:
        return None
    if len(uniq) == 1:
        return uniq[0]
    return " AND ".join(f"({e})" if " " in e and not e.startswith("(") else e for e in uniq)


def _normalize_expression(expr: str | None, refs: dict[str, str]) -> str | None:
    """Keep a valid SPDX expression; wrap anything else as a LicenseRef (rpm/npm free-form licenses)."""
    if not expr or expr.strip().upper() in ("NOASSERTION", "NONE", "UNKNOWN"):
        return None
    expr = expr.strip()
    try:
        res = _licensing().validate(expr)
        ok = not res.errors and not res.invalid_symbols
    except Exception:  # noqa: BLE001
        ok = False
    if ok:
        return expr
    return _license_ref(expr, refs)


