#!/usr/bin/env bash
# Fetch the block lists that datatrove 0.10.1's URLFilter uses ("integrated lists"), and the Public
# Suffix List snapshot that tldextract 5.4.0 falls back to, from the pinned wheels on PyPI, into a
# cache directory. Nothing else is downloaded: datatrove itself never downloads these lists, they
# ship inside its wheel (datatrove/assets/), and URLFilter only untars them locally.
#
#   tests/fetch_url_lists.sh            # -> ${GRIST_URL_LISTS_DIR:-~/.cache/grist/url-lists}
#
# Layout written (idempotent; a complete, verified directory is reused):
#   $dir/datatrove-0.10.1/url_filterblacklistsv0_3_0.tar.gz   the tarball as shipped (18.2 MB)
#   $dir/datatrove-0.10.1/domains                             its member `domains` (123.6 MB, 4,558,940 lines)
#   $dir/datatrove-0.10.1/urls                                its member `urls` (1.06 MB, 19,587 lines)
#   $dir/datatrove-0.10.1/{banned_words,banned_subwords,soft_banned_words}.txt
#   $dir/tldextract-5.4.0/public_suffix_list.dat              tldextract/.tld_set_snapshot (PSL 2025-04-07)
#   $dir/SHA256SUMS                                           sha256 of every file above
#
# Every file is checked against the sha256 below, so a changed upstream wheel cannot slip in.
# Env: GRIST_URL_LISTS_DIR, PYTHON (default: the parity venv's python if present, else python3).
set -euo pipefail

dir="${GRIST_URL_LISTS_DIR:-$HOME/.cache/grist/url-lists}"
venv_py="${GRIST_PARITY_VENV:-$HOME/.cache/grist/parity-venv}/bin/python"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"; elif [[ -x "$venv_py" ]]; then py="$venv_py"; else py=python3; fi

DATATROVE_WHEEL=datatrove-0.10.1-py3-none-any.whl
DATATROVE_WHEEL_SHA256=b0846fc28482b25c9dbeaa09445066ff68266b58d762e9344c64fe5f6d92d14c
TLDEXTRACT_WHEEL=tldextract-5.4.0-py3-none-any.whl
TLDEXTRACT_WHEEL_SHA256=7f02aed30bd3b6ad5717192eb859a39b20aafc7caf3917d9cf6cb00a58efb34f

expected_sums() {
    cat <<'EOF'
b37eefe1f3103dfa46b21b3f407b8b23cec2958ea22028700e6cc44d80f55e9e  datatrove-0.10.1/url_filterblacklistsv0_3_0.tar.gz
774cc3b6567998658c9705376fb6f3c439fe425a4643324a6396085d55c037ca  datatrove-0.10.1/domains
e3c2fd3df042dfc5d0e53a0eb56d29cf0f3fdc3fc5b8253361b4f34deaee8bb1  datatrove-0.10.1/urls
7aae5109ccc4d8357167168fa3a91331fa2fafd8eb8cc9c38cc9147c2610fab0  datatrove-0.10.1/banned_words.txt
4770445cd8d2b16495efde88bc4efc3a520bdc0f3137d14d85cd3d89b194a232  datatrove-0.10.1/banned_subwords.txt
e5043030accca33b0e368a693997576beea4c58279da641bff40b4e02281b063  datatrove-0.10.1/soft_banned_words.txt
b69315c085d53972724b8f2df111ffc329b0c84fe0a47d62c8c91655cc774a38  tldextract-5.4.0/public_suffix_list.dat
EOF
}

if [[ -f "$dir/SHA256SUMS" ]] && cmp -s <(expected_sums) "$dir/SHA256SUMS" \
    && (cd "$dir" && sha256sum --quiet -c SHA256SUMS); then
    echo "url lists already in $dir"
    exit 0
fi

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

"$py" -m pip --disable-pip-version-check -q download --no-deps --only-binary=:all: \
    -d "$tmp" datatrove==0.10.1 tldextract==5.4.0
echo "$DATATROVE_WHEEL_SHA256  $tmp/$DATATROVE_WHEEL" | sha256sum --quiet -c
echo "$TLDEXTRACT_WHEEL_SHA256  $tmp/$TLDEXTRACT_WHEEL" | sha256sum --quiet -c

"$py" - "$tmp" <<'PY'
import os, sys, tarfile, zipfile
tmp = sys.argv[1]
dt = os.path.join(tmp, "out", "datatrove-0.10.1")
tx = os.path.join(tmp, "out", "tldextract-5.4.0")
os.makedirs(dt)
os.makedirs(tx)
with zipfile.ZipFile(os.path.join(tmp, "datatrove-0.10.1-py3-none-any.whl")) as z:
    for name in ("url_filterblacklistsv0_3_0.tar.gz", "banned_words.txt", "banned_subwords.txt", "soft_banned_words.txt"):
        with open(os.path.join(dt, name), "wb") as f:
            f.write(z.read(f"datatrove/assets/{name}"))
with tarfile.open(os.path.join(dt, "url_filterblacklistsv0_3_0.tar.gz"), "r:gz") as t:
    members = sorted(m.name for m in t.getmembers())
    assert members == ["domains", "urls"], members
    for name in members:
        with open(os.path.join(dt, name), "wb") as f:
            f.write(t.extractfile(name).read())
with zipfile.ZipFile(os.path.join(tmp, "tldextract-5.4.0-py3-none-any.whl")) as z:
    with open(os.path.join(tx, "public_suffix_list.dat"), "wb") as f:
        f.write(z.read("tldextract/.tld_set_snapshot"))
PY

(cd "$tmp/out" && expected_sums | sha256sum --quiet -c)
rm -rf "$dir/datatrove-0.10.1" "$dir/tldextract-5.4.0"
mv "$tmp/out/datatrove-0.10.1" "$tmp/out/tldextract-5.4.0" "$dir/"
expected_sums >"$dir/SHA256SUMS"
(cd "$dir" && ls -l datatrove-0.10.1 tldextract-5.4.0)
echo "url lists written to $dir"
