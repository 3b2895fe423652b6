# shellcheck shell=bash
# Apicurio Registry for scripts/stack, serving the Confluent-compatible (ccompat) API.
# Storage is Apicurio's default in-memory H2 database, so every start begins empty.
# Sourced by scripts/stack after common.sh.

APICURIO_VERSION=3.3.3
APICURIO_ARTIFACT="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all"
# The 3.3.3 classes are compiled for Java 21 (class file version 65).
APICURIO_MIN_JAVA=21

APICURIO_HOME="$STACK_CACHE/apicurio-registry-$APICURIO_VERSION"
REGISTRY_DIR="$STACK_DIR/registry"
REGISTRY_LOG="$STACK_DIR/logs/registry.log"
REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"

REGISTRY_JAVA_BIN=""

# Sets REGISTRY_JAVA_BIN to a Java runtime that can run this Apicurio version.
registry_resolve_java() {
    if [[ -n $REGISTRY_JAVA_BIN ]]; then
        return 0
    fi
    REGISTRY_JAVA_BIN=$(find_java "$APICURIO_MIN_JAVA" "${LEADGEN_REGISTRY_JAVA_HOME:-}") ||
        die "Apicurio Registry $APICURIO_VERSION needs Java $APICURIO_MIN_JAVA or newer and none was found in LEADGEN_REGISTRY_JAVA_HOME, JAVA_HOME, PATH or /usr/lib/jvm; install a JDK $APICURIO_MIN_JAVA+ and set LEADGEN_REGISTRY_JAVA_HOME to it"
}

# Fetches the Apicurio distribution from Maven Central and unpacks it into
# $APICURIO_HOME, once per version.
registry_download() {
    if [[ -f $APICURIO_HOME/.complete ]]; then
        return 0
    fi
    require_command mvn "Install Maven (apt-get install maven)."
    say "downloading Apicurio Registry $APICURIO_VERSION (about 160 MB) from Maven Central..."

    local partial="$APICURIO_HOME.partial"
    rm -rf "$APICURIO_HOME" "$partial"
    mkdir -p "$partial/download"
    # The plugin version is pinned because, outside a project, Maven 3.8.7 falls back to
    # maven-dependency-plugin 2.8.
    local maven_log="$STACK_CACHE/apicurio-registry-$APICURIO_VERSION.maven.log"
    if ! (cd "$partial" && mvn -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
        -Dartifact="$APICURIO_ARTIFACT" -DoutputDirectory="$partial/download") >"$maven_log" 2>&1; then
        show_log_tail "$maven_log"
        die "Maven failed to fetch $APICURIO_ARTIFACT (output in $maven_log); rerun to retry"
    fi

    say "unpacking Apicurio Registry $APICURIO_VERSION..."
    tar -xzf "$partial/download/"*.tar.gz -C "$partial"
    rm -rf "$partial/download"
    mv "$partial" "$APICURIO_HOME"
    touch "$APICURIO_HOME/.complete"
}

# Prints the arguments that start the Quarkus application in $APICURIO_HOME. The 3.3.3
# tarball has the fast-jar layout without its quarkus-run.jar launcher, whose manifest
# only names the boot classpath and QuarkusEntryPoint, so both are given here instead.
registry_launch_arguments() {
    if [[ -f $APICURIO_HOME/quarkus-run.jar ]]; then
        printf '%s\n' -jar "$APICURIO_HOME/quarkus-run.jar"
    elif [[ -d $APICURIO_HOME/lib/boot ]]; then
        printf '%s\n' -cp "$APICURIO_HOME/lib/boot/*" io.quarkus.bootstrap.runner.QuarkusEntryPoint
    else
        die "no Quarkus launcher found in $APICURIO_HOME; delete that folder so that the next start unpacks it again"
    fi
}

registry_responds() {
    curl -fsS -o /dev/null --max-time 5 "$REGISTRY_URL/subjects" 2>/dev/null
}

# Sets the global compatibility level to BACKWARD through the ccompat API. Apicurio stores
# it as the global COMPATIBILITY rule, and without a rule it accepts incompatible schemas.
registry_set_backward_compatibility() {
    local response
    if ! response=$(curl -fsS --max-time 10 -X PUT \
        -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
        --data '{"compatibility":"BACKWARD"}' "$REGISTRY_URL/config" 2>&1); then
        die "setting the global compatibility level on $REGISTRY_URL/config failed: $response; see $REGISTRY_LOG"
    fi
    response=$(curl -fsS --max-time 10 "$REGISTRY_URL/config")
    if [[ $response != *'"BACKWARD"'* ]]; then
        die "the registry returned $response from $REGISTRY_URL/config after the compatibility level was set to BACKWARD"
    fi
}

# Starts the registry without waiting for it to respond, which registry_wait_ready does.
registry_launch() {
    if service_pid registry >/dev/null; then
        say "registry is already running (pid $(service_pid registry))"
        return 0
    fi
    require_command curl "Install curl (apt-get install curl)."
    require_port_free "$REGISTRY_PORT" registry LEADGEN_REGISTRY_PORT
    require_port_free "$REGISTRY_MANAGEMENT_PORT" "the registry's management interface" LEADGEN_REGISTRY_MANAGEMENT_PORT

    registry_resolve_java
    registry_download
    mkdir -p "$REGISTRY_DIR/tmp" "$(dirname "$REGISTRY_LOG")"

    local launch_arguments=()
    mapfile -t launch_arguments < <(registry_launch_arguments)
    ((${#launch_arguments[@]} > 0)) || exit 1

    say "starting registry (Apicurio $APICURIO_VERSION) on $REGISTRY_URL, log $REGISTRY_LOG..."
    start_detached registry "$REGISTRY_LOG" "$REGISTRY_JAVA_BIN" "$(service_tag registry)" \
        -Xms128m -Xmx512m -Djava.awt.headless=true \
        -Djava.io.tmpdir="$REGISTRY_DIR/tmp" -Dvertx.cacheDirBase="$REGISTRY_DIR/tmp/vertx" \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
        -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
        "${launch_arguments[@]}"
}

# Returns once the ccompat API responds and the global BACKWARD compatibility rule is set.
registry_wait_ready() {
    local deadline=$((SECONDS + STACK_TIMEOUT)) pid
    while :; do
        if ! pid=$(service_pid registry); then
            show_log_tail "$REGISTRY_LOG"
            die "registry exited during startup; see $REGISTRY_LOG"
        fi
        if registry_responds; then
            registry_set_backward_compatibility
            say "registry ready on $REGISTRY_URL (pid $pid), global compatibility BACKWARD"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$REGISTRY_LOG"
            die "timed out after ${STACK_TIMEOUT} s waiting for HTTP 200 from $REGISTRY_URL/subjects (registry pid $pid). It is still running: see $REGISTRY_LOG, and stop it with scripts/stack down"
        fi
        sleep 1
    done
}

registry_stop() {
    stop_service registry 30
}
