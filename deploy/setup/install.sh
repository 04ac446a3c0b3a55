#!/usr/bin/env bash
# The machine's prerequisites for `make up`, `make test` and `make bench` (listed in prerequisites.txt,
# plus the tool scripts in tools.d/; both files' contract is in prerequisites.txt's header).
#   install.sh [ensure]  install what is missing: apt-get on Debian/Ubuntu (as root or through sudo),
#                        then tools.d/*.sh install; elsewhere print the command to run and exit 1.
#                        Silent, and fast, when nothing changed since the last complete check.
#   install.sh doctor    print each prerequisite, where it was found, its version and what is
#                        missing; exit 1 when a prerequisite is missing.
# Environment: AIMIS_PREREQ_<NAME> replaces a probe's executable; AIMIS_CACHE (~/.cache/aimis);
# AIMIS_SETUP_LIST, AIMIS_SETUP_TOOLS, AIMIS_SETUP_OS_RELEASE, AIMIS_SETUP_APT_GET and
# AIMIS_SETUP_APT_LISTS replace the list, tools.d/, /etc/os-release, apt-get and apt's list folder
# (the tests use them).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
LIST="${AIMIS_SETUP_LIST:-$HERE/prerequisites.txt}"
TOOLS="${AIMIS_SETUP_TOOLS:-$HERE/tools.d}"
OS_RELEASE="${AIMIS_SETUP_OS_RELEASE:-/etc/os-release}"
APT_GET="${AIMIS_SETUP_APT_GET:-apt-get}"
APT_LISTS="${AIMIS_SETUP_APT_LISTS:-/var/lib/apt/lists}"
export AIMIS_CACHE="${AIMIS_CACHE:-$HOME/.cache/aimis}"
export AIMIS_BIN="$AIMIS_CACHE/bin"
case ":$PATH:" in *":$AIMIS_BIN:"*) ;; *) export PATH="$AIMIS_BIN:$PATH" ;; esac

