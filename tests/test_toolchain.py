"""The compiler profiles carry exactly the flags the hardening policy asks for."""

from __future__ import annotations

import platform

import pytest

from imagefactory.toolchain import (
    DEBUG,
    HARDENING,
    HARDENING_LDFLAGS,
    RELEASE,
    Profile,
    get_profile,
    hardening_cflags,
)

REQUIRED_C = {
    "-D_FORTIFY_SOURCE=3", "-fstack-protector-strong", "-fstack-clash-protection", "-fPIC",
    "-Wformat", "-Werror=format-security", "-fno-delete-null-pointer-checks", "-fno-strict-overflow",
    "-fno-strict-aliasing", "-ftrivial-auto-var-init=zero",
}
REQUIRED_LD = {"-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack", "-Wl,--as-needed",
               "-Wl,--no-copy-dt-needed-entries"}


@pytest.mark.parametrize("profile", [DEBUG, RELEASE], ids=lambda p: p.name)
def test_every_profile_is_hardened(profile: Profile):
    for flags in (profile.cflags, profile.cxxflags):
        assert set(flags) >= REQUIRED_C
        # -U before -D so a distro default _FORTIFY_SOURCE cannot clash or win
        assert flags.index("-U_FORTIFY_SOURCE") < flags.index("-D_FORTIFY_SOURCE=3")
        assert "-Werror" not in flags and "-fstrict-flex-arrays=3" not in flags
    assert set(profile.ldflags) >= REQUIRED_LD
    assert "-pie" not in profile.ldflags  # it would turn -shared links into executables
    assert "-pie" in profile.exe_ldflags
    assert "-D_GLIBCXX_ASSERTIONS" in profile.cxxflags and "-D_GLIBCXX_ASSERTIONS" not in profile.cflags
    assert "-Werror=implicit" in profile.cflags and "-Werror=implicit" not in profile.cxxflags


def test_cf_protection_only_on_x86_64():
    assert "-fcf-protection=full" in hardening_cflags("x86_64")
    assert "-fcf-protection=full" not in hardening_cflags("aarch64")
    assert "-mbranch-protection=standard" in hardening_cflags("aarch64")
    assert not {"-fcf-protection=full", "-mbranch-protection=standard"} & set(hardening_cflags("riscv64"))
    if platform.machine() == "x86_64":
        assert "-fcf-protection=full" in HARDENING and "-fcf-protection=full" in DEBUG.cflags


def test_debug_profile():
    assert DEBUG.cflags[:2] == ("-O2", "-g") and DEBUG.debug and not DEBUG.strip
    assert not any(f.startswith("-flto") for f in DEBUG.cflags + DEBUG.ldflags)


def test_release_profile():
    assert RELEASE.cflags[0] == "-O3" and "-flto=auto" in RELEASE.cflags and "-flto=auto" in RELEASE.ldflags
    assert "-ffat-lto-objects" in RELEASE.cflags  # static archives stay usable without the LTO plugin
    assert not any(f == "-g" or f.startswith("-g") and f[2:3].isdigit() for f in RELEASE.cflags)
    assert RELEASE.strip and not RELEASE.debug


def test_flags_strings_and_manifest_dict():
    assert " ".join(DEBUG.cflags) == DEBUG.CFLAGS
    assert set(RELEASE.flags()) == {"CFLAGS", "CXXFLAGS", "LDFLAGS"}
    assert RELEASE.flags()["LDFLAGS"].endswith(" ".join(HARDENING_LDFLAGS))


def test_with_appends_drops_and_replaces_without_touching_the_original():
    p = RELEASE.with_(extra_cflags=["-DNO_FOO"], drop=["-fexceptions"], extra_ldflags=("-Wl,-z,defs",), name="rel2")
    assert p.cflags[-1] == "-DNO_FOO" and "-fexceptions" not in p.cflags and "-fexceptions" not in p.cxxflags
    assert p.ldflags[-1] == "-Wl,-z,defs" and p.name == "rel2" and p.strip
    assert "-fexceptions" in RELEASE.cflags and RELEASE.name == "release"  # frozen original unchanged
    assert DEBUG.with_(strip=True).strip and not DEBUG.strip


def test_get_profile():
    assert get_profile("debug") is DEBUG and get_profile("release") is RELEASE
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("fast")
