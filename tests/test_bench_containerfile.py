"""bench/containerfile.py: the Containerfile generated from a plan (pure: no buildah, no network)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import uuid
from pathlib import Path

import pytest

from imagefactory import config
from imagefactory.buildah import Mount
from imagefactory.plan import build_plan
from imagefactory.recipe import Recipe
from imagefactory.steps import Config, Copy, CopyFrom, Env, Install, Rendered, Run, RunCall, Step

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_containerfile", REPO / "bench" / "containerfile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cf = _load()
SLIM = "imagefactory-base-debian-slim"
SLIM_REF = "localhost/imagefactory-base-debian-slim:latest"


def settings():
    return config.load(env={}, overrides={"platform": "debian", "debian_mirror": "http://mirror.invalid/debian"})


class TwoCalls(Step):
    """A step rendering two RunCalls (like an install followed by a trim): one layer in imagefactory."""

    kind = "two"

    def render(self, ctx) -> Rendered:
        return Rendered(self.kind, "install then trim", [
            RunCall(("/bin/sh", "-ec", "echo install"), (("A", "1"),)),
            RunCall(("/bin/sh", "-ec", "rm -rf /usr/share/doc/x")),
        ])


@pytest.fixture
def recipes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib-1.0.tar.gz").write_bytes(b"archive bytes")
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-fix.patch").write_text("--- a/x\n+++ b/x\n")
    conf = tmp_path / "app.conf"
    conf.write_text("port = 1\n")
    tag = uuid.uuid4().hex[:6]

    class Builder(Recipe):
        name = f"bench-cf-builder-{tag}"
        hidden = True
        base = "slim"

        def steps(self):
            yield Run("make all", env={"CC": "gcc", "MSG": "a b"}, title="compile")

    class Small(Recipe):
        """A small image."""

        name = f"bench-cf-small-{tag}"
        base = "slim"
        stages = {"builder": Builder}

        def steps(self):
            yield Install("curl", "ca-certificates")
            yield TwoCalls()
            yield Env(GREETING="hello $USER")
            yield Run("tar -xf /run/src/lib-1.0.tar.gz && patch -p1 -i /run/patches/0001-fix.patch",
                      env={"LC_ALL": "C.UTF-8"},
                      mounts=(Mount(target="/run/src", source=str(src)),
                              Mount(target="/run/patches", source=str(patches))))
            yield Run("whoami > /srv/who", user="nobody", workdir="/srv")
            yield Copy(str(conf), "/etc/app.conf", mode="0644", chown="0:0")
            yield CopyFrom("builder", "/out/app", "/usr/local/bin/app", mode="0755")
            yield Config(user="app", workdir="/srv", cmd=["app", "--serve"], expose=[8080])

    return Small, Builder, src, patches, conf


def generate(small, **kw):
    plan = build_plan([small], settings())
    node = plan.node(small)
    kw.setdefault("from_images", {SLIM: SLIM_REF})
    return cf.containerfile_for(node, plan, **kw)


def run_argv(line: str) -> list[str]:
    return json.loads(line[line.index("["):])


def test_stages_from_the_given_base_and_copy_from_uses_the_stage(recipes):
    small, builder, *_ = recipes
    text, _ = generate(small)
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == [f"FROM {SLIM_REF} AS {builder.name}", f"FROM {SLIM_REF} AS {small.name}"]
    assert f'COPY --from={builder.name} --chmod=0755 ["/out/app", "/usr/local/bin/app"]' in text
    # the target is the last stage, so a plain `buildah bud` produces it
    assert text.rindex("FROM ") == text.index(f"FROM {SLIM_REF} AS {small.name}")


def test_run_keeps_the_exact_script_and_env_per_run(recipes):
    small, *_ = recipes
    text, _ = generate(small)
    runs = [line for line in text.splitlines() if line.startswith("RUN ")]
    builder_run = run_argv(runs[0])
    assert builder_run == ["/usr/bin/env", "CC=gcc", "MSG=a b", "/bin/sh", "-ec", "make all"]
    install = run_argv(runs[1])
    assert install[:4] == ["/usr/bin/env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "PYTHONHASHSEED=0"]
    assert install[4:6] == ["/bin/sh", "-ec"] and "apt-get install -y -q --no-install-recommends" in install[6]
    assert "curl" in install[6] and "ENV DEBIAN_FRONTEND" not in text  # per RUN, never persisted


def test_calls_of_one_step_share_one_run_unless_asked(recipes):
    small, *_ = recipes
    text, _ = generate(small)
    merged = [run_argv(line) for line in text.splitlines() if line.startswith("RUN ") and "echo install" in line]
    assert len(merged) == 1
    script = merged[0][2]
    assert [shlex.split(line) for line in script.splitlines()] == [
        ["/usr/bin/env", "A=1", "/bin/sh", "-ec", "echo install"],
        ["/bin/sh", "-ec", "rm -rf /usr/share/doc/x"],
    ]
    text, _ = generate(small, merge_step_calls=False)
    assert sum(line.startswith("RUN ") and ("echo install" in line or "rm -rf /usr/share/doc/x" in line)
               for line in text.splitlines()) == 2


def test_bind_mounts_are_staged_under_content_addressed_paths(recipes):
    small, _, src, patches, conf = recipes
    text, files = generate(small)
    line = next(x for x in text.splitlines() if x.startswith("RUN ") and "lib-1.0.tar.gz" in x)
    mounts = [tok for tok in line.split() if tok.startswith("--mount=")]
    assert len(mounts) == 2
    parsed = [dict(kv.split("=", 1) for kv in m.removeprefix("--mount=").split(",") if "=" in kv) for m in mounts]
    assert [p["target"] for p in parsed] == ["/run/src", "/run/patches"]
    assert all(m.endswith(",ro") for m in mounts)
    assert files[parsed[0]["source"]] == src and files[parsed[1]["source"]] == patches
    assert any(files[k] == conf for k in files)
    # changed patch bytes → a different context path → different RUN text (bud's cache misses)
    (patches / "0001-fix.patch").write_text("--- a/x\n+++ b/x\n@@ changed\n")
    text2, files2 = generate(small)
    assert text2 != text and set(files2) != set(files)


def test_staging_links_files_into_the_context(recipes, tmp_path):
    small, *_ = recipes
    _, files = generate(small)
    ctx = tmp_path / "ctx"
    cf.stage_context(files, ctx)
    for rel, src in files.items():
        staged = ctx / rel
        if src.is_dir():
            assert sorted(p.name for p in staged.iterdir()) == sorted(p.name for p in src.iterdir())
        else:
            assert staged.read_bytes() == src.read_bytes()


def test_per_run_user_and_workdir_are_switched_back(recipes):
    small, *_ = recipes
    lines = generate(small)[0].splitlines()
    i = next(n for n, x in enumerate(lines) if x.startswith("RUN ") and "whoami" in x)
    assert lines[i - 2:i] == ["WORKDIR /srv", "USER nobody"]
    assert lines[i + 1:i + 3] == ["USER root", "WORKDIR /"]


def test_config_calls_and_final_labels(recipes):
    small, *_ = recipes
    text, _ = generate(small, created=0, revision="abc123")
    lines = text.splitlines()
    assert 'ENV GREETING="hello \\$USER"' in lines  # no expansion by the builder
    assert 'COPY --chown=0:0 --chmod=0644 ["copy/' in text
    tail = lines[-6:]
    assert tail[:4] == ["USER app", "WORKDIR /srv", 'CMD ["app", "--serve"]', "EXPOSE 8080"]
    assert tail[-1].startswith("LABEL ")
    assert '"org.opencontainers.image.created"="1970-01-01T00:00:00Z"' in tail[-1]
    assert '"org.opencontainers.image.revision"="abc123"' in tail[-1]
    assert f'"org.opencontainers.image.title"="{small.name}"' in tail[-1]


def test_config_translation_covers_healthcheck_volume_entrypoint():
    out = cf.config_instructions(["--entrypoint", '["/init"]', "--volume", "/data", "--label", 'a="b"',
                                  "--healthcheck", "CMD-SHELL curl -f http://127.0.0.1/", "--healthcheck-interval", "30s",
                                  "--healthcheck-retries", "3"])
    assert out == ['ENTRYPOINT ["/init"]', 'VOLUME ["/data"]', 'LABEL "a"="\\"b\\""',
                   "HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://127.0.0.1/"]
    with pytest.raises(cf.ContainerfileError):
        cf.config_instructions(["--stop-signal", "TERM"])


def test_host_steps_have_no_containerfile_form(recipes):
    small, *_ = recipes
    plan = build_plan([small], settings())
    with pytest.raises(cf.ContainerfileError, match="runs on the host"):
        cf.containerfile_for(plan.node(small), plan, from_images={})


def test_host_ca_is_bound_into_every_run(recipes, tmp_path):
    small, *_ = recipes
    ca = tmp_path / "ca.crt"
    ca.write_text("CERT")
    text, files = generate(small, host_ca=str(ca))
    runs = [line for line in text.splitlines() if line.startswith("RUN ")]
    assert runs and all("target=/run/imagefactory/host-ca.crt,ro" in r for r in runs)
    assert all("SSL_CERT_FILE=/run/imagefactory/host-ca.crt" in r for r in runs)
    assert ca in files.values()


@pytest.fixture
def library_family():
    """A toolchain stage, three library stages (``b`` FROM ``a``, ``c`` copying ``a`` in) and an image
    copying each library's tree, as the ocserv recipes do."""
    tag = uuid.uuid4().hex[:6]

    class Toolchain(Recipe):
        name = f"bench-cf-toolchain-{tag}"
        hidden = True
        base = "slim"

        def steps(self):
            yield Run("echo toolchain")

    class A(Toolchain):
        name = f"bench-cf-lib-a-{tag}"

        def steps(self):
            yield Run("make a", title="a")

    class B(A):
        name = f"bench-cf-lib-b-{tag}"

        def steps(self):
            yield Run("make b", title="b")

    class C(Toolchain):
        name = f"bench-cf-lib-c-{tag}"
        stages = {"a": A}

        def steps(self):
            yield CopyFrom("a", "/staged/a/usr/local", "/usr/local")
            yield Run("make c", title="c")

    class Image(Recipe):
        name = f"bench-cf-assembled-{tag}"
        base = "slim"
        stages = {"a": A, "b": B, "c": C}

        def steps(self):
            for lib in "abc":
                yield CopyFrom(lib, f"/staged/{lib}/usr/local", "/usr/local")
            yield Run("ldconfig", title="merge")

    return Image, Toolchain, (A, B, C)


