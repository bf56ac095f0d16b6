#!/bin/sh
# S4 entrypoint: prepare writable directories, make sure the admin S3 user
# exists in the DBStore (SQLite) backend, then hand over to supervisord (PID 1),
# which runs radosgw and the Node.js app.
#
# Works as root and as an arbitrary UID in group 0 without a passwd entry
# (OpenShift style): everything written lives in the group-writable
# /var/lib/ceph, /opt/app-root and /tmp.
set -eu

# Files we create stay usable by any other UID of group 0 (e.g. after the
# platform picks a different UID for the same volume).
umask 0002

# An arbitrary UID has no passwd entry, so HOME may be unset or "/".
if [ -z "${HOME:-}" ] || [ "${HOME}" = "/" ] || [ ! -w "${HOME}" ]; then
    HOME=/opt/app-root/src
    export HOME
fi

CEPH_CONF=${CEPH_CONF:-/etc/ceph/ceph.conf}
SUPERVISORD_CONF=${SUPERVISORD_CONF:-/etc/supervisord.conf}
SUPERVISORD_LOG=/var/log/supervisord.log
RGW_ADMIN_UID=${RGW_ADMIN_UID:-s4admin}
RGW_ADMIN_NAME=${RGW_ADMIN_NAME:-S4 admin}

export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_S3_ENDPOINT="${AWS_S3_ENDPOINT:-http://127.0.0.1:7480}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-s4admin}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-s4secret}"

log() { echo "entrypoint: $*" >&2; }

# The data layout on the /var/lib/ceph/radosgw volume (see README.md): db/ holds
# the DBStore SQLite databases (and db/rgw_posix_lmdbs the POSIX driver's LMDBs
# where radosgw has that driver), buckets/ and tmp/ the POSIX driver's object
# data and scratch space.
RGW=/var/lib/ceph/radosgw
for d in "$RGW" "$RGW/db" "$RGW/db/rgw_posix_lmdbs" "$RGW/buckets" "$RGW/tmp" \
         /var/lib/ceph/run /var/lib/ceph/tmp /opt/app-root/src/data; do
    mkdir -p "$d" 2>/dev/null || true
    if [ ! -w "$d" ]; then
        log "ERROR: $d is not writable by uid $(id -u) gid $(id -g)"
        exit 1
    fi
done
if ! { [ -w "$SUPERVISORD_LOG" ] || [ -w "$(dirname "$SUPERVISORD_LOG")" ]; }; then
    log "ERROR: $SUPERVISORD_LOG is not writable by uid $(id -u) gid $(id -g)" \
        "(the image makes it group-0 writable; run with group 0, e.g. --user UID:0)"
    exit 1
