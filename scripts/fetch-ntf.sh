#!/usr/bin/env bash
# Fetches the three path-star test sets of "The Pitfalls of Next-Token Prediction" (Bachmann &
# Nagarajan, 2024) into data/ntf/ and checks each file's SHA-256 against scripts/ntf.sha256.
#
#   scripts/fetch-ntf.sh              # download from the paper's repository, at a fixed commit
#   scripts/fetch-ntf.sh --from DIR   # copy from a local copy (CI points at one), same checks
#
# The files are the paper authors' data, not the lab's: their repository carries no licence, so
# the lab does not redistribute them; it fetches them, and refuses any byte that differs from the
# files it was tested on. Nothing is left under data/ntf/ unless every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."

REPO=gregorbachmann/Next-Token-Failures
COMMIT=b925a1ef7c97f4beb533fd88a843b83932ea0df1
URL="https://raw.githubusercontent.com/$REPO/$COMMIT/data/datasets/graphs"
DEST=data/ntf

from=""
case "${1:-}" in
    "") ;;
    --from) from="${2:?--from needs a directory}" ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
while read -r _ name; do
    if [ -n "$from" ]; then
        cp "$from/$name" "$tmp/$name" || { echo "error: $from/$name is missing" >&2; exit 1; }
    else
        curl --fail --silent --show-error --location --retry 3 -o "$tmp/$name" "$URL/$name" \
            || { echo "error: could not download $name from $REPO@${COMMIT:0:7}" >&2; exit 1; }
    fi
done < scripts/ntf.sha256
(cd "$tmp" && sha256sum --check --quiet "$OLDPWD/scripts/ntf.sha256") \
    || { echo "error: checksums differ from scripts/ntf.sha256: not the paper's files" >&2; exit 1; }
mkdir -p "$DEST"
while read -r _ name; do mv "$tmp/$name" "$DEST/$name"; done < scripts/ntf.sha256
echo "data/ntf: $(wc -l < scripts/ntf.sha256) NTF test sets, checksums verified (${REPO}@${COMMIT:0:7})"
