"""The from-source libraries: pinned releases and how each one is built.

Pins follow the project's source mirror notes: the upstream release archive is the primary
(its URL is what real users download); archives that carry the same release tree as other
bytes are listed as alternates with their own sha256 and tree root. Where the upstream
archive's sha256 is not known (wolfSentry, wolfCLU: GitHub's tag tarballs, checked here only
as ``git archive`` copies of the same tag), the pin carries ``tree_sha256`` instead: the
digest of the unpacked tree (``imagefactory sources digest``), which the upstream tarball and
the local copy share, plus the local copy as an alternate accepted by its sha256.

This file is the only list of libraries: the ocserv-modern images build :data:`ALL` in this
(dependency) order, label them, bake their versions, pkg-config modules and smoke commands
into a table that quick-validate, run-tests and ci-env read, and quick-validate runs
``recipes/files/checks/<name>.c`` / ``<name>.sh`` where one exists. Recipes use these specs:

    yield Install(*BUILD_DEPS)
    for lib in ALL:
        yield BuildLibrary(lib, RELEASE)
"""

from __future__ import annotations

from imagefactory.libraries import LLHTTP_BUILD, LibrarySpec
from imagefactory.sources import Alternate, SourcePin

WOLFSENTRY = LibrarySpec(
    pin=SourcePin(
        library="wolfsentry",
        version="1.6.2",
        license="GPL-2.0-or-later",
        url="https://github.com/wolfSSL/wolfsentry/archive/refs/tags/v1.6.2.tar.gz",
        sha256=None,  # GitHub's tarball bytes are not known here: the tree digest verifies it
        tree_sha256="44bb1d7338bf4c152cb8dda1202e1c94da478e467dd9b8d4a386476fe1fe240e",
        filename="wolfsentry-1.6.2.tar.gz",
        tree_root="wolfsentry-1.6.2/",
        purl="pkg:github/wolfssl/wolfsentry@v1.6.2",
        homepage="https://www.wolfssl.com/products/wolfsentry/",
        alternates=(
            # `git archive` of tag v1.6.2 (commit 196ccef4, tree e2c89835), gzip -n
            Alternate("wolfsentry-1.6.2.tar.gz",
                      "0860e092fbcd2d6333a3c72111c313b9bbca43b6a8881cc928c96a2586bc07fe", "wolfsentry-1.6.2/"),
        ),
    ),
    kind="make",  # its own GNU Makefile, no autotools
    options=(
        "BUILD_DYNAMIC=1",  # libwolfsentry.so next to the static archive
        # the Makefile sets CFLAGS itself: the profile comes in through EXTRA_* (after its -O3,
        # so ours wins); LD_FLAGS is what it links the shared object with. -Wno-error: its own
        # -Werror (with -Winline, -Wconversion...) fails the LTO link of its unit tests on GCC 14
        # (maybe-uninitialized, "inlining failed" false positives); warnings stay visible, and
        # the profile's -Werror=format-security etc. still apply (see toolchain.py on -Werror).
        "EXTRA_CFLAGS=$CFLAGS -Wno-error", "EXTRA_LDFLAGS=$LDFLAGS", "LD_FLAGS=$LDFLAGS",
        "DEBUG=-g0",  # instead of its -ggdb: the debug profile's own -g comes later and wins
        # `make install` runs wolfSentry's unit tests first, then installs here
        "INSTALL_DIR=$STAGE$PREFIX", "PKGCONFIG_PREFIX=$PREFIX", "PKGCONFIG_VERSION=$VERSION",
    ),
    pkgconfig=("wolfsentry.pc",),  # written by patches/wolfsentry/1.6.2
)

