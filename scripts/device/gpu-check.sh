#!/usr/bin/env bash
# The checks that need an NVIDIA GPU machine, in one run (a lent device, or any GPU host):
# the hardware probe, a training step under the task sandbox, a GPU job through a node and two
# workers (then the node's and a worker's /metrics, GPU use from NVML), and `bench data` on
# that machine's cores. Usage, from the repository root:
#   scripts/device/gpu-check.sh GRIDWORK_BINARY OUT_DIR [BENCH_MIB]
# Each step prints a "== step" header and goes on when a step fails. BENCH_MIB 0 skips the bench.
set -u
GW=$(realpath "$1"); OUT=$2; MIB=${3:-1024}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
step() { echo; echo "== $*"; }

step facts
nproc; uname -r; cat /sys/kernel/security/lsm 2>/dev/null; echo
nvidia-smi -L 2>&1 | head -4
ls -l /dev/nvidia* 2>&1 | head
for c in python3 docker rsync; do printf '%s: %s\n' "$c" "$(command -v $c || echo missing)"; done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
PY=$(command -v python3)

step probe
"$GW" probe
"$GW" probe --json > "$OUT/probe.json"; echo "exit $?"

step "bench data ($MIB MiB, twice)"
[ "$MIB" -gt 0 ] && {
if ! command -v rsync >/dev/null && [ -d .dev/debs ]; then
  mkdir -p /tmp/r && for f in .dev/debs/*.deb; do dpkg -x "$f" /tmp/r; done
  mkdir -p /tmp/rbin && printf '#!/bin/sh\nLD_LIBRARY_PATH=/tmp/r/usr/lib/x86_64-linux-gnu exec /tmp/r/usr/bin/rsync "$@"\n' > /tmp/rbin/rsync
  chmod +x /tmp/rbin/rsync && export PATH=$PATH:/tmp/rbin
fi
rsync --version | head -1
for run in 1 2; do
  "$GW" bench data --size-mib "$MIB" --dir /tmp/gwbench --json > "$OUT/bench$run.json" 2>/dev/null
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(" ".join(f"{k}={round(d[k], 2)}" for k in ["push_mb_s", "pull_mb_s", "pull_cached_mb_s", "cp_mb_s", "rsync_copy_mb_s", "push_cpu_s_per_gb", "pull_cpu_s_per_gb", "repush_wire_bytes", "rsync_repush_wire_bytes"]))' "$OUT/bench$run.json"
  rm -rf /tmp/gwbench
done
}

step "training step, plain"
T=/tmp/gwtask; rm -rf $T; mkdir -p $T/outputs $T/tmp
(cd $T && GRIDWORK_OUTPUTS=$T/outputs timeout 120 "$PY" "$HERE/train_step.py"); echo "exit $?"
step "training step, the worker's environment, no sandbox"
rm -rf $T; mkdir -p $T/outputs $T/tmp
(cd $T && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$T TMPDIR=$T/tmp LANG=C.UTF-8 \
  GRIDWORK_OUTPUTS=$T/outputs timeout 120 "$PY" "$HERE/train_step.py" 2>&1 | tail -5); echo "exit ${PIPESTATUS[0]}"
step "training step, the worker's environment, in the sandbox"
rm -rf $T; mkdir -p $T/outputs $T/tmp
(cd $T && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$T TMPDIR=$T/tmp LANG=C.UTF-8 \
  GRIDWORK_OUTPUTS=$T/outputs timeout 120 "$GW" sandbox-exec --work $T -- "$PY" "$HERE/train_step.py" 2>&1 | tail -3)
step "training step, the worker's environment, in the sandbox with the GPU devices, from a shell"
DEVICES=$(for d in /dev/nvidia* /dev/dri /dev/kfd; do [ -e "$d" ] && printf -- '--gpu-device %s ' "$d"; done)
echo "$DEVICES"
rm -rf $T; mkdir -p $T/outputs $T/tmp
(cd $T && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$T TMPDIR=$T/tmp LANG=C.UTF-8 \
  GRIDWORK_OUTPUTS=$T/outputs timeout 120 "$GW" sandbox-exec $DEVICES --work $T -- sh -c "$PY $HERE/train_step.py; echo exit \$?" 2>&1 | tail -3)
cat $T/outputs/*
ls $T/outputs
step "training step in the sandbox with the GPU devices, its work directory outside /tmp (as a worker's is: its own /tmp, no network, the host's sockets under /run covered)"
T2="$PWD/.gwtask-home"; rm -rf "$T2"; mkdir -p "$T2/outputs" "$T2/tmp"
(cd "$T2" && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$T2" LANG=C.UTF-8 \
  GRIDWORK_OUTPUTS="$T2/outputs" timeout 120 "$GW" sandbox-exec $DEVICES --work "$T2" -- sh -c "echo TMPDIR=\$TMPDIR; ls /sys/class/net; ls -la /run/nvidia-persistenced 2>&1 | tail -2; $PY $HERE/train_step.py; echo exit \$?" 2>&1 | tail -8)
cat "$T2"/outputs/*; rm -rf "$T2"

step "training step with the GPU devices in a pid namespace of its own, held by a memory group of 8 GiB (as a worker runs a job with min_memory_mib = 8192)"
V1=$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' /proc/self/cgroup)
if [ -n "$V1" ]; then G=/sys/fs/cgroup/memory$V1/gwcheck; LIM=memory.limit_in_bytes
else G=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/gwcheck; LIM=memory.max; fi
if mkdir -p "$G" 2>/dev/null && echo $((8 << 30)) > "$G/$LIM"; then
  T3="$PWD/.gwtask-mem"; rm -rf "$T3"; mkdir -p "$T3/outputs" "$T3/tmp"
  (cd "$T3" && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$T3" LANG=C.UTF-8 \
    GRIDWORK_OUTPUTS="$T3/outputs" timeout 120 "$GW" sandbox-exec $DEVICES --cgroup "$G" --work "$T3" -- sh -c "ls /proc | grep -c '^[0-9]'; cat /proc/self/cgroup | head -3; $PY $HERE/train_step.py; echo exit \$?" 2>&1 | tail -8)
  rm -rf "$T3"; rmdir "$G" 2>/dev/null
else
  echo "no memory group could be made here ($G)"
fi

step "GPUs in a container, as the container executor asks for them (where the engine has the nvidia runtime)"
if command -v docker >/dev/null && docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  # An image of the host's sh and the libraries it needs (no registry): the NVIDIA toolkit
  # mounts nvidia-smi and the driver's libraries in; `--gpus all` is the device request the
  # executor sends (driver nvidia, every GPU, capabilities gpu, compute, utility).
  R=/tmp/gwroot; rm -rf $R; mkdir -p $R/bin $R/tmp
  cp /bin/sh $R/bin/; for l in $(ldd /bin/sh | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname $l)"; cp "$l" "$R$l"; done
  tar -C $R -cf - . | docker import - gridwork-gpu-check:1 >/dev/null
  docker run --rm --gpus all --user 65534:65534 --read-only --network none --cap-drop ALL \
    --security-opt no-new-privileges gridwork-gpu-check:1 sh -c 'nvidia-smi -L; echo exit $?'
  docker rmi gridwork-gpu-check:1 >/dev/null
else
  echo "no docker, or no nvidia runtime: skipped"
fi

step "a GPU job through a node and two workers"
export GRIDWORK_HOME=/tmp/gwhome GRIDWORK_NODE=http://127.0.0.1:7651 GRIDWORK_PASSPHRASE= GRIDWORK_LOG=warn
rm -rf $GRIDWORK_HOME /tmp/gwjob; mkdir -p /tmp/gwjob/train
cp "$HERE/train_step.py" /tmp/gwjob/train/
"$GW" node --dev --listen 127.0.0.1:7651 --block-interval-ms 50 --data-dir /tmp/gwhome/data > "$OUT/node.log" 2>&1 &
NODE=$!
sleep 2
"$GW" --key dev1 worker --price 0.01 --poll-ms 200 --metrics-listen 127.0.0.1:7661 > "$OUT/worker1.log" 2>&1 &
W1=$!
"$GW" --key dev2 worker --price 0.01 --poll-ms 200 > "$OUT/worker2.log" 2>&1 &
W2=$!
cat > /tmp/gwjob/job.toml <<TOML
deposit = "auto"
[data]
inputs = ["./train"]
[program]
command = "sh"
args = ["-c", "$PY \$GRIDWORK_INPUTS/train/train_step.py"]
[instructions]
items = 2
chunk = 1
task_deadline_s = 180
council_size = 1
[instructions.requirements]
gpu_vendor = "nvidia"
min_gpus = 1
min_vram_mib = 40000
[payment]
kind = "per_task_second"
max_price = "0.1"
[equivalence]
kind = "numeric_tolerance"
abs = 0.000001
rel = 0.0001
[halting]
first_bids = 2
deadline_s = 5
TOML
sleep 3
JOB=$("$GW" --key dev0 job submit /tmp/gwjob/job.toml --json | tee "$OUT/submit.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"])')
echo "job $JOB"
timeout 150 "$GW" job logs "$JOB" --task 0 --follow; echo "follow exit $?"
"$GW" job status "$JOB"
"$GW" --key dev0 job results "$JOB" --out /tmp/gwresults; echo "results exit $?"
find /tmp/gwresults -type f -exec sh -c 'echo "$1: $(cat "$1")"' _ {} \;
"$GW" job logs "$JOB" --task 0 --stream stderr | tail -5
# Metrics after a GPU job: the worker's GPU families come from NVML (one sample per GPU).
for m in worker1=http://127.0.0.1:7661/metrics node=http://127.0.0.1:7651/metrics; do
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "${m#*=}" > "$OUT/${m%%=*}.metrics"
done
grep -E '^gridwork_worker_(nvml_available|gpu_|tasks_finished_total)' "$OUT/worker1.metrics"
grep -E '^gridwork_(auctions_closed|tasks_settled)_total' "$OUT/node.metrics"
command -v promtool >/dev/null && for f in worker1 node; do promtool check metrics < "$OUT/$f.metrics" && echo "promtool: $f ok"; done
kill -9 $W1 $W2 $NODE
for w in worker1 worker2; do echo "-- $w.log: $(wc -c < $OUT/$w.log) bytes"; head -c 3000 $OUT/$w.log; echo ...; tail -c 3000 $OUT/$w.log; done
for w in worker1 worker2; do tail -c 200000 $OUT/$w.log > $OUT/$w.tail; rm $OUT/$w.log; done

