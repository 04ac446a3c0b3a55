#!/usr/bin/env bash
# why: the Helm chart's tests (helm lint, helm template), built from its Go module at a pinned version
# helm into ~/.cache/aimis/bin (AIMIS_CACHE moves it). Idempotent: does nothing when that binary
# already reports the pinned version.
#   helm.sh check     exit 0 and print "<path> <version>" when the pinned helm is there (setup's contract)
#   helm.sh install   build it when missing; helm.sh (no verb): the same, then print its path
set -euo pipefail

HELM_VERSION="${AIMIS_HELM_VERSION:-v3.22.0}"
BIN_DIR="${AIMIS_CACHE:-$HOME/.cache/aimis}/bin"
HELM="$BIN_DIR/helm"

have_pinned() {
    [ -x "$HELM" ] && [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]
}

if [ "${1:-}" = check ]; then
    have_pinned || exit 1
    echo "$HELM $HELM_VERSION"
    exit 0
fi

if ! have_pinned; then
    if ! command -v go >/dev/null 2>&1; then
        echo "helm.sh: Go is needed to build helm $HELM_VERSION (apt-get install golang-go)" >&2
        exit 1
    fi
    mkdir -p "$BIN_DIR"
    GO=go
    # helm's go.mod needs a newer Go than Debian 12's 1.19. Go >= 1.21 fetches the toolchain it needs
    # from the module proxy by itself (GOTOOLCHAIN=auto); an older one is handed that same toolchain
    # module explicitly.
    if ! go env GOTOOLCHAIN 2>/dev/null | grep -q .; then
        arch="$(go env GOARCH)"
        echo "helm.sh: $(go version | cut -d' ' -f3) is too old to build helm; fetching the go1.24.4 toolchain module" >&2
        dir="$(cd "$(mktemp -d)" && go mod download -json "golang.org/toolchain@v0.0.1-go1.24.4.linux-$arch" |
               sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        # A module zip records no file modes: make the toolchain's programs executable, as the go
        # command itself does when it switches toolchains.
        find "$dir/bin" "$dir/pkg/tool" -type f -exec chmod u+x {} +
        GO="$dir/bin/go"
    fi
    echo "helm.sh: building helm $HELM_VERSION into $BIN_DIR (a few minutes, once)" >&2
    GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false CGO_ENABLED=0 "$GO" install \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    have_pinned || { echo "helm.sh: $HELM does not report $HELM_VERSION after the build" >&2; exit 1; }
fi
echo "$HELM"
