"""Pure logic: cache keys, planner order/cycles/levels, platform mapping, config precedence."""

from __future__ import annotations

import uuid

import pytest

from imagefactory import config
from imagefactory.platforms import get_platform, host_debian_mirror
from imagefactory.plan import PlanError, build_plan, resolve_graph
from imagefactory.walk import step_key
from imagefactory.recipe import CATALOGUE, Recipe, RecipeError
from imagefactory.loader import load_recipes
from imagefactory.steps import Copy, CopyFrom, Env, Install, Rendered, Run, RunCall


def settings(**kw):
    return config.load(env={}, overrides=kw)


def uid(p: str) -> str:
    return f"{p}-{uuid.uuid4().hex[:6]}"


# --- cache keys ------------------------------------------------------------------
def rendered(script: str, env=(), inputs=()) -> Rendered:
    return Rendered("run", script, [RunCall(("/bin/sh", "-ec", script), tuple(env))], list(inputs))


def test_key_depends_on_parent_step_text_env_and_inputs():
    base = step_key("sha256-parent", rendered("make"))
    assert base == step_key("sha256-parent", rendered("make"))
    assert base != step_key("other-parent", rendered("make"))
    assert base != step_key("sha256-parent", rendered("make install"))
    assert base != step_key("sha256-parent", rendered("make", env=[("CC", "clang")]))
    assert base != step_key("sha256-parent", rendered("make", inputs=["src:abc"]))


def test_copy_key_uses_bytes_not_mtime_or_location(tmp_path):
    import os
    import time

    from imagefactory.prepare import FileDigests

    a = tmp_path / "a" / "f.txt"
    b = tmp_path / "b" / "f.txt"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text("same")
    d = FileDigests()
    assert d.tree(a) == d.tree(b)
    before = d.tree(a)
    os.utime(a, (time.time() + 50, time.time() + 50))
    assert d.tree(a) == before
    a.write_text("changed")
    assert d.tree(a) != before
    a.chmod(0o755)
    assert d.tree(a) != FileDigests().tree(b)


def test_file_digest_memo_survives_processes(tmp_path):
    from imagefactory.prepare import FileDigests

    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 1000)
    memo = tmp_path / "memo.json"
    d1 = FileDigests(memo)
    first = d1.file(f)
    d1.save()
    d2 = FileDigests(memo)
    assert d2._memo[str(f)][1] == first
    assert d2.file(f) == first


# --- planner -----------------------------------------------------------------------
def test_ancestors_first_and_levels_allow_parallel_chains():
    class A(Recipe):
        """a"""
        name = uid("a")
        parent = "localhost/x:latest"

    class B(A):
        """b"""
        name = uid("b")

    class C(Recipe):
        """c"""
        name = uid("c")
        parent = "localhost/y:latest"

    class D(C):
        """d"""
        name = uid("d")

    plan = build_plan([B, D], settings())
    names = [n.name for n in plan.nodes]
    assert names.index(A.name) < names.index(B.name)
    assert names.index(C.name) < names.index(D.name)
    levels = [[n.name for n in level] for level in plan.levels()]
    assert sorted(levels[0]) == sorted([A.name, C.name])
    assert sorted(levels[1]) == sorted([B.name, D.name])
    leafs = {n.name: n.leaf for n in plan.nodes}
    assert leafs[B.name] and leafs[D.name] and not leafs[A.name]
    assert plan.node(B).squash and not plan.node(A).squash


def test_cycle_through_copyfrom_is_refused():
    class X(Recipe):
        """x"""
        name = uid("x")
        parent = "localhost/x:latest"

        def steps(self):
            yield CopyFrom(Y, "/a", "/a")

    class Y(Recipe):
        """y"""
        name = uid("y")
        parent = "localhost/x:latest"

        def steps(self):
            yield CopyFrom(X, "/b", "/b")

    with pytest.raises(PlanError, match="cycle"):
        build_plan([X], settings())


def test_unknown_target_and_bad_parent_name_the_recipe():
    with pytest.raises(RecipeError, match="unknown target 'nope'"):
        build_plan(["nope"], settings())

    class Abstract(Recipe):
        """no name"""

    class Bad(Abstract):
        """bad"""
        name = uid("bad")
        parent = Abstract

    with pytest.raises(PlanError, match="no `name`"):
        build_plan([Bad], settings())


def test_duplicate_recipe_name_is_an_error():
    name = uid("dup")

    class One(Recipe):
        """one"""

    One.name = name
    CATALOGUE.add(One)
    with pytest.raises(RecipeError, match=f"{name}.*defined twice"):
        type("Two", (Recipe,), {"name": name, "__doc__": "two", "__module__": "elsewhere"})
    assert CATALOGUE.get(name) is One, "the first definition stays"


