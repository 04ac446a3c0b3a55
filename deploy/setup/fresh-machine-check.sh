#!/usr/bin/env bash
# `make fresh-check`: prove the README's two commands on a fresh machine. As root:
#   1. debootstrap a fresh Debian (this machine's release, from the Debian mirror this machine's apt
#      sources name, read now) into a folder under /tmp; it has `make` and nothing of the project's:
#      no Java, Maven, PostgreSQL, Python or curl;
#   2. `git clone` this repository's committed HEAD into it;
#   3. in a chroot, in private mount and PID namespaces, run `make up`, `make down`, `make test`, and
#      nothing else; every prerequisite comes from deploy/setup/install.sh;
#   4. stop whatever is left, unmount, delete the folder (--keep keeps it).
# The fresh machine gets this machine's network settings only: DNS, extra trusted CAs
# (/usr/local/share/ca-certificates), pip's config and the proxy/CA variables of the environment.
# Slow (tens of minutes: it downloads everything), so it is not part of `make test`.
# Options: --keep (keep the folder), --skip-test (up and down only). AIMIS_CACHE/debootstrap keeps
# debootstrap's .deb files between runs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KEEP=no; SKIP_TEST=no
for a in "$@"; do
  case "$a" in --keep) KEEP=yes ;; --skip-test) SKIP_TEST=yes ;; *) echo "usage: $0 [--keep] [--skip-test]" >&2; exit 2 ;; esac
done
log() { echo "[fresh-check $(date -u +%H:%M:%S)] $*"; }
[ "$(id -u)" = "0" ] || { echo "fresh-machine-check.sh: needs root (debootstrap, chroot, mount): sudo make fresh-check" >&2; exit 1; }

# --- this machine's release and Debian mirror -------------------------------------------------
# shellcheck disable=SC1091
CODENAME="$(. /etc/os-release; echo "${VERSION_CODENAME:-}")"
[ -n "$CODENAME" ] || { echo "fresh-check: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }

# Every enabled apt source of this machine as "URI SUITE COMPONENTS..." lines (one-line and deb822 files).
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { $1 = ""; print substr($0, 2) }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no")
                              { n = split(uris, u, " "); m = split(suites, s, " ");
                                for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j], comps }
                            types = uris = suites = comps = ""; enabled = "yes" }
         BEGIN { enabled = "yes" }
         /^[ \t]*#/ { next }
         /^[ \t]*$/ { flush(); next }
         { key = tolower($1); sub(/:$/, "", key); $1 = ""; val = substr($0, 2) }
         key == "types" { types = val } key == "uris" { uris = val } key == "suites" { suites = val }
         key == "components" { comps = val } key == "enabled" { enabled = tolower(val) }
         END { flush() }' "$f"
  done
}
SOURCES="$(apt_sources | awk -v c="$CODENAME" '$2 == c || $2 == c "-updates" || $2 == c "-security"')"
MIRROR="$(awk -v c="$CODENAME" '$2 == c { print $1; exit }' <<<"$SOURCES")"
[ -n "$MIRROR" ] || { echo "fresh-check: no apt source for suite $CODENAME in /etc/apt/sources.list*" >&2; exit 1; }

command -v debootstrap >/dev/null || {
  log "installing debootstrap on this machine (to build the fresh one)"
  DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends debootstrap > /dev/null
}

CACHE="${AIMIS_CACHE:-$HOME/.cache/aimis}/debootstrap"
mkdir -p "$CACHE"
ROOT="$(mktemp -d /tmp/aimis-fresh.XXXXXX)"
chmod 755 "$ROOT"  # the fresh machine's /, which every user (postgres too) must traverse
T0=$(date +%s)