fi
# Volumes from before the db/ layout kept the databases at the top: move them
# once (radosgw is not running yet), so users, buckets and objects stay.
if [ -z "$(ls -A "$RGW/db" | grep -v '^rgw_posix_lmdbs$' || true)" ] && ls "$RGW"/*.db >/dev/null 2>&1; then
    log "moving the DBStore databases of an older layout into $RGW/db"
    for f in "$RGW"/*.db "$RGW"/*.db-journal "$RGW"/*.db-wal "$RGW"/*.db-shm; do
        if [ -e "$f" ]; then mv "$f" "$RGW/db/"; fi
    done
    rmdir "$RGW/data" 2>/dev/null || true  # the old `rgw data` folder, empty
fi
# Stale pid files / admin sockets from a previous run of this container.
rm -f /var/lib/ceph/run/*.asok /var/lib/ceph/run/*.pid /tmp/supervisor.sock /tmp/supervisord.pid

# Run radosgw-admin, bounded by `timeout 30`, and print its stdout.
#
# With the DBStore backend, radosgw-admin (reef 18.2) often finishes its work,
# prints its result and then hangs on exit: the DBStore GC thread may miss the
# stop signal and sleep for ~14 minutes (DB::GC::entry waits on a condition
# variable without a predicate). So we watch the output: once the command has
# printed its complete JSON answer (a "}" in column 0) or its error ("could not
# ..."), it is done; give it a moment to exit and otherwise terminate it.
# (Never use `user list`: it hangs with DBStore.)
RGW_ADMIN_OUT=/var/lib/ceph/tmp/radosgw-admin.out
RGW_ADMIN_ERR=/var/lib/ceph/tmp/radosgw-admin.err
rgw_admin() {
    : >"$RGW_ADMIN_OUT"
    : >"$RGW_ADMIN_ERR"
    timeout 30 radosgw-admin --no-mon-config -c "$CEPH_CONF" "$@" \
        >"$RGW_ADMIN_OUT" 2>"$RGW_ADMIN_ERR" </dev/null &
    _pid=$!
    _verdict=
    _grace=0
    while kill -0 "$_pid" 2>/dev/null; do
        if [ -z "$_verdict" ]; then
            if grep -q "^}" "$RGW_ADMIN_OUT"; then
                _verdict=0
            elif grep -q '^could not ' "$RGW_ADMIN_ERR"; then
                _verdict=1
            fi
        elif [ "$_grace" -ge 10 ]; then
            # Done but stuck in the DBStore shutdown: stop it (timeout passes
            # SIGTERM on to radosgw-admin).
            kill "$_pid" 2>/dev/null || true
            break
        else
            _grace=$((_grace + 1))
        fi
        sleep 0.2
    done
    _rc=0
    wait "$_pid" || _rc=$?
    if [ -n "$_verdict" ]; then
        _rc=$_verdict
    fi
    cat "$RGW_ADMIN_OUT"
    if [ "$_rc" -ne 0 ]; then
        grep -v '^[0-9-]*T[0-9:.+]* [0-9a-f]* *[0-9]* ' "$RGW_ADMIN_ERR" >&2 || true
    fi
    return "$_rc"
}

RGW_ADMIN_INFO=/var/lib/ceph/tmp/radosgw-admin.user.json
if rgw_admin user info --uid="$RGW_ADMIN_UID" >"$RGW_ADMIN_INFO" 2>/dev/null; then
    log "S3 user '$RGW_ADMIN_UID' already exists"
    # Never modify an existing DBStore user (`key create`, `user modify`):
    # DBStore rewrites the user row with INSERT OR REPLACE, and the bucket
    # table's ON DELETE CASCADE then drops all of that user's buckets. DBStore
    # also looks up only one access key per user.
    if ! grep -q "\"access_key\": \"$AWS_ACCESS_KEY_ID\"" "$RGW_ADMIN_INFO"; then
        log "WARNING: AWS_ACCESS_KEY_ID is not the access key of the existing S3 user" \
            "'$RGW_ADMIN_UID'; leaving the user unchanged (changing keys would delete" \
            "its buckets). Use the original keys, or start with an empty /var/lib/ceph/radosgw."
    fi
else
    log "creating S3 user '$RGW_ADMIN_UID'"
    rgw_admin user create --uid="$RGW_ADMIN_UID" --display-name="$RGW_ADMIN_NAME" \
        --access-key="$AWS_ACCESS_KEY_ID" --secret-key="$AWS_SECRET_ACCESS_KEY" >/dev/null
fi
rm -f "$RGW_ADMIN_INFO" "$RGW_ADMIN_OUT" "$RGW_ADMIN_ERR"
# SQLite creates its files 0644 whatever the umask: keep them usable by group 0.
chmod g+rw "$RGW"/db/*.db 2>/dev/null || true

# supervisord re-opens /dev/stdout and /dev/stderr for the program logs. The
# container runtimes (runc, crun) hand the stdio pipes to the container user,
# but some setups leave them owned by root (EACCES for an arbitrary UID). Then
# relay through a FIFO that we own: `cat` writes to the inherited descriptor.
# (The probe runs in a subshell: a failed redirection must not end this shell.)
if ! (true >>/dev/stdout && true >>/dev/stderr) 2>/dev/null; then
    log "/dev/stdout is not re-openable by uid $(id -u): relaying logs through a FIFO"
    fifo=/tmp/supervisord-stdout.fifo
    rm -f "$fifo"
    mkfifo -m 0600 "$fifo"
    cat "$fifo" &
    exec supervisord -c "$SUPERVISORD_CONF" >"$fifo" 2>&1
fi

exec supervisord -c "$SUPERVISORD_CONF"