WOLFSSL = LibrarySpec(
    pin=SourcePin(
        library="wolfssl",
        version="5.9.2",
        license="GPL-3.0-or-later",
        url="https://github.com/wolfSSL/wolfssl/archive/refs/tags/v5.9.2-stable.tar.gz",
        sha256="2f4ef3d4fd387a9b3191d36a6316d69116c46ff69bb9583b6c82b36d7b8ca114",
        filename="wolfssl-5.9.2-stable.tar.gz",
        tree_root="wolfssl-5.9.2-stable/",
        purl="pkg:github/wolfssl/wolfssl@v5.9.2-stable",
        homepage="https://www.wolfssl.com/",
    ),
    kind="autotools",
    options=(
        "--enable-tls13", "--enable-dtls", "--enable-dtls13", "--enable-dtls-frag-ch", "--enable-dtlscid",
        "--enable-sni", "--enable-alpn", "--enable-session-ticket", "--enable-ocsp", "--enable-crl",
        "--disable-examples", "--disable-crypttests", "--disable-benchmark",
        "--enable-wolfclu",  # the APIs wolfCLU calls (OpenSSL compatibility layer, certificate generation...)
        # wolfSentry hooks (WOLFSSL_WOLFSENTRY_HOOKS): libwolfssl itself does not link wolfSentry,
        # an application that uses the hooks links both
        "--enable-wolfsentry", "--with-wolfsentry=/usr/local",
    ),
    pkgconfig=("wolfssl.pc",),
    needs=("wolfsentry",),
)

WOLFCLU = LibrarySpec(
    pin=SourcePin(
        library="wolfclu",
        version="0.2.0",
        license="GPL-3.0-or-later",
        url="https://github.com/wolfSSL/wolfCLU/archive/refs/tags/v0.2.0-stable.tar.gz",
        sha256=None,  # GitHub's tarball bytes are not known here: the tree digest verifies it
        tree_sha256="dc4135e56cbbbe9720eb2695eb6c9be8019d346c5d7f5aacfb3c9867de52781c",
        filename="wolfCLU-0.2.0-stable.tar.gz",
        tree_root="wolfCLU-0.2.0-stable/",
        purl="pkg:github/wolfssl/wolfclu@v0.2.0-stable",
        homepage="https://github.com/wolfSSL/wolfCLU",
        alternates=(
            # `git archive` of tag v0.2.0-stable (commit ceefc995, tree be05fbec), gzip -n
            Alternate("wolfCLU-0.2.0-stable.tar.gz",
                      "814e49470bf4e392cc0d2554a2b0853f85e892c0a77b9a5ec31b0b4f15c228b9", "wolfCLU-0.2.0-stable/"),
        ),
    ),
    kind="autotools",  # no configure in the tag archive: autogen.sh
    # its s_client/s_server use wolfSSL's wolfSentry glue (our wolfSSL has the hooks), so it
    # links libwolfsentry; patches/wolfclu/0.2.0 makes them compile against wolfSentry 1.x
    options=("--with-wolfssl=/usr/local", "LIBS=-lwolfsentry"),
    needs=("wolfssl", "wolfsentry"),
    smoke="wolfssl -v",  # the `wolfssl` command; no library, no pkg-config module
)

LIBUV = LibrarySpec(
    pin=SourcePin(
        library="libuv",
        version="1.52.1",
        license="MIT",
        url="https://github.com/libuv/libuv/archive/refs/tags/v1.52.1.tar.gz",
        sha256="478baf2599bfbc882c355288c9cb6f92e0e7dda435fa04031fa5b607cf3f414c",
        filename="libuv-1.52.1.tar.gz",
        tree_root="libuv-1.52.1/",
        purl="pkg:github/libuv/libuv@v1.52.1",
        homepage="https://libuv.org/",
        alternates=(
            # GitHub's tarball snapshot of tag v1.52.1 (commit 48dbd85), as kept by Debian
            Alternate("libuv-1.52.1-snapshot.tar.gz",
                      "b0d728e2f3cb0204ea09caa510cc9982c600ef6ca27612ee2f6298b8e19817d3", "libuv-libuv-48dbd85/"),
        ),
    ),
    kind="cmake",
    options=("-DLIBUV_BUILD_SHARED=ON", "-DLIBUV_BUILD_TESTS=OFF", "-DLIBUV_BUILD_BENCH=OFF"),
    pkgconfig=("libuv.pc", "libuv-static.pc"),
)

LLHTTP = LibrarySpec(
    pin=SourcePin(
        library="llhttp",
        version="9.4.3",
        license="MIT",
        url="https://github.com/nodejs/llhttp/archive/refs/tags/release/v9.4.3.tar.gz",
        sha256="1eb813c7437b31a87496a1cd3ed79f00746720f5e7e29c79b42c02cb69f36c39",
        filename="llhttp-release-v9.4.3.tar.gz",
        tree_root="llhttp-release-v9.4.3/",
        purl="pkg:github/nodejs/llhttp@release%2Fv9.4.3",
        homepage="https://github.com/nodejs/llhttp",
        alternates=(
            # the httptools 0.9.0 sdist vendors the llhttp 9.4.3 release C files unchanged
            Alternate("httptools-0.9.0.tar.gz",
                      "d484ebb7e3a3f3597b0f645fbd1b85633674ca808c1f5ba11c2caf7c66f5c8b6",
                      "httptools-0.9.0/vendor/llhttp/"),
        ),
    ),
    kind="custom",  # three C files; the vendored copy has no CMakeLists.txt
    script=LLHTTP_BUILD,
    pkgconfig=("llhttp.pc",),
)

