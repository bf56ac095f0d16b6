"""Package groups for the ocserv-modern images, as data (Debian names).

Recipes install these with :class:`~imagefactory.steps.Install`; other platforms map
the names through :data:`imagefactory.platforms.PACKAGE_NAMES` (``ubi9`` has an entry
for every name used here). Every install runs with ``--no-install-recommends`` (apt)
or without weak dependencies (dnf), so each group lists what it really needs itself,
e.g. ``libc6-dev``, which ``gcc`` only recommends.
"""

from __future__ import annotations

# A complete C/C++ toolchain for day-to-day development: compilers, the three build
# systems ocserv-style projects use (autotools, meson/ninja, cmake), pkg-config, git.
TOOLCHAIN: tuple[str, ...] = (
    "gcc", "g++", "libc6-dev", "make", "cmake", "meson", "ninja-build",
    "autoconf", "automake", "libtool-bin", "pkgconf", "git", "ca-certificates",
    "patch", "file", "xz-utils", "procps", "less",
)

# Debugging and profiling.
DEBUG_TOOLS: tuple[str, ...] = ("gdb", "valgrind", "linux-perf", "strace")

# What an ocserv-style VPN server builds against from the distribution, next to the five
# from-source libraries (wolfSSL replaces GnuTLS, libuv replaces libev in ocserv-modern,
# so neither libgnutls28-dev nor a TLS stack comes from the distribution):
#   libpam0g-dev         PAM authentication
#   libseccomp-dev       seccomp sandbox of the worker processes
#   liblz4-dev           LZ4 compression of the tunnel
#   libreadline-dev      occtl's interactive shell
#   libnl-route-3-dev    routes/interfaces via netlink
#   libprotobuf-c-dev    IPC between main, sec-mod and workers
#   protobuf-c-compiler  generates the IPC message code (protoc-c)
#   libtalloc-dev        hierarchical allocator used throughout ocserv
#   gperf                perfect hashes for configuration keywords
#   libev-dev            the event loop of upstream ocserv (kept to build upstream for comparison)
#   libradcli-dev        RADIUS authentication/accounting
#   libkrb5-dev          GSSAPI/Kerberos authentication
#   liboath-dev          OTP (HOTP/TOTP) authentication
#   libmaxminddb-dev     GeoIP in occtl
# Left out on purpose: libgnutls28-dev (replaced by wolfSSL), libsystemd-dev (socket
# activation is not used in containers), libcurl4-openssl-dev (only for OIDC, pulls a TLS stack).
OCSERV_BUILD_DEPS: tuple[str, ...] = (
    "libpam0g-dev", "libseccomp-dev", "liblz4-dev", "libreadline-dev", "libnl-route-3-dev",
    "libprotobuf-c-dev", "protobuf-c-compiler", "libtalloc-dev", "gperf", "libev-dev",
    "libradcli-dev", "libkrb5-dev", "liboath-dev", "libmaxminddb-dev",
)

# Unit-test frameworks, coverage and network test tools for the test image.
TEST_TOOLS: tuple[str, ...] = (
    "check", "libcmocka-dev", "python3-pytest", "lcov", "gcovr", "tcpdump", "iperf3",
)

# The smallest C toolchain a build/CI image needs: a C compiler, libc headers, make, pkg-config.
MIN_TOOLCHAIN: tuple[str, ...] = ("gcc", "libc6-dev", "make", "pkgconf")

# Building distribution packages with the platform's own tools: .deb on Debian (dpkg-dev), .rpm
# and RPM repositories on UBI (rpm / rpm-build on UBI, createrepo-c / createrepo_c on UBI).
# RPM tooling on Debian (rpm, sequoia, createrepo-c's glib/libmodulemd stack) costs 28 MB and is
# installed only when the ``ocserv.packaging.rpm`` setting asks for it (recipes/ocserv.py).
DEB_PACKAGING: tuple[str, ...] = ("dpkg-dev",)
RPM_PACKAGING: tuple[str, ...] = ("rpm", "createrepo-c")
NATIVE_PACKAGING: dict[str, tuple[str, ...]] = {"debian": DEB_PACKAGING, "ubi9": RPM_PACKAGING}

ALL_GROUPS: dict[str, tuple[str, ...]] = {
    "TOOLCHAIN": TOOLCHAIN, "DEBUG_TOOLS": DEBUG_TOOLS, "OCSERV_BUILD_DEPS": OCSERV_BUILD_DEPS,
    "TEST_TOOLS": TEST_TOOLS, "MIN_TOOLCHAIN": MIN_TOOLCHAIN, "DEB_PACKAGING": DEB_PACKAGING,
    "RPM_PACKAGING": RPM_PACKAGING,
}
