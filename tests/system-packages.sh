#!/usr/bin/env bash
# The Debian packages whose programs the tests run, installed when missing:
#   redis-server  and  postgresql   private servers of both (tests/_services.py)
#   chromium                        /usr/bin/chromium, headless, for the browser tests
# With apt-get as root, with `sudo -n` otherwise, and `apt-get update` once if the
# install fails without it.  When that cannot be done, one line says what to install
# and the status is 1, before anything else runs.  apt-get's output goes to a log.
#
# EXP_TEST_SYSROOT (empty: this machine) prefixes the paths looked at, for the tests
# of this script; programs are looked up on PATH.
set -u
root=${EXP_TEST_SYSROOT:-}

need=()
command -v redis-server >/dev/null || need+=(redis-server)
# what tests/_services.py accepts: an existing server, Debian's binaries, or initdb on PATH
[ -n "${EXP_TEST_POSTGRESQL:-}" ] || compgen -G "$root/usr/lib/postgresql/*/bin/initdb" \
    >/dev/null || command -v initdb >/dev/null || need+=(postgresql)
[ -x "$root/usr/bin/chromium" ] || need+=(chromium)
((${#need[@]})) || exit 0

sudo=()
((EUID == 0)) || sudo=(sudo -n)
export DEBIAN_FRONTEND=noninteractive
log=${TMPDIR:-/tmp}/exp-system-packages.log
apt() { "${sudo[@]}" apt-get -q -y "$@" </dev/null >>"$log" 2>&1; }

: 2>/dev/null >"$log" || log=/dev/null
if apt install "${need[@]}" || { apt update && apt install "${need[@]}"; }; then
    echo "installed Debian's ${need[*]} (apt-get)"
    exit 0
fi
echo "The tests need Debian's ${need[*]}, which could not be installed (apt-get as root" \
     "or with sudo -n; its output is in $log): install them with" \
     "'sudo apt-get install ${need[*]}', then run make test again." >&2
exit 1
