#!/usr/bin/env bash
# why: the AsyncAPI project's own parser checks contracts/asyncapi.yaml in tests/contracts
# npm @asyncapi/parser at a pinned version in ~/.cache/aimis/node (AIMIS_CACHE moves it). Idempotent:
# does nothing when the pinned version is already there.
#   asyncapi.sh check     exit 0 and print "<folder> <version>" when it is there (setup's contract)
#   asyncapi.sh install   install it when missing; asyncapi.sh (no verb): the same, then print the
#                         node_modules folder to put on NODE_PATH
set -euo pipefail

PARSER_VERSION="${AIMIS_ASYNCAPI_PARSER_VERSION:-3.6.3}"
PREFIX="${AIMIS_CACHE:-$HOME/.cache/aimis}/node"
MODULES="$PREFIX/node_modules"

have_pinned() {
    [ -f "$MODULES/@asyncapi/parser/package.json" ] &&
        [ "$(node -p "require('$MODULES/@asyncapi/parser/package.json').version" 2>/dev/null)" = "$PARSER_VERSION" ]
}

if [ "${1:-}" = check ]; then
    have_pinned || exit 1
    echo "$MODULES/@asyncapi/parser $PARSER_VERSION"
    exit 0
fi

if ! have_pinned; then
    for tool in node npm; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "asyncapi.sh: $tool is needed to install @asyncapi/parser (apt-get install nodejs npm)" >&2
            exit 1
        }
    done
    mkdir -p "$PREFIX"
    [ -f "$PREFIX/package.json" ] || echo '{"name": "aimis-tools", "private": true}' >"$PREFIX/package.json"
    echo "asyncapi.sh: installing @asyncapi/parser $PARSER_VERSION into $PREFIX (once)" >&2
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error --save-exact \
        "@asyncapi/parser@$PARSER_VERSION" >&2
    have_pinned || { echo "asyncapi.sh: $MODULES has no @asyncapi/parser $PARSER_VERSION after npm install" >&2; exit 1; }
fi
echo "$MODULES"