def test_copy_of_missing_file_names_recipe_and_file():
    class Missing(Recipe):
        """m"""
        name = uid("missing")
        parent = "localhost/x:latest"

        def steps(self):
            yield Copy("does-not-exist.txt", "/x")

    with pytest.raises(PlanError, match=r"recipe '.*missing.*'.*does-not-exist\.txt.*not found"):
        build_plan([Missing], settings())


def test_steps_that_raise_are_reported_with_the_recipe_name():
    class Raises(Recipe):
        """r"""
        name = uid("raises")
        parent = "localhost/x:latest"

        def steps(self):
            raise KeyError("oops")

    with pytest.raises(PlanError, match=Raises.name):
        build_plan([Raises], settings())


def test_subclass_inherits_from_parent_image_not_steps():
    class Base1(Recipe):
        """base"""
        name = uid("base")
        parent = "localhost/x:latest"

        def steps(self):
            yield Run("echo base")

    class Kid(Base1):
        """kid"""
        name = uid("kid")

        def steps(self):
            yield Env(A="1")

    plan = build_plan([Kid], settings())
    assert plan.node(Kid).parent is Base1


# --- platforms -----------------------------------------------------------------------
def test_package_names_are_mapped_in_one_place():
    ubi = get_platform("ubi9")
    assert ubi.map_packages(("libpam0g-dev", "g++", "dpkg-dev", "make")) == ["pam-devel", "gcc-c++", "make"]
    deb = get_platform("debian")
    assert deb.map_packages(("libpam0g-dev",)) == ["libpam0g-dev"]


def test_bootstrap_tells_dpkg_to_skip_docs_from_the_first_package():
    from fnmatch import fnmatch

    from imagefactory.platforms import DPKG_PATH_EXCLUDES, bootstrap_command

    root, rootless = bootstrap_command(rootless=False), bootstrap_command(rootless=True)
    assert root[:2] == rootless[:2] == ["mmdebstrap", "--mode=root"]
    assert "--skip=output/mknod" in rootless and "--skip=output/mknod" not in root
    assert [a for a in root if a.startswith("--dpkgopt=")] == [f"--dpkgopt={r}" for r in DPKG_PATH_EXCLUDES]

    def kept(path: str) -> bool:  # dpkg's rule: the last matching filter wins (fnmatch, * spans /)
        verdict = True
        for rule in DPKG_PATH_EXCLUDES:
            kind, pattern = rule.split("=", 1)
            if fnmatch(path, pattern):
                verdict = kind == "path-include"
        return verdict

    for path in ("/usr/share/doc/gcc-14/changelog.gz", "/usr/share/man/man1/ls.1.gz",
                 "/usr/share/locale/de/LC_MESSAGES/gcc.mo", "/usr/share/info/gdb.info.gz"):
        assert not kept(path), path
    for path in ("/usr/share/doc/libc6/copyright", "/usr/share/locale/locale.alias", "/usr/bin/ls",
                 "/usr/share/perl/5.40/unicore/Name.pl"):
        assert kept(path), path


def test_install_commands_per_platform_and_variant():
    deb = get_platform("debian").install_calls(["b", "a"], variant="slim")[0]
    script = deb.argv[-1]
    assert "apt-get install -y -q --no-install-recommends -o Acquire::Retries=3" in script
    assert script.splitlines()[1].endswith(" a b")
    assert "apt-get update -q --error-on=any" in script  # an unreachable mirror fails the update itself
    assert ("DEBIAN_FRONTEND", "noninteractive") in deb.env
    ubi = get_platform("ubi9")
    assert "microdnf install -y --nodocs --setopt=install_weak_deps=0 a" in ubi.install_calls(["a"], "slim")[0].argv[-1]
    assert "dnf install -y --nodocs --setopt=install_weak_deps=False a" in ubi.install_calls(["a"], "full")[0].argv[-1]


def test_unknown_platform_is_a_clear_error():
    with pytest.raises(RecipeError, match="unknown platform 'arch'"):
        get_platform("arch")


def test_host_mirror_read_from_deb822_and_one_line_formats(tmp_path):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example.org/debian/\nSuites: bookworm\nComponents: main\n")
    assert host_debian_mirror(str(d)) == "http://mirror.example.org/debian"
    d2 = tmp_path / "apt2"
    (d2 / "sources.list.d").mkdir(parents=True)
    (d2 / "sources.list").write_text("deb [arch=amd64] https://deb.example.com/debian bookworm main\n")
    assert host_debian_mirror(str(d2)) == "https://deb.example.com/debian"
    assert host_debian_mirror(str(tmp_path / "none")) is None


def test_ubi9_plan_renders_without_buildah():
    class OnUbi(Recipe):
        """ubi"""
        name = uid("on-ubi")
        base = "slim"

        def steps(self):
            yield Install("libpam0g-dev", "make")

    plan = build_plan([OnUbi], settings(platform="ubi9"))
    assert [n.name for n in plan.nodes] == ["imagefactory-base-ubi9-minimal", OnUbi.name]
    assert plan.nodes[0].parent == "registry.access.redhat.com/ubi9/ubi-minimal:latest"
    (p,) = plan.node(OnUbi).planned
    r = p.rendered
    assert r.calls[0].argv[-1].startswith("microdnf install -y --nodocs --setopt=install_weak_deps=0 make pam-devel")


