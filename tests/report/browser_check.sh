#!/usr/bin/env bash
# Renders grist reports in a real browser: Chromium from Debian's packages, headless.
#
#   tests/report/browser_check.sh [OUT_DIR] REPORT.html...
#
# For each report, at 1280 px and 800 px wide:
#   - loads it through tests/report/harness.html and records load time, page height, horizontal
#     overflow, charts laid out without a size, chart labels cut off at a chart's edge, the
#     smallest chart label, and scripts on the page (a report has none, so no script error can
#     happen); Chromium's console log (--enable-logging) must hold no error from the page;
#   - writes a full-page screenshot, OUT_DIR/<name>-<width>.png, for a person to look at.
# Fails when a report is 5 MB or more, takes 2 s or more to load, overflows the width, has a
# chart without a size, a cut or unreadably small chart label, or logs a console error. Prints one JSON line per render.
set -euo pipefail
out=${1:?usage: browser_check.sh OUT_DIR REPORT.html...}
shift
[ $# -gt 0 ] || { echo "no report given" >&2; exit 2; }
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v chromium >/dev/null; then
  echo "installing chromium from Debian's packages" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi

browser() {
  # A fresh profile each time, so no state carries between renders; Chromium's exit status
  # (124 when it timed out) is returned.
  local profile rc=0
  profile=$(mktemp -d)
  timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --no-first-run --disable-extensions "$@" || rc=$?
  rm -rf "$profile"
  return $rc
}

status=0
for report in "$@"; do
  path=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
  name=$(basename "$(dirname "$path")")-$(basename "$path" .html)
  url=$(python3 -c 'import sys, urllib.parse; print("file://" + urllib.parse.quote(sys.argv[1]))' "$path")
  size=$(stat -c %s "$path")
  if [ "$size" -ge 5000000 ]; then
    echo "FAIL $report: $size bytes, not under 5 MB" >&2; status=1
  fi
  for width in 1280 800; do
    log=$(mktemp)
    harness=$(python3 -c 'import sys, urllib.parse; print(sys.argv[1] + "?width=" + sys.argv[2] + "&report=" + urllib.parse.quote(sys.argv[3], safe=""))' \
      "file://$here/harness.html" "$width" "$url")
    dom=$(browser --allow-file-access-from-files --enable-logging=stderr --v=0 \
      --virtual-time-budget=10000 --window-size="$width,900" --dump-dom "$harness" 2>"$log") || true
    result=$(printf '%s' "$dom" | sed -n 's:.*<pre id="result">\(.*\)</pre>.*:\1:p' | sed 's/&quot;/"/g')
    # No result at all (Chromium failed or timed out) is a failure, reported as one.
    [ -n "$result" ] || result='{"error": "no result from the harness (Chromium failed or timed out)"}'
    errors=$(grep -E 'CONSOLE|Uncaught' "$log" | grep -v 'harness.html' || true)
    rm -f "$log"
    python3 -c 'import json, sys; print(json.dumps({"report": sys.argv[1], "bytes": int(sys.argv[2]), "result": json.loads(sys.argv[3])}))' \
      "$report" "$size" "$result"
    if [ -n "$errors" ]; then
      echo "FAIL $report at $width px: console errors:" >&2; echo "$errors" >&2; status=1
    fi
    python3 - "$result" "$report" "$width" <<'PY' || status=1
import json, sys
r, report, width = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
bad = []
if "error" in r: bad.append(r["error"])
else:
    if r["load_ms"] >= 2000: bad.append(f"loads in {r['load_ms']} ms, not under 2 s")
    if r["overflows"]: bad.append(f"{r['scroll_width']} px wide, wider than {width}")
    if r["charts_without_size"]: bad.append(f"{r['charts_without_size']} charts without a size")
    if r["chart_labels_cut"]: bad.append(f"{r['chart_labels_cut']} chart labels cut off")
    if r["scripts"]: bad.append(f"{r['scripts']} scripts")
    # A chart label's box below 10 px high is text under about 8 px: too small to read.
    if (r["smallest_label_px"] or 99) < 10: bad.append(f"chart labels {r['smallest_label_px']} px high")
for b in bad: print(f"FAIL {report} at {width} px: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    height=$(python3 -c 'import json,sys; print(min(json.loads(sys.argv[1]).get("height", 900), 45000))' "$result" || echo 900)
    if ! browser --window-size="$width,$height" --screenshot="$out/$name-$width.png" "$url" 2>/dev/null; then
      echo "FAIL $report at $width px: no screenshot" >&2; status=1
    fi
  done
done
exit $status