cleanup() {
  local rc=$?
  # Processes of the run live in their own PID namespace, which ended with it; check none escaped.
  local p left=()
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && left+=("${p#/proc/}")
  done
  if [ "${#left[@]}" -gt 0 ]; then log "stopping processes left in the chroot: ${left[*]}"; kill -9 "${left[@]}" 2>/dev/null || true; fi
  # Mounts were made in a private mount namespace and vanished with it; debootstrap's own are checked.
  local m
  for m in $(awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do umount -l "$m" || true; done
  if [ "$KEEP" = yes ]; then log "kept $ROOT"; else rm -rf --one-file-system "$ROOT"; fi
  log "total $(( $(date +%s) - T0 )) s, exit $rc"
}
trap cleanup EXIT

# --- 1. a fresh Debian ---------------------------------------------------------------------------
log "debootstrap $CODENAME from $MIRROR into $ROOT (with make; .debs cached in $CACHE)"
t=$(date +%s)
debootstrap --include=make --cache-dir="$CACHE" "$CODENAME" "$ROOT" "$MIRROR" > "$ROOT.debootstrap.log" 2>&1 \
  || { tail -30 "$ROOT.debootstrap.log"; exit 1; }
rm -f "$ROOT.debootstrap.log"
log "debootstrap done in $(( $(date +%s) - t )) s"
for b in java mvn pg_ctl python3 curl; do
  if chroot "$ROOT" sh -c "command -v $b" >/dev/null; then echo "fresh-check: the fresh machine already has $b" >&2; exit 1; fi
done

# Network settings of this machine, nothing else.
awk '{ print "deb " $1 " " $2 " " substr($0, index($0, $3)) }' <<<"$SOURCES" > "$ROOT/etc/apt/sources.list"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"; cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
# Packages must not start daemons inside the chroot (it shares this machine's network and ports).
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"

# --- 2. the repository --------------------------------------------------------------------------
HEAD="$(git -C "$REPO" rev-parse HEAD)"
[ -z "$(git -C "$REPO" status --porcelain)" ] || log "note: uncommitted changes in $REPO are not part of the check"
git clone -q "$REPO" "$ROOT/root/aimis-billing"
git -C "$ROOT/root/aimis-billing" checkout -q "$HEAD"
log "cloned $HEAD into /root/aimis-billing"

# Ports: the defaults, unless something on this machine already listens there (another checkout's
# `make up`): then free ones, through the variables the README documents.
PORT_ENV=()
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 )); }
for pv in AIMIS_LOCAL_KAFKA_PORT:9092 AIMIS_LOCAL_KAFKA_CONTROLLER_PORT:9093 AIMIS_LOCAL_PG_PORT:5432 \
          AIMIS_ORDER_PORT:8001 AIMIS_ENTITLEMENT_PORT:8002 AIMIS_METERING_PORT:8003 AIMIS_EXPIRY_PORT:8004; do
  if busy "${pv#*:}"; then PORT_ENV+=("${pv%%:*}=$(free_port)"); fi
done
[ "${#PORT_ENV[@]}" -eq 0 ] || log "default ports in use on this machine; the fresh machine uses ${PORT_ENV[*]}"

# The environment of the fresh machine: a login's basics, plus this machine's proxy/CA variables.
ENVV=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${PORT_ENV[@]}")
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_EXTRA_INDEX_URL \
         PIP_CERT PIP_DEFAULT_TIMEOUT SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; do
  [ -n "${!v:-}" ] && ENVV+=("$v=${!v}")
done

# --- 3. the two commands (and make down) --------------------------------------------------------
STEPS='cd /root/aimis-billing
step() { local t=$(date +%s) rc; echo; echo "[fresh-check $(date -u +%H:%M:%S)] # $*"; set +e; "$@"; rc=$?; set -e
         echo "[fresh-check $(date -u +%H:%M:%S)] # $* -> exit $rc in $(( $(date +%s) - t )) s"; return $rc; }
set -e
step make up
step make up
step make down
left=$(ps -eo pid=,args= | grep -E "java|postgres|services\." | grep -v grep || true)
if [ -n "$left" ]; then echo "processes left after make down:"; echo "$left"; exit 1; fi
echo "[fresh-check] no process left after make down"'
[ "$SKIP_TEST" = yes ] || STEPS+='
step make test'
log "chroot: make up (first run), make up (second run), make down, $([ "$SKIP_TEST" = yes ] || echo 'make test')"
set +e
unshare --mount --pid --fork --propagation private -- bash -c '
  set -e
  R="$1"; shift
  mount -t proc proc "$R/proc"
  mount -t sysfs sysfs "$R/sys"
  mount --rbind /dev "$R/dev"
  exec chroot "$R" env -i "$@"
' _ "$ROOT" "${ENVV[@]}" bash -c "$STEPS"
rc=$?
set -e
log "fresh machine run: exit $rc"
exit "$rc"
