# shellcheck shell=bash
# Build prerequisites shared by scripts/test and scripts/demo: the Debian packages that
# building the crate needs, and the Java, Maven and cargo checks. Sourced by a script that
# defines say and die.

# Debian packages for the rdkafka crate's cmake-build and ssl features, plus curl, which
# scripts/stack uses to check the registry.
BUILD_PACKAGES=(build-essential cmake pkg-config libssl-dev libcurl4-openssl-dev curl)

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Installs the missing packages among "$@" with apt-get, updating the package lists first.
apt_install_missing() {
    local missing=() package
    for package in "$@"; do
        package_installed "$package" || missing+=("$package")
    done
    ((${#missing[@]} > 0)) || return 0

    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ${missing[*]}, and apt-get is not available to install them; install them with your package manager"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 ||
            die "missing packages ${missing[*]}; run as root or install sudo, or install them yourself"
        sudo=(sudo)
    fi

    say "installing missing packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

java_major_version() {
    java -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' |
        head -n 1
}

check_tools() {
    if ! command -v java >/dev/null 2>&1; then
        apt_install_missing openjdk-17-jre-headless
    fi
    local java_major
    java_major=$(java_major_version)
    [[ -n $java_major && $java_major -ge 17 ]] ||
        die "Kafka needs Java 17 or newer, but 'java' on PATH is version ${java_major:-unknown}; install openjdk-17-jre-headless or put a newer java first on PATH"

    if ! command -v mvn >/dev/null 2>&1; then
        apt_install_missing maven
    fi

    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found on PATH; install Rust with rustup (https://rustup.rs), then open a new shell or run: source \"\$HOME/.cargo/env\""
}


# Installs the Debian packages that building the crate needs, when missing.
install_build_prerequisites() {
    apt_install_missing "${BUILD_PACKAGES[@]}"
}