CJSON = LibrarySpec(
    pin=SourcePin(
        library="cjson",
        version="1.7.19",
        license="MIT",
        url="https://github.com/DaveGamble/cJSON/archive/refs/tags/v1.7.19.tar.gz",
        sha256="7fa616e3046edfa7a28a32d5f9eacfd23f92900fe1f8ccd988c1662f30454562",
        filename="cJSON-1.7.19.tar.gz",
        tree_root="cJSON-1.7.19/",
        purl="pkg:github/davegamble/cjson@v1.7.19",
        homepage="https://github.com/DaveGamble/cJSON",
    ),
    kind="cmake",
    options=("-DENABLE_CJSON_UTILS=On", "-DENABLE_CJSON_TEST=Off", "-DBUILD_SHARED_AND_STATIC_LIBS=On",
             "-DENABLE_CJSON_UNINSTALL=Off"),
    pkgconfig=("libcjson.pc", "libcjson_utils.pc"),
)

MIMALLOC = LibrarySpec(
    pin=SourcePin(
        library="mimalloc",
        version="3.4.3",
        license="MIT",
        url="https://github.com/microsoft/mimalloc/archive/refs/tags/v3.4.3.tar.gz",
        sha256="7b043c26b64dde66344d144fbcac3664858a4eb32197793ea2a18feb32741ca1",
        filename="mimalloc-3.4.3.tar.gz",
        tree_root="mimalloc-3.4.3/",
        purl="pkg:github/microsoft/mimalloc@v3.4.3",
        homepage="https://github.com/microsoft/mimalloc",
        alternates=(
            # the cmeel-mimalloc 3.4.3 sdist carries the full mimalloc 3.4.3 tree
            Alternate("cmeel_mimalloc-3.4.3.tar.gz",
                      "8d355a77cc0f4133cdeb9156c9098bbb4e88924326d38343cf73ff9caa95ece3",
                      "cmeel_mimalloc-3.4.3/mimalloc/"),
        ),
    ),
    kind="cmake",
    options=("-DMI_BUILD_SHARED=ON", "-DMI_BUILD_STATIC=ON", "-DMI_BUILD_OBJECT=OFF", "-DMI_BUILD_TESTS=OFF",
             "-DMI_INSTALL_TOPLEVEL=ON"),
    pkgconfig=("mimalloc.pc",),
)



def in_build_order(libs: tuple[LibrarySpec, ...]) -> tuple[LibrarySpec, ...]:
    """``libs`` ordered so each comes after everything it ``needs``; otherwise in the given order."""
    by_name = {lib.name: lib for lib in libs}
    for lib in libs:
        missing = [n for n in lib.needs if n not in by_name]
        if missing:
            raise ValueError(f"recipes/libs.py: {lib.name} needs {', '.join(missing)}, which is not in the list")
    done: dict[str, LibrarySpec] = {}

    def visit(lib: LibrarySpec, path: tuple[str, ...]) -> None:
        if lib.name in path:
            raise ValueError(f"recipes/libs.py: dependency cycle {' → '.join((*path, lib.name))}")
        for name in lib.needs:
            if name not in done:
                visit(by_name[name], (*path, lib.name))
        done.setdefault(lib.name, lib)

    for lib in libs:
        visit(lib, ())
    return tuple(done.values())


# The list (the ocserv-modern layer list order); ALL is it in build order, dependencies first.
LIBRARIES: tuple[LibrarySpec, ...] = (WOLFSSL, WOLFSENTRY, WOLFCLU, LIBUV, LLHTTP, CJSON, MIMALLOC)
ALL: tuple[LibrarySpec, ...] = in_build_order(LIBRARIES)
BY_NAME: dict[str, LibrarySpec] = {lib.name: lib for lib in ALL}