say() { echo "setup: $*"; }
trim() { local s="$1"; s="${s#"${s%%[![:space:]]*}"}"; echo "${s%"${s##*[![:space:]]}"}"; }

# The list as parallel arrays: N_NAME, N_MIN, N_PROBE, N_PKGS, N_WHY.
N_NAME=(); N_MIN=(); N_PROBE=(); N_PKGS=(); N_WHY=()
read_list() {
  local line name min probe pkgs why
  while IFS= read -r line || [ -n "$line" ]; do
    case "$(trim "$line")" in ''|'#'*) continue ;; esac
    IFS='|' read -r name min probe pkgs why <<<"$line"
    name=$(trim "$name"); probe=$(trim "$probe")
    if [ -z "$name" ] || [ -z "$probe" ]; then echo "setup: $LIST: bad line: $line" >&2; exit 2; fi
    N_NAME+=("$name"); N_MIN+=("$(trim "$min")"); N_PROBE+=("$probe")
    N_PKGS+=("$(trim "$pkgs")"); N_WHY+=("$(trim "$why")")
  done < "$LIST"
}

override_of() { local v="AIMIS_PREREQ_${1^^}"; v="${v//-/_}"; echo "${!v:-}"; }

# locate NAME PROBE: the executable's path, or nothing (exit 1).
locate() {
  local spec="${2%% *}" override c p
  override=$(override_of "$1")
  [ -n "$override" ] && spec="$override"
  local -a cands
  IFS=, read -ra cands <<<"$spec"
  for c in "${cands[@]}"; do
    if [[ "$c" == */* ]]; then
      for p in $c; do [ -x "$p" ] && [ -f "$p" ] && { echo "$p"; return 0; }; done
    else
      p=$(command -v -- "$c" 2>/dev/null) && [ -n "$p" ] && { echo "$p"; return 0; }
    fi
  done
  return 1
}

ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

# probe I: sets P_STATUS (ok|missing|old|broken), P_PATH, P_VERSION.
probe() {
  local i="$1" out rc
  local -a args
  P_PATH=""; P_VERSION=""; P_STATUS=missing
  P_PATH=$(locate "${N_NAME[$i]}" "${N_PROBE[$i]}") || { P_PATH=""; return 0; }
  read -ra args <<<"${N_PROBE[$i]}"
  set +e
  out=$(timeout 60 "$P_PATH" "${args[@]:1}" 2>&1 < /dev/null)
  rc=$?
  set -e
  out=$(printf '%s' "$out" | sed 's/\x1b\[[0-9;]*m//g')
  P_VERSION=$(printf '%s\n' "$out" | grep -oE '[0-9]+(\.[0-9]+)+' | head -1 || true)
  if [ "$rc" -ne 0 ]; then P_STATUS=broken; P_VERSION="$(printf '%s\n' "$out" | grep -v '^\s*$' | tail -1 | cut -c1-60)"; return 0; fi
  P_STATUS=ok
  local min="${N_MIN[$i]}"
  if [ -n "$min" ] && [ "$min" != "-" ] && ! ver_ge "${P_VERSION:-0}" "$min"; then P_STATUS=old; fi
}

tools() { local t; for t in "$TOOLS"/*.sh; do [ -x "$t" ] && echo "$t"; done; return 0; }
tool_why() { sed -n '2,5s/^# why: *//p' "$1" | head -1; }

# A fingerprint of where everything was found: unchanged means nothing to check again.
fingerprint() {
  local i p
  { cat "$LIST"; for t in $(tools); do cksum < "$t"; done
    for i in "${!N_NAME[@]}"; do
      p=$(locate "${N_NAME[$i]}" "${N_PROBE[$i]}") || p=none
      echo "${N_NAME[$i]} $p $(stat -Lc %Y "$p" 2>/dev/null || echo 0)"
    done
  } | cksum | cut -d' ' -f1
}
STAMP_DIR="$AIMIS_CACHE/setup"

is_debian() {
  [ -r "$OS_RELEASE" ] || return 1
  local id like
  id=$(. "$OS_RELEASE"; echo "${ID:-}"); like=$(. "$OS_RELEASE"; echo "${ID_LIKE:-}")
  case " $id $like " in *" debian "*|*" ubuntu "*) command -v "$APT_GET" >/dev/null ;; *) return 1 ;; esac
}

# Before apt-get installs Debian's postgresql: its postinst would create and (under systemd) start a
# "main" cluster on port 5432, the port `make up` gives its own server. Ask postgresql-common not to
# (a drop-in it reads; no package's file is edited). Only when this installer brings PostgreSQL.
before_apt() {
  local dropin=/etc/postgresql-common/createcluster.d/aimis-billing.conf
  if [[ " $* " == *" postgresql "* ]] && [ ! -e "$dropin" ] && [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    say "postgresql: Debian's default cluster is not created (it would take port 5432 from make up): $dropin"
    "${SUDO[@]}" mkdir -p "$(dirname "$dropin")"
    printf '# Written by AIMIS Billing deploy/setup/install.sh: the project runs its own PostgreSQL servers.\ncreate_main_cluster = false\n' \
      | "${SUDO[@]}" tee "$dropin" > /dev/null
  fi
}

apt_install() {
  local -a pkgs=("$@")
  local log="$AIMIS_CACHE/setup/apt.log" rc
  mkdir -p "$AIMIS_CACHE/setup"
  SUDO=()
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null; then
      SUDO=(sudo)
      say "apt-get needs root: asking sudo"
    else
      say "not root and no sudo; run as root: apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
      exit 1
    fi
  fi
  before_apt "${pkgs[@]}"
  local -a apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$APT_GET" -q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  # Lists are fetched first on a machine that has none (fresh images), else only when the install fails.
  local updated=no
  if ! ls "$APT_LISTS" 2>/dev/null | grep -q '_Packages'; then
    say "apt-get update (no package lists yet)"
    "${apt[@]}" update > "$log" 2>&1 || { tail -20 "$log"; say "apt-get update failed (log: $log)"; exit 1; }
    updated=yes
  fi
  while :; do
    say "apt-get install ${pkgs[*]} (log: $log)"
    set +e
    # Progress: apt's totals, a line every 20 packages fetched and unpacked, the requested ones set up.
    "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" 2>&1 | tee -a "$log" \
      | awk -v want=" ${pkgs[*]} " '
          /^Get:/ { if (++got % 20 == 0) { printf "  apt: %d packages downloaded\n", got; fflush() } next }
          /^Unpacking / { if (++unp % 20 == 0) { printf "  apt: %d packages unpacked\n", unp; fflush() } next }
          /^(Need to get|After this operation|E:)/ { print "  " $0; fflush(); next }
          /^Setting up / { p = $3; sub(/:.*/, "", p); if (index(want, " " p " ")) { print "  " $0; fflush() } }'
    rc=${PIPESTATUS[0]}
    set -e
    [ "$rc" -eq 0 ] && return 0
    if [ "$updated" = no ]; then
      say "apt-get install failed; apt-get update, then once more"
      "${apt[@]}" update >> "$log" 2>&1 || true
      updated=yes
      continue
    fi
    tail -20 "$log"; say "apt-get install failed (log: $log)"; exit 1
  done
}

postgres_user() {
  # initdb refuses to run as root: as root, the local servers run as the system user postgres.
  if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
    say "creating the system user postgres (the local PostgreSQL servers run as it; initdb refuses root)"
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
  fi
}

ensure() {
  read_list
  local fp i t
  fp=$(fingerprint)
  if [ -f "$STAMP_DIR/ok-$fp" ] && { [ "$(id -u)" != "0" ] || id postgres >/dev/null 2>&1; }; then
    local tools_ok=yes
    for t in $(tools); do "$t" check >/dev/null 2>&1 || { tools_ok=no; break; }; done
    [ "$tools_ok" = yes ] && return 0
  fi

  local -a missing=() pkgs=()
  for i in "${!N_NAME[@]}"; do
    probe "$i"
    [ "$P_STATUS" = ok ] && continue
    local what="${N_NAME[$i]}"
    case "$P_STATUS" in
      old) what+=" ($P_VERSION found at $P_PATH, ${N_MIN[$i]}+ needed)" ;;
      broken) what+=" ($P_PATH fails: $P_VERSION)" ;;
      *) [ "${N_MIN[$i]}" != "-" ] && [ -n "${N_MIN[$i]}" ] && what+=" ${N_MIN[$i]}+" ;;
    esac
    missing+=("$i|$what")
    local p; local -a ps
    IFS=, read -ra ps <<<"${N_PKGS[$i]}"
    for p in "${ps[@]}"; do p=$(trim "$p"); [ -n "$p" ] && [[ " ${pkgs[*]} " != *" $p "* ]] && pkgs+=("$p"); done
  done

  if [ "${#missing[@]}" -gt 0 ]; then
    if ! is_debian; then
      local names=(); for m in "${missing[@]}"; do names+=("${m#*|}"); done
      say "missing: $(IFS=,; echo "${names[*]}" | sed 's/,/, /g'). This is not Debian/Ubuntu: install them with your package manager (Debian's packages: ${pkgs[*]}), check with: make doctor"
      exit 1
    fi
    say "installing what is missing, with apt-get:"
    for m in "${missing[@]}"; do
      i="${m%%|*}"
      printf 'setup:   %-40s <- %-28s %s\n' "${m#*|}" "${N_PKGS[$i]//,/ }" "${N_WHY[$i]}"
    done
    apt_install "${pkgs[@]}"
    local still=()
    for m in "${missing[@]}"; do
      i="${m%%|*}"; probe "$i"
      [ "$P_STATUS" = ok ] || still+=("${N_NAME[$i]} ($P_STATUS${P_VERSION:+ $P_VERSION})")
    done
    if [ "${#still[@]}" -gt 0 ]; then say "still missing after apt-get: ${still[*]}; see make doctor"; exit 1; fi
    say "installed: ${pkgs[*]} (${SECONDS} s)"
  fi
  postgres_user

  mkdir -p "$AIMIS_BIN"
  for t in $(tools); do
    "$t" check >/dev/null 2>&1 && continue
    say "installing $(basename "$t" .sh) into $AIMIS_BIN ($(tool_why "$t"))"
    "$t" install || { say "$(basename "$t" .sh): install failed"; exit 1; }
    "$t" check >/dev/null 2>&1 || { say "$(basename "$t" .sh): still missing after install"; exit 1; }
  done

  mkdir -p "$STAMP_DIR"
  touch "$STAMP_DIR/ok-$(fingerprint)"
}

