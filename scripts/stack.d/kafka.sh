# shellcheck shell=bash
# Apache Kafka for scripts/stack: one KRaft node that is both broker and controller.
# Maven Central has no Kafka distribution tarball, so the broker's classpath is built from
# the kafka_2.13, kafka-server, kafka-tools and kafka-storage jars and their dependencies.
# Sourced by scripts/stack after common.sh.

KAFKA_VERSION=4.1.1
# log4j-slf4j2-impl needs the slf4j 2 API, but kafka_2.13 4.1.1 declares slf4j-api 1.7.36,
# which Maven would pick without the explicit slf4j-api dependency in the generated pom.
KAFKA_SLF4J_VERSION=2.0.17
KAFKA_LOG4J_VERSION=2.24.3
KAFKA_MIN_JAVA=17

KAFKA_HOME="$STACK_CACHE/kafka-$KAFKA_VERSION"
KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_DATA_DIR="$KAFKA_DIR/data"
KAFKA_LOG="$STACK_DIR/logs/kafka.log"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

KAFKA_JAVA_BIN=""

# Sets KAFKA_JAVA_BIN to a Java runtime that can run this Kafka version.
kafka_resolve_java() {
    if [[ -n $KAFKA_JAVA_BIN ]]; then
        return 0
    fi
    KAFKA_JAVA_BIN=$(find_java "$KAFKA_MIN_JAVA" "${LEADGEN_KAFKA_JAVA_HOME:-}") ||
        die "Kafka $KAFKA_VERSION needs Java $KAFKA_MIN_JAVA or newer and none was found; install openjdk-17-jre-headless or set LEADGEN_KAFKA_JAVA_HOME to a JDK $KAFKA_MIN_JAVA+"
}

# Resolves the Kafka jars from Maven Central into $KAFKA_HOME/lib, once per version.
kafka_download() {
    if [[ -f $KAFKA_HOME/lib/.complete ]]; then
        return 0
    fi
    require_command mvn "Install Maven (apt-get install maven)."
    say "downloading Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME/lib..."

    mkdir -p "$KAFKA_HOME"
    cat >"$KAFKA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.leadgen-connector</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-server</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-storage</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$KAFKA_SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$KAFKA_LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$KAFKA_LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF

    rm -rf "${KAFKA_HOME:?}/lib" "$KAFKA_HOME/lib.partial"
    local maven_log="$KAFKA_HOME/maven.log"
    if ! (cd "$KAFKA_HOME" && mvn -B dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory=lib.partial) >"$maven_log" 2>&1; then
        show_log_tail "$maven_log"
        die "Maven failed to resolve the Kafka $KAFKA_VERSION jars (pom $KAFKA_HOME/pom.xml, output in $maven_log); rerun to retry"
    fi
    mv "$KAFKA_HOME/lib.partial" "$KAFKA_HOME/lib"
    touch "$KAFKA_HOME/lib/.complete"
}

# Runs a Kafka command-line class, such as org.apache.kafka.tools.TopicCommand, on the
# broker's classpath with tool logging at WARN.
kafka_tool() {
    kafka_resolve_java
    "$KAFKA_JAVA_BIN" "${KAFKA_TOOL_JVM_OPTIONS[@]}" -cp "$KAFKA_HOME/lib/*" "$@"
}

# Small heap and quick JIT, because the tools run for seconds.
KAFKA_TOOL_JVM_OPTIONS=(
    -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
    -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties"
)

kafka_write_config() {
    mkdir -p "$KAFKA_DIR"

    cat >"$KAFKA_DIR/server.properties" <<EOF
# scripts/stack writes this file on each start, so edits here are lost.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR

# One node, so every internal topic has one replica.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# 4 partitions instead of the default 50, because each one adds files and startup work.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4

group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.cleaner.enable=true
EOF

    cat >"$KAFKA_DIR/log4j2.properties" <<'EOF'
# Broker logging. The broker's stdout is appended to logs/kafka.log by scripts/stack.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF

    kafka_write_tool_config
}

# Writes the log4j2 configuration that sends the command-line tools' WARN and ERROR
# lines to stderr.
kafka_write_tool_config() {
    mkdir -p "$KAFKA_DIR"
    cat >"$KAFKA_DIR/tools-log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
EOF
}

# Prints a KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as
# org.apache.kafka.common.Uuid writes them. Kafka's own generator skips ids that start
# with '-' because command-line parsers take them for options, so this does too.
kafka_random_cluster_id() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        if [[ $id != -* ]]; then
            printf '%s\n' "$id"
            return 0
        fi
    done
}

kafka_format_storage() {
    local cluster_id
    cluster_id=$(kafka_random_cluster_id)
    say "formatting Kafka storage in $KAFKA_DATA_DIR (cluster id $cluster_id)..."
    if ! kafka_tool kafka.tools.StorageTool format --standalone \
        --cluster-id "$cluster_id" --config "$KAFKA_DIR/server.properties" \
        >>"$KAFKA_LOG" 2>&1; then
        show_log_tail "$KAFKA_LOG"
        die "formatting Kafka storage failed; see $KAFKA_LOG"
    fi
}

# Succeeds when the broker returns its topic list, which needs a metadata response.
kafka_responds() {
    kafka_resolve_java
    timeout 30 "$KAFKA_JAVA_BIN" "${KAFKA_TOOL_JVM_OPTIONS[@]}" -cp "$KAFKA_HOME/lib/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" --list \
        >/dev/null 2>&1
}

# Starts the broker on the data in $KAFKA_DATA_DIR, formatting it first when it is empty.
# Returns without waiting for the broker to respond, which kafka_wait_ready does.
kafka_launch() {
    if service_pid kafka >/dev/null; then
        say "kafka is already running (pid $(service_pid kafka))"
        return 0
    fi
    require_port_free "$KAFKA_PORT" kafka LEADGEN_KAFKA_PORT
    require_port_free "$KAFKA_CONTROLLER_PORT" "the Kafka controller" LEADGEN_KAFKA_CONTROLLER_PORT

    kafka_resolve_java
    kafka_download
    kafka_write_config
    mkdir -p "$KAFKA_DATA_DIR" "$(dirname "$KAFKA_LOG")"
    if [[ ! -f $KAFKA_DATA_DIR/meta.properties ]]; then
        kafka_format_storage
    fi

    say "starting kafka $KAFKA_VERSION on $KAFKA_BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT), log $KAFKA_LOG..."
    start_detached kafka "$KAFKA_LOG" "$KAFKA_JAVA_BIN" "$(service_tag kafka)" \
        -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

kafka_wait_ready() {
    local deadline=$((SECONDS + STACK_TIMEOUT)) pid
    while :; do
        if ! pid=$(service_pid kafka); then
            show_log_tail "$KAFKA_LOG"
            die "kafka exited during startup; see $KAFKA_LOG"
        fi
        if port_open "$KAFKA_PORT" && kafka_responds; then
            say "kafka ready on $KAFKA_BOOTSTRAP (pid $pid)"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$KAFKA_LOG"
            die "timed out after ${STACK_TIMEOUT} s waiting for a metadata response from kafka (pid $pid) on $KAFKA_BOOTSTRAP. It is still running: see $KAFKA_LOG, and stop it with scripts/stack down"
        fi
        sleep 1
    done
}

kafka_stop() {
    stop_service kafka 60
}
