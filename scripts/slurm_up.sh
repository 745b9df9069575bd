#!/usr/bin/env bash
# Bring up (or tear down) a single-node SLURM cluster on Debian 12, as root.
#
#   scripts/slurm_up.sh          # install if needed, configure, start, wait for idle
#   scripts/slurm_up.sh --down   # cancel all jobs, stop slurmctld/slurmd
#
# Idempotent: if the node already answers sinfo as idle/mixed/allocated it exits 0.
# No systemd, no cgroups, no accounting: daemons are started directly as root.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # daemons live in sbin; root shells may lack it

NODE="$(hostname -s)"
CLUSTER="${SLURM_CLUSTER_NAME:-grokpipe}"
PARTITION="debug"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
SPOOL_DIR=/var/spool/slurm
RUN_DIR=/run/slurm
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
WAIT_S="${SLURM_UP_WAIT_S:-60}"
# Credential lifetime; a requeued job only becomes eligible again after it
# expires (Slurm default 120 s), so keep it short for a local test cluster.
CRED_EXPIRE="${SLURM_CRED_EXPIRE:-30}"

SUDO=""
if [[ $EUID -ne 0 ]]; then SUDO="sudo"; fi

log() { echo "[slurm_up] $*"; }
die() { echo "[slurm_up] ERROR: $*" >&2; exit 1; }

# Print the tail of both daemon logs so a failure is diagnosable from CI output.
show_logs() {
    echo "[slurm_up] logs: $CTLD_LOG $SLURMD_LOG (munge: /var/log/munge/munged.log)" >&2
    for f in "$CTLD_LOG" "$SLURMD_LOG"; do
        if $SUDO test -f "$f"; then
            echo "----- tail $f -----" >&2
            $SUDO tail -n 25 "$f" >&2 || true
        fi
    done
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true; }

cluster_ok() {
    command -v sinfo >/dev/null 2>&1 || return 1
    # sinfo retries for ~10 s when no controller listens; skip it if none runs.
    if command -v pgrep >/dev/null 2>&1; then pgrep -x slurmctld >/dev/null || return 1; fi
    [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]
}

# True if the pidfile names a live process called $2 (guards against stale
# pidfiles whose pid was reused after a crash/reboot).
pid_alive() {  # $1=pidfile $2=name
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

stop_daemon() {  # $1=pidfile $2=name
    local pidfile="$1" name="$2" pid
    pid_alive "$pidfile" "$name" || return 0
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    $SUDO kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do $SUDO kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    $SUDO kill -9 "$pid" 2>/dev/null || true
}

do_down() {
    if command -v scancel >/dev/null 2>&1 && pid_alive "$CTLD_PID" slurmctld; then
        log "cancelling all jobs"
        $SUDO scancel --quiet --partition="$PARTITION" 2>/dev/null || true
        sleep 1
    fi
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    log "slurm daemons stopped (munged left running)"
}

if [[ "${1:-}" == "--down" ]]; then do_down; exit 0; fi
[[ $# -eq 0 ]] || die "usage: $0 [--down]"

if cluster_ok; then
    log "already up: node $NODE $(node_state)"
    exit 0
fi

if [[ -n "$SUDO" ]] && ! command -v sudo >/dev/null 2>&1; then
    die "not root and sudo not found: run as root"
fi

# --- 1. packages ------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1; then
    pkgs=(slurm-wlm munge)
    apt_install() {
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
    }
    log "installing ${pkgs[*]}"
    # Only hit the network for lists if they are missing or the install fails.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt_install; then
        $SUDO apt-get update
        apt_install
    fi
fi

# --- 2. munge ---------------------------------------------------------------
$SUDO mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
if ! $SUDO test -s /etc/munge/munge.key; then
    log "creating /etc/munge/munge.key"
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$SUDO chown munge:munge /etc/munge/munge.key /etc/munge /var/log/munge /var/lib/munge /run/munge
$SUDO chmod 400 /etc/munge/munge.key
$SUDO chmod 700 /etc/munge /var/log/munge /var/lib/munge
$SUDO chmod 755 /run/munge  # clients (sbatch as any user) must reach the socket
# We run munged as root (no systemd here) while its dirs/key stay munge-owned
# for the packaged service; --force turns those ownership checks into warnings.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    if pid_alive /run/munge/munged.pid munged; then
        die "munged is running but 'munge -n | unmunge' fails (see /var/log/munge/munged.log)"
    fi
    log "starting munged"
    $SUDO munged --force
    for _ in $(seq 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
    munge -n </dev/null | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
fi

# --- 3. slurm.conf ----------------------------------------------------------
CPUS="$(nproc)"
# Base RealMemory on total RAM (stable across runs, slurmd compares against it)
# minus 10% (at least 512 MB) headroom; too high a value drains the node.
MEM_MB="$(free -m | awk '/^Mem:/ {print $2}')"
HEADROOM=$(( MEM_MB / 10 > 512 ? MEM_MB / 10 : 512 ))
REAL_MEM=$(( MEM_MB - HEADROOM ))
(( REAL_MEM > 0 )) || die "could not determine memory (free -m: ${MEM_MB} MB)"
# Without a default, CR_Core_Memory gives each job the whole node's memory,
# which would serialise jobs; split it evenly per CPU instead.
DEF_MEM_PER_CPU=$(( REAL_MEM / CPUS ))

$SUDO mkdir -p "$CONF_DIR" "$LOG_DIR" "$SPOOL_DIR/ctld" "$SPOOL_DIR/d" "$RUN_DIR"

new_conf="$(cat <<EOF
# Generated by scripts/slurm_up.sh -- single-node test cluster, no cgroups/accounting.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$CRED_EXPIRE
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
PreemptType=preempt/none
JobRequeue=1
ReturnToService=2
MinJobAge=5
MailProg=/bin/true
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
DefMemPerCPU=$DEF_MEM_PER_CPU
NodeName=$NODE CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)"
conf_changed=0
if ! [[ -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    log "writing $CONF (CPUs=$CPUS RealMemory=$REAL_MEM)"
    printf '%s\n' "$new_conf" | $SUDO tee "$CONF" >/dev/null
    conf_changed=1
fi

# --- 4. daemons -------------------------------------------------------------
# Daemons started against an older config must be restarted to pick it up.
if (( conf_changed )); then
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi
if ! pid_alive "$CTLD_PID" slurmctld; then
    log "starting slurmctld"
    $SUDO slurmctld || { show_logs; die "slurmctld failed to start"; }
fi
if ! pid_alive "$SLURMD_PID" slurmd; then
    log "starting slurmd"
    $SUDO slurmd || { show_logs; die "slurmd failed to start"; }
fi

# --- 5. wait for the node ---------------------------------------------------
state=""
deadline=$(( SECONDS + WAIT_S ))
while (( SECONDS < deadline )); do
    state="$(node_state)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*)
            # A stale down/drain from an earlier run does not clear by itself.
            $SUDO scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done

if [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]; then
    log "up: cluster=$CLUSTER node=$NODE state=$state partition=$PARTITION cpus=$CPUS mem=${REAL_MEM}M"
    exit 0
fi
show_logs
sinfo -N -l >&2 2>/dev/null || true
die "cluster did not come up within ${WAIT_S}s (node $NODE state: '${state:-no answer}')"