doctor() {
  read_list
  local i t bad=() line
  printf '%-13s %-8s %-12s %-44s %s\n' prerequisite status version "found at" "why"
  for i in "${!N_NAME[@]}"; do
    probe "$i"
    local st="$P_STATUS" hint=""
    case "$st" in
      ok) ;;
      old) st="TOO-OLD"; hint=" (needs ${N_MIN[$i]}+; Debian: ${N_PKGS[$i]//,/ })"; bad+=("${N_NAME[$i]}") ;;
      broken) st="BROKEN"; hint=" (Debian: ${N_PKGS[$i]//,/ })"; bad+=("${N_NAME[$i]}") ;;
      missing) st="MISSING"; local o; o=$(override_of "${N_NAME[$i]}")
               P_PATH="not found: ${o:-${N_PROBE[$i]%% *}}"
               hint=" (Debian: ${N_PKGS[$i]//,/ })"; bad+=("${N_NAME[$i]}") ;;
    esac
    printf '%-13s %-8s %-12s %-44s %s%s\n' "${N_NAME[$i]}" "$st" "${P_VERSION:--}" "$P_PATH" "${N_WHY[$i]}" "$hint"
  done
  for t in $(tools); do
    local name; name=$(basename "$t" .sh)
    if line=$("$t" check 2>/dev/null); then
      printf '%-13s %-8s %-12s %-44s %s\n' "$name" ok "${line#* }" "${line%% *}" "$(tool_why "$t") (tools.d)"
    else
      printf '%-13s %-8s %-12s %-44s %s\n' "$name" MISSING - "not in $AIMIS_BIN" "$(tool_why "$t") (tools.d)"
      bad+=("$name")
    fi
  done
  if [ "$(id -u)" = "0" ]; then
    if id postgres >/dev/null 2>&1; then
      printf '%-13s %-8s %-12s %-44s %s\n' postgres-user ok - "$(getent passwd postgres | cut -d: -f6)" "as root, the local PostgreSQL runs as this user"
    else
      printf '%-13s %-8s %-12s %-44s %s\n' postgres-user MISSING - "no user postgres" "as root, the local PostgreSQL runs as this user"
      bad+=(postgres-user)
    fi
  fi
  # What the first `make up` creates (not machine prerequisites; listed so a slow first run is explained).
  local root; root="$(cd "$HERE/../.." && pwd)"
  local venv="created" jars
  ls "$root"/.venv/.installed-* >/dev/null 2>&1 || venv="not yet (make install, ~1 min)"
  jars=$(ls -d "$AIMIS_CACHE"/kafka-*/.complete 2>/dev/null | head -1 || true)
  printf '%-13s %s\n' ".venv" "$venv"
  printf '%-13s %s\n' "kafka jars" "${jars:+$(dirname "$jars")}"
  [ -n "$jars" ] || printf '%-13s %s\n' "" "not yet (make jars: Maven downloads them into $AIMIS_CACHE, ~1 min)"
  if [ "${#bad[@]}" -gt 0 ]; then
    echo "missing: ${bad[*]} — \`make up\` or \`make test\` installs them (deploy/setup/install.sh)"
    return 1
  fi
  echo "all prerequisites found"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  doctor) doctor ;;
  *) echo "usage: install.sh [ensure|doctor]" >&2; exit 2 ;;
esac