def test_one_stage_per_library_by_default(library_family):
    image, toolchain, libs = library_family
    text, _ = generate(image)
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == [f"FROM {SLIM_REF} AS {toolchain.name}", f"FROM {toolchain.name} AS {libs[0].name}",
                     f"FROM {libs[0].name} AS {libs[1].name}", f"FROM {toolchain.name} AS {libs[2].name}",
                     f"FROM {SLIM_REF} AS {image.name}"]
    copies = [line for line in text.splitlines() if line.startswith("COPY ")]
    assert copies == [f'COPY --from={libs[0].name} ["/staged/a/usr/local", "/usr/local"]',
                      *(f'COPY --from={lib.name} ["/staged/{n}/usr/local", "/usr/local"]' for n, lib in zip("abc", libs))]


def test_single_chain_builds_the_library_stages_as_one_stage(library_family):
    image, toolchain, libs = library_family
    text, _ = generate(image, chain=[lib.name for lib in libs])
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("FROM ")] == [
        f"FROM {SLIM_REF} AS {toolchain.name}", f"FROM {toolchain.name} AS libraries", f"FROM {SLIM_REF} AS {image.name}"]
    chain = lines[lines.index(f"FROM {toolchain.name} AS libraries"):lines.index(f"FROM {SLIM_REF} AS {image.name}")]
    assert [run_argv(line)[-1] for line in chain if line.startswith("RUN ")] == ["make a", "make b", "make c"]
    assert not [line for line in chain if line.startswith("COPY ")], "c's copy of a: a is already in the chain"
    # the image's three copies read the chain, in one COPY (one layer, as one stage's /usr/local was)
    assert [line for line in lines if line.startswith("COPY ")] == [
        'COPY --from=libraries ["/staged/a/usr/local", "/staged/b/usr/local", "/staged/c/usr/local", "/usr/local"]']


def test_a_chain_on_two_roots_is_refused(library_family):
    image, toolchain, libs = library_family
    with pytest.raises(cf.ContainerfileError, match="must build on one image"):
        generate(image, chain=[libs[1].name, libs[2].name])