def test_source_date_epoch_reaches_every_command_and_the_keys():
    """Set, it is in the env of every RUN (useradd, py3compile and gcc read it) and keys the bootstrap;
    unset, nothing changes."""

    class Dated(Recipe):
        """dated"""
        name = uid("dated")
        base = "slim"

        def steps(self):
            yield Install("make")
            yield Run("useradd -m someone", env={"A": "1"})

    pin = ("SOURCE_DATE_EPOCH", "1700000000")
    plain = build_plan([Dated], settings())
    pinned = build_plan([Dated], settings(source_date_epoch=1700000000))
    for plan, wanted in ((plain, False), (pinned, True)):
        for name in (Dated.name,):  # (the slim base has no steps of its own: it is the full base)
            calls = [c for p in plan.node(name).planned for c in p.rendered.calls if isinstance(c, RunCall)]
            assert calls and all((pin in c.env) is wanted for c in calls), name
    (_, run) = pinned.node(Dated).planned
    assert ("A", "1") in run.rendered.calls[0].env
    (boot,) = pinned.node("imagefactory-base-debian-full").planned
    assert "SOURCE_DATE_EPOCH=1700000000" in boot.rendered.inputs
    (plain_boot,) = plain.node("imagefactory-base-debian-full").planned
    assert step_key("scratch", boot.rendered) != step_key("scratch", plain_boot.rendered)
    assert step_key("p", run.rendered) != step_key("p", plain.node(Dated).planned[1].rendered)


# --- config --------------------------------------------------------------------------
def test_config_precedence_file_env_cli(tmp_path):
    f = tmp_path / "imagefactory.yaml"
    f.write_text("jobs: 3\nisolation: oci\nsource_mirrors: [/a, /b]\nvalues: {s4.context: /app}\n")
    s = config.load(str(f), env={"IMAGEFACTORY_JOBS": "5"}, overrides={"isolation": "chroot"})
    assert s.jobs == 5 and s.origin["jobs"] == "environment"
    assert s.isolation == "chroot" and s.origin["isolation"] == "command line"
    assert s.source_mirrors == ["/a", "/b"]
    assert s.value("s4.context") == "/app"
    s2 = config.load(str(f), env={"IMAGEFACTORY_SOURCE_MIRRORS": "/x http://h.example.org/m",
                                   "SOURCE_DATE_EPOCH": "123"})
    assert s2.source_mirrors == ["/x", "http://h.example.org/m"]
    assert s2.source_date_epoch == 123


def test_config_errors_name_the_setting(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("jbos: 3\n")
    with pytest.raises(config.ConfigError, match="unknown setting 'jbos'"):
        config.load(str(f), env={})
    with pytest.raises(config.ConfigError, match="'jobs' has a bad value"):
        config.load(None, env={"IMAGEFACTORY_JOBS": "many"})
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(str(tmp_path / "missing.yaml"), env={})


def test_base_per_platform_and_missing_platform_is_named():
    class PerPlatform(Recipe):
        """per platform"""
        name = uid("per-platform")
        base = {"debian": "slim", "ubi9": "registry.example.org/custom/base:1"}

    assert resolve_graph([PerPlatform], settings(platform="ubi9")).node(PerPlatform).parent == \
        "registry.example.org/custom/base:1"
    assert resolve_graph([PerPlatform], settings()).node(PerPlatform).parent.name == "imagefactory-base-debian-slim"

    class DebianOnly(Recipe):
        """debian only"""
        name = uid("debian-only")
        base = {"debian": "slim"}

    with pytest.raises(PlanError, match="no base for platform 'ubi9'"):
        resolve_graph([DebianOnly], settings(platform="ubi9"))


def test_bases_and_stages_reached_through_base_or_stages_are_not_leaves():
    """A leaf's one commit carries the git revision; if the slim base were a leaf, every new commit
    would change its image ID and rebuild everything built on it (found by bench/rootless.py)."""
    from imagefactory.plan import final_commits
    from imagefactory.prepare import HostFacts

    load_recipes()
    s = settings()
    for targets in (["build"], ["ci"], ["s4"], ["dev", "test"]):
        leaves = {n.name for n in resolve_graph(targets, s).nodes if n.leaf}
        assert leaves <= {"ocserv-modern-ci", "s4", "ocserv-modern-test"}, (targets, leaves)
    plan = resolve_graph(["ci"], s)
    slim = plan.node(CATALOGUE.get("imagefactory-base-debian-slim"))
    commits = final_commits(slim, s, HostFacts("rev-1", "src", None, 0.0), [], first_index=1)
    feeding = [c for c in commits if c.feeds_children]
    assert feeding and all("rev-1" not in " ".join(c.label_args) for c in feeding)
