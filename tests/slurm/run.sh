#!/usr/bin/env bash
# A real Slurm run of grist's scheduler scripts, on this machine: installs Slurm and MUNGE from
# Debian's packages if needed, starts a one-node cluster (slurmctld + slurmd, the machine's CPUs,
# no cgroups, no accounting), submits the scripts of `grist plan PIPELINE --emit slurm` (one array
# job per phase, chained with --dependency=afterok), waits, and checks that every output and
# rejects file is byte-identical to a local `grist run` of the same pipeline. Then it does it
# again, cancelling one array task of the first phase while it runs (scancel), resubmitting the
# phases, and checks the output is still the same. Needs root (daemons, /etc/munge).
#
#   tests/slurm/run.sh [GRIST_BINARY] [PIPELINE]     (from the repository root)
#
# Defaults: target/release/grist under $CARGO_TARGET_DIR (or ./target), pipelines/fineweb-en.yaml.
# The pipeline must keep its files under runs/<name>/ (the script moves them per run). Takes
# about a minute on 2 cores with fineweb-en; not run in CI (root, daemons). Prints what it does;
# exits non-zero on any difference, or when jobs do not finish within 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
grist=$(realpath "${1:-${CARGO_TARGET_DIR:-$repo/target}/release/grist}")
pipeline=${2:-pipelines/fineweb-en.yaml}
[ -x "$grist" ] || { echo "no grist binary at $grist (cargo build --release)" >&2; exit 2; }
name=$(sed -n 's/^name: *//p' "$pipeline" | head -1)

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

work=$(mktemp -d /tmp/grist-slurm.XXXXXX)
conf="$work/conf"
mkdir -p "$conf" "$work/state" "$work/spool" "$work/log"
cleanup() {
  scancel --user=root 2>/dev/null || true
  [ -f "$work/slurmctld.pid" ] && kill "$(cat "$work/slurmctld.pid")" 2>/dev/null || true
  [ -f "$work/slurmd.pid" ] && kill "$(cat "$work/slurmd.pid")" 2>/dev/null || true
  [ -n "${munge_pid:-}" ] && kill "$munge_pid" 2>/dev/null || true
}
trap cleanup EXIT

