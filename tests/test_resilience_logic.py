"""Pure logic behind resilience and rootless operation: no buildah, no network, milliseconds each."""

from __future__ import annotations

import os

import pytest

from imagefactory import rootless
from imagefactory.buildah import BuildahError, is_transient, owned_name, owner_alive
from imagefactory.secrets import SecretError, Secrets, env_name, parse_cli_secret, redact
from imagefactory.steps import Run, Secret, StepError


@pytest.mark.parametrize("release, fuse, driver", [
    ("6.18.44-fc", False, "overlay"), ("5.13.0", False, "overlay"), ("5.10.0-28-amd64", True, "overlay"),
    ("5.10.0-28-amd64", False, "vfs"), ("4.19.0", False, "vfs"),
])
def test_driver_choice_by_kernel_and_fuse(tmp_path, release, fuse, driver):
    choice = rootless.choose_driver(str(tmp_path / "fresh"), kernel=release, fuse_ok=fuse)
    assert choice.driver == driver
    assert bool(choice.options) == (driver == "overlay" and release.startswith(("5.10", "4.")))
    assert release in choice.reason


def test_an_existing_store_keeps_its_driver(tmp_path):
    (tmp_path / "vfs-images").mkdir()
    choice = rootless.choose_driver(str(tmp_path), kernel="6.1.0")
    assert choice.driver == "vfs" and "already uses vfs" in choice.reason


def test_subid_ranges_by_name_or_uid_largest_wins(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\nbob:165536:1000\n1003:300000:70000\nbob:400000:65536\nbroken\n")
    assert rootless.subid_range(str(f), "alice", 1001) == (100000, 65536)
    assert rootless.subid_range(str(f), "bob", 1002) == (400000, 65536)
    assert rootless.subid_range(str(f), "carol", 1003) == (300000, 70000)
    assert rootless.subid_range(str(f), "dave", 1004) is None


def test_owned_names_tell_live_runs_from_dead_ones():
    name = owned_name("imagefactory-x")
    assert f"-p{os.getpid()}-" in name and owner_alive(name)
    assert not owner_alive("imagefactory-x-p999999999-deadbeef")
    assert not owner_alive("imagefactory-x-legacy")  # no owner recorded: a leftover


@pytest.mark.parametrize("tail, transient", [
    ("pinging container registry: invalid status code from registry 503 (Service Unavailable)", True),
    ('dial tcp 127.0.0.1:5000: connect: connection refused', True),
    ("read: connection reset by peer", True),
    ("net/http: TLS handshake timeout", True),
    ("unauthorized: authentication required", False),
    ("manifest unknown: manifest unknown", False),
    ("x509: certificate signed by unknown authority", False),
    ("something nobody has seen before", False),
    # a port, digest or time that happens to contain 404/401 is not an HTTP status
    ('Get "http://127.0.0.1:40412/v2/": dial tcp 127.0.0.1:40412: i/o timeout', True),
    ("reading blob sha256:0a404b: connection reset by peer", True),
    ("received unexpected HTTP status: 404 Not Found", False),
])
def test_registry_errors_are_classified(tail, transient):
    assert is_transient(BuildahError(["buildah", "pull"], 125, tail)) is transient


def test_cli_secret_syntax():
    assert parse_cli_secret("id=token,env=TOKEN") == ("token", "env:TOKEN")
    sid, spec = parse_cli_secret("id=key,src=relative.txt")
    assert sid == "key" and spec == "file:" + os.path.abspath("relative.txt")
    for bad in ("token", "id=x", "id=x,src=a,env=B"):
        with pytest.raises(SecretError):
            parse_cli_secret(bad)


def test_secret_lookup_order_and_messages(tmp_path):
    f = tmp_path / "s"
    f.write_text("from-file-value\n")
    env = {"IMAGEFACTORY_SECRET_API_TOKEN": "from-env-value", "OTHER": "other-value"}
    assert Secrets({}, env).value("api_token") == b"from-env-value"
    assert Secrets({"api_token": f"file:{f}"}, env).value("api_token") == b"from-file-value\n"
    assert Secrets({"api_token": "env:OTHER"}, env).value("api_token") == b"other-value"
    assert "not provided" in Secrets({}, {}).missing("api_token")
    assert "$NOPE, which is not set" in Secrets({"api_token": "env:NOPE"}, {}).missing("api_token")
    assert "not a readable file" in Secrets({"api_token": str(tmp_path / "x")}, {}).missing("api_token")
    assert env_name("my-key.v2") == "IMAGEFACTORY_SECRET_MY_KEY_V2"


def test_redaction_covers_whole_values_and_long_lines(tmp_path):
    s = Secrets({}, {"IMAGEFACTORY_SECRET_K": "-----BEGIN KEY-----\nAAAAverylongline1234\n-----END KEY-----"})
    s.value("k")
    text = redact("got AAAAverylongline1234 here", s.redactions())
    assert "AAAA" not in text and "[secret]" in text


def test_secret_keys_hold_ids_never_values():
    from imagefactory.steps import RunCall

    call = RunCall(("sh",), secrets=(Secret("token", env="TOKEN"),))
    assert "token" in call.key_text() and "TOKEN" in call.key_text()
    plain = RunCall(("sh",))
    assert "secret" not in plain.key_text().lower()  # keys of steps without secrets are unchanged
    with pytest.raises(StepError):
        Secret("../etc/passwd")
    rendered = Run("echo $TOKEN", secrets=[Secret("token", env="TOKEN")]).render(None)
    script = rendered.calls[0].argv[-1]
    assert script.startswith('TOKEN="$(cat /run/secrets/token)"; export TOKEN')
