# Shared settings of the example; every value can be overridden from the environment.
: "${TITAN_HOME:=/tmp/titan-demo}"
: "${TITAN_REDIS_PORT:=6390}"
: "${TITAN_HTTP_PORT:=3000}"
here=$(cd "$(dirname "$0")" && pwd)
example=$(dirname "$here")
# One port per service: the gateway (titan-phase1) answers on TITAN_HTTP_PORT as in the runbook.
service_port() {
  case $1 in
    titan-phase1) echo "$TITAN_HTTP_PORT" ;;
    titan-brain) echo $((TITAN_HTTP_PORT + 1)) ;;
    titan-shared) echo $((TITAN_HTTP_PORT + 2)) ;;
    titan-phase2) echo $((TITAN_HTTP_PORT + 3)) ;;
    titan-phase3) echo $((TITAN_HTTP_PORT + 4)) ;;
    *) echo "unknown service $1" >&2; return 1 ;;
  esac
}
SERVICES="titan-brain titan-shared titan-phase1 titan-phase2 titan-phase3"