# MUNGE, with a key of its own for this cluster.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  # In the foreground (-F), so the pid is munged's own and cleanup stops it.
  runuser -u munge -- /usr/sbin/munged -F --force &
  munge_pid=$!
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2/1024) - 512}' /proc/meminfo)
cat > "$conf/slurm.conf" <<CONF
ClusterName=grist
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MinJobAge=3600
# A phase whose predecessor failed is cancelled instead of pending forever.
SchedulerParameters=kill_invalid_depend
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf/slurm.conf"
/usr/sbin/slurmctld -c
/usr/sbin/slurmd
for _ in $(seq 100); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo -h -o %t | grep -q idle || { echo "the node did not come up:" >&2; tail -20 "$work"/log/*.log >&2; exit 1; }
echo "slurm up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"

# One copy of the pipeline per run, its runs/ paths moved under $work/<run>/.
copy() {
  python3 -c 'import sys; print(open(sys.argv[1]).read().replace("runs/", sys.argv[2] + "/"), end="")' \
    "$pipeline" "$work/$1" > "$work/$1.yaml"
  if grep -q 'runs/' "$work/$1.yaml"; then echo "$pipeline: a path was not moved" >&2; exit 1; fi
}

# Splits `plan --emit slurm` into one file per phase, in order; prints their paths.
scripts() {
  mkdir -p "$work/$1-scripts"
  "$grist" plan "$work/$1.yaml" --emit slurm --cpus 1 | python3 -c '
import re, sys
out, current, paths = sys.argv[1], None, []
for line in sys.stdin:
    m = re.match(r"# ---- (\S+\.sbatch) ", line)
    if m:
        current = open(f"{out}/{m.group(1)}", "w")
        paths.append(current.name)
    elif current is not None:
        current.write(line)
print("\n".join(paths))' "$work/$1-scripts"
}

# Submits the phases' scripts in order, each after the previous one (afterok); prints job ids.
submit() {
  local prev="" id
  while read -r script; do
    if [ -z "$prev" ]; then id=$(sbatch --parsable "$script"); else id=$(sbatch --parsable --dependency=afterok:"$prev" "$script"); fi
    echo "$id"; prev=$id
  done
}

deadline=$((SECONDS + 900))
# Waits until the jobs $@ are neither pending nor running, or the deadline passes.
wait_gone() {
  local list
  list=$(IFS=,; echo "$*")
  while [ -n "$(squeue -h -j "$list" 2>/dev/null)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "jobs still queued after 15 minutes" >&2; exit 1; }
    sleep 1
  done
}

# Waits until none of the jobs is pending or running; fails unless all completed.
wait_jobs() {
  local ids=("$@")
  wait_gone "${ids[@]}"
  local bad=0
  for id in "${ids[@]}"; do
    # One line per array task.
    states=$(scontrol -o show job "$id" | grep -o 'JobState=[A-Z_]*' | sort | uniq -c | tr '\n' ' ')
    echo "  job $id: $states"
    scontrol -o show job "$id" | grep -o 'JobState=[A-Z_]*' | grep -qv 'JobState=COMPLETED' && bad=1
  done
  return $bad
}

same_outputs() {
  local a=$1 b=$2 n=0
  while IFS= read -r f; do
    rel=${f#"$a"/}
    cmp -s "$f" "$b/$rel" || { echo "DIFFERENT: $rel" >&2; return 1; }
    n=$((n + 1))
  done < <(find "$a/out" "$a/rejects" -type f -name '*.parquet' 2>/dev/null | sort)
  local m
  m=$(find "$b/out" "$b/rejects" -type f -name '*.parquet' 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] && [ "$n" -eq "$m" ] || { echo "file counts differ or none: $n vs $m" >&2; return 1; }
  echo "  $n output and rejects files byte-identical"
}

export PATH="$(dirname "$grist"):$PATH"

echo "local run"
copy local
"$grist" -q run "$work/local.yaml"

echo "slurm run"
copy slurm
mkdir -p "$work/slurm/$name/slurm"
mapfile -t ids < <(scripts slurm | submit)
[ "${#ids[@]}" -gt 0 ] || { echo "nothing was submitted" >&2; exit 1; }
echo "  submitted ${#ids[@]} phase(s): ${ids[*]}"
wait_jobs "${ids[@]}"
same_outputs "$work/local/$name" "$work/slurm/$name"

echo "slurm run with a cancelled array task"
copy cancel
mkdir -p "$work/cancel/$name/slurm"
mapfile -t scripts_list < <(scripts cancel)
mapfile -t ids < <(printf '%s\n' "${scripts_list[@]}" | submit)
first=${ids[0]}
for _ in $(seq 300); do
  [[ "$(squeue -h -j "$first" -t RUNNING -o %i)" == *"${first}_0"* ]] && break
  sleep 0.1
done
echo "  cancelling ${first}_0 while it runs"
scancel "${first}_0"
# The phases after it never start (afterok); cancel them and resubmit everything.
sleep 1
scancel "${ids[@]}" 2>/dev/null || true
wait_gone "${ids[@]}"
scontrol -o show job "${first}" | grep -o 'JobId=[0-9_]* .*JobState=[A-Z]*' | sed 's/ .*JobState=/ /' | sed 's/^/  before resubmitting: /' || true
# No markers directory yet (nothing finished) is zero, not an error.
done_before=$( (find "$work/cancel/$name/markers" -name '*.json' 2>/dev/null || true) | wc -l)
total=$("$grist" plan "$work/cancel.yaml" --emit json | python3 -c 'import json,sys; print(sum(len(p["tasks"]) for p in json.load(sys.stdin)))')
echo "  complete before resubmitting: $done_before of $total tasks"
[ "$done_before" -lt "$total" ] || { echo "the cancel came too late to interrupt anything" >&2; exit 1; }
mapfile -t ids < <(printf '%s\n' "${scripts_list[@]}" | submit)
echo "  resubmitted ${#ids[@]} phase(s): ${ids[*]}"
wait_jobs "${ids[@]}"
same_outputs "$work/local/$name" "$work/cancel/$name"
echo "OK: Slurm runs equal the local run"
