# shellcheck shell=bash
# Shared helpers for scripts/stack: output, Java lookup, process and port checks.
# Sourced by scripts/stack, which sets `set -euo pipefail` and the STACK_* variables.

say() {
    printf 'stack: %s\n' "$*"
}

die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

# Prints the feature release (17, 21, 25, ...) of the given java binary, or nothing.
java_major_version() {
    local java_bin=$1
    "$java_bin" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' |
        head -n 1
}

# Prints the first java binary whose feature release is at least $1.
# Candidates, in order: $2/bin/java when $2 is set, $JAVA_HOME/bin/java, java on PATH,
# then each /usr/lib/jvm/*/bin/java.
find_java() {
    local minimum=$1 preferred_home=${2:-}
    local candidates=() candidate major

    if [[ -n $preferred_home ]]; then
        candidates+=("$preferred_home/bin/java")
    fi
    if [[ -n ${JAVA_HOME:-} ]]; then
        candidates+=("$JAVA_HOME/bin/java")
    fi
    if command -v java >/dev/null 2>&1; then
        candidates+=("$(command -v java)")
    fi
    local jvm_dir
    for jvm_dir in /usr/lib/jvm/*/; do
        candidates+=("${jvm_dir%/}/bin/java")
    done

    for candidate in "${candidates[@]}"; do
        [[ -x $candidate ]] || continue
        major=$(java_major_version "$candidate")
        if [[ -n $major && $major -ge $minimum ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

require_command() {
    local name=$1 hint=$2
    command -v "$name" >/dev/null 2>&1 || die "$name not found on PATH. $hint"
}

# Succeeds when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    local port=$1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

require_port_free() {
    local port=$1 service=$2 variable=$3
    if port_open "$port"; then
        die "port 127.0.0.1:$port is already in use by a process that this script did not start; stop it or set $variable to start $service on another port"
    fi
}

# The tag that every Java process of this stack carries on its command line, so that
# `down` only signals a pid from a pid file when it is still that service of this stack.
service_tag() {
    printf -- '-Dleadgen.stack.service=%s@%s' "$1" "$STACK_DIR"
}

pid_file() {
    printf '%s/run/%s.pid\n' "$STACK_DIR" "$1"
}

# Prints the pid of the running service $1, or fails when it is not running.
# A pid file whose process has exited or now belongs to another program is removed.
service_pid() {
    local service=$1 file pid
    file=$(pid_file "$service")
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$(service_tag "$service")"; then
        printf '%s\n' "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

# Starts "$@" in a new session with stdout and stderr appended to $log, and writes its
# pid to the pid file of $service. The child writes its own pid before it execs, so the
# pid is right even when setsid has to fork. The child does not inherit the lock on file
# descriptor 9, because a service holding it would block every later command.
start_detached() {
    local service=$1 log=$2
    shift 2
    local file
    file=$(pid_file "$service")
    rm -f "$file"
    mkdir -p "$(dirname "$file")" "$(dirname "$log")"
    # shellcheck disable=SC2016 # $$ and $@ expand in the child bash, not here.
    setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' start-detached "$file" "$@" \
        >>"$log" 2>&1 </dev/null 9>&- &

    local waited=0
    while [[ ! -s $file ]]; do
        ((waited < 50)) || die "$service did not write its pid file $file within 5 s; see $log"
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Sends SIGTERM to service $1 and waits up to $2 seconds for it to exit, then sends SIGKILL.
stop_service() {
    local service=$1 grace_seconds=$2 pid
    if ! pid=$(service_pid "$service"); then
        say "$service is not running"
        return 0
    fi

    say "stopping $service (pid $pid)..."
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace_seconds))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "$service (pid $pid) still running after ${grace_seconds} s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            local kill_deadline=$((SECONDS + 10))
            while kill -0 "$pid" 2>/dev/null; do
                ((SECONDS < kill_deadline)) || die "$service (pid $pid) did not exit after SIGKILL"
                sleep 0.2
            done
            break
        fi
        sleep 0.2
    done
    rm -f "$(pid_file "$service")"
    say "$service stopped"
}

# Serializes commands that start or stop services, so that two concurrent 'up' calls
# cannot both start a broker. File descriptor 9 holds the lock until the script exits.
acquire_lock() {
    mkdir -p "$STACK_DIR/run"
    exec 9>"$STACK_DIR/run/lock"
    flock -w 600 9 ||
        die "another scripts/stack command has held $STACK_DIR/run/lock for 600 s; check for a hung scripts/stack process"
}

# Prints the last lines of a log file to stderr, for start failures.
show_log_tail() {
    local log=$1
    [[ -f $log ]] || return 0
    printf -- '--- last 30 lines of %s ---\n' "$log" >&2
    tail -n 30 "$log" >&2
    printf -- '---\n' >&2
}
