#!/bin/sh
# Refresh the vendored TradingView Lightweight Charts™ from its npm package.
#
#   docs/refresh_lightweight_charts.sh            # the version pinned below
#   docs/refresh_lightweight_charts.sh 5.2.2      # another one: then update the README
#
# Needs npm (the registry client; it checks the tarball's integrity).  Never part of
# `make run` or `make test`: the page serves the committed copy, and no CDN.
# It writes, under ticker/static/vendor/:
#   lightweight-charts.standalone.production.js   the library (window.LightweightCharts)
#   lightweight-charts.LICENSE.txt                its Apache-2.0 licence, from the package
#   lightweight-charts.NOTICE.txt                 its NOTICE, from the git tag (npm ships none)
#   lightweight-charts.VERSION                    version, tarball and integrity
set -eu

VERSION="${1:-5.2.1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/ticker/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "lightweight-charts@$VERSION" >/dev/null
tar xzf "lightweight-charts-$VERSION.tgz"
got="$(sed -n 's/^ *"version": "\(.*\)",$/\1/p' package/package.json | head -n 1)"
[ "$got" = "$VERSION" ] || { echo "asked for $VERSION, the package says $got" >&2; exit 1; }
grep -q '"license": "Apache-2.0"' package/package.json \
    || { echo "lightweight-charts $VERSION is no longer Apache-2.0: read its licence first" >&2; exit 1; }

mkdir -p "$DEST"
cp package/dist/lightweight-charts.standalone.production.js "$DEST/"
cp package/LICENSE "$DEST/lightweight-charts.LICENSE.txt"
# The attribution notice the licence asks us to show lives in the repository, not the package.
if curl -fsSL --max-time 20 -o NOTICE \
    "https://raw.githubusercontent.com/tradingview/lightweight-charts/v$VERSION/NOTICE"; then
    cp NOTICE "$DEST/lightweight-charts.NOTICE.txt"
elif [ -s "$DEST/lightweight-charts.NOTICE.txt" ]; then
    echo "could not fetch NOTICE for v$VERSION: kept the committed one; check it" >&2
else
    echo "could not fetch NOTICE for v$VERSION, and none is committed" >&2
    exit 1
fi
{
    echo "lightweight-charts $VERSION"
    echo "licence: Apache-2.0 (lightweight-charts.LICENSE.txt, lightweight-charts.NOTICE.txt)"
    echo "tarball: $(npm view "lightweight-charts@$VERSION" dist.tarball)"
    echo "integrity: $(npm view "lightweight-charts@$VERSION" dist.integrity)"
    echo "file: package/dist/lightweight-charts.standalone.production.js"
    echo "refresh: docs/refresh_lightweight_charts.sh $VERSION"
} >"$DEST/lightweight-charts.VERSION"
head -n 4 "$DEST/lightweight-charts.standalone.production.js" | sed -n 3p
echo "vendored lightweight-charts $VERSION into $DEST"
