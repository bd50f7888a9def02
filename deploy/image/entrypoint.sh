#!/bin/sh
# Entry point of the Skillquest image (see Dockerfile and deploy/README.md).
#
#   <service>      progress | points | leaderboards | credits | badges | gateway:
#                  nameko run --config /app/deploy/config.yml services.<service>.service
#   topics         the one-shot topic job (python -m deploy.kafka_topics [options])
#   healthcheck [healthz|readyz]
#                  GET /healthz (default) or /readyz of the service in this container
#   skillquest …   the operator CLI (dead letters: skillquest dlq list points)
#   anything else  run as given (e.g. sh)
#
# Configuration is environment -> deploy/config.yml -> service, as everywhere. In a
# container a service listens on 0.0.0.0 and its usual port unless WEB_SERVER_ADDRESS says
# otherwise. A variable X may instead be given as a file named by X_FILE (a mounted secret):
# JWT_SECRET_FILE, MONGODB_URI_FILE.
set -eu

CONFIG="${SKILLQUEST_CONFIG:-/app/deploy/config.yml}"

# The port each service listens on (the same as `make run`: deploy/local/launcher.py).
service_port() {
    case "$1" in
        progress) echo 8101 ;;
        points) echo 8102 ;;
        leaderboards) echo 8103 ;;
        credits) echo 8104 ;;
        badges) echo 8105 ;;
        gateway) echo "${GATEWAY_PORT:-8080}" ;;
        *) return 1 ;;
    esac
}

# X_FILE -> X, for the secrets the services read from the environment.
load_file_variables() {
    for name in JWT_SECRET MONGODB_URI; do
        file_var="${name}_FILE"
        eval "file=\${${file_var}:-}"
        eval "value=\${${name}:-}"
        if [ -n "$file" ]; then
            if [ -n "$value" ]; then
                echo "both $name and $file_var are set: give one" >&2
                exit 64
            fi
            if [ ! -r "$file" ]; then
                echo "$file_var=$file cannot be read" >&2
                exit 66
            fi
            # The whole file, less a trailing newline.
            value="$(cat "$file")"
            export "$name=$value"
        fi
        unset "$file_var"
    done
}

# The service this container runs, from the command lines of its processes (PID 1 after
# `exec`, or the child of an init process).
running_service() {
    cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n' \
        | sed -n 's/^services\.\([a-z_]*\)\.service$/\1/p' | head -n 1
}

healthcheck() {
    case "${1:-healthz}" in
        healthz | readyz) path="${1:-healthz}" ;;
        *) echo "healthcheck: give healthz or readyz" >&2; exit 64 ;;
    esac
    address="${WEB_SERVER_ADDRESS:-}"
    if [ -z "$address" ]; then
        service="$(running_service)"
        port="$(service_port "$service")" || { echo "no service runs here" >&2; exit 1; }
        address="127.0.0.1:$port"
    fi
    host="${address%:*}"
    port="${address##*:}"
    case "$host" in "" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;; esac
    exec python -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:
    print(f"{sys.argv[1]}: {error}", file=sys.stderr)
    sys.exit(1)
' "http://$host:$port/$path"
}

if [ "$#" -eq 0 ]; then
    echo "usage: <progress|points|leaderboards|credits|badges|gateway|topics|healthcheck>" >&2
    exit 64
fi

command="$1"
shift
case "$command" in
    progress | points | leaderboards | credits | badges | gateway)
        load_file_variables
        port="$(service_port "$command")"
        export WEB_SERVER_ADDRESS="${WEB_SERVER_ADDRESS:-0.0.0.0:$port}"
        exec nameko run --config "$CONFIG" "services.$command.service" "$@"
        ;;
    topics)
        exec python -m deploy.kafka_topics "$@"
        ;;
    healthcheck)
        healthcheck "$@"
        ;;
    skillquest)
        exec skillquest "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
