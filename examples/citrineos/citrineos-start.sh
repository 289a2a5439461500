#!/bin/sh
# Start CitrineOS 1.8.3 with room for the demo's chargers.
#
# The image's built-in docker configuration (Server/dist/config/envs/docker.js) caps the charger
# websockets of a tenant with `maxConnectionsPerTenant`; at 1, the second simulated station would
# be turned away. The cap is raised to CITRINEOS_MAX_CONNECTIONS_PER_TENANT, then the image's own
# entrypoint runs unchanged.
set -eu

APP_DIR=/usr/local/apps/citrineos
CONFIG="$APP_DIR/Server/dist/config/envs/docker.js"
LIMIT="${CITRINEOS_MAX_CONNECTIONS_PER_TENANT:-100}"

case "$LIMIT" in
  ''|*[!0-9]*) echo "citrineos-start: CITRINEOS_MAX_CONNECTIONS_PER_TENANT must be a whole number, got '$LIMIT'" >&2; exit 1 ;;
esac

if [ -f "$CONFIG" ] && grep -q 'maxConnectionsPerTenant' "$CONFIG"; then
  sed -i -E "s/maxConnectionsPerTenant: *[0-9]+/maxConnectionsPerTenant: $LIMIT/" "$CONFIG"
  echo "citrineos-start: maxConnectionsPerTenant set to $LIMIT"
fi
# The local file store (BOOTSTRAP_CITRINEOS_FILE_ACCESS_LOCAL_DEFAULT_FILE_PATH) must exist.
mkdir -p /data "$APP_DIR/Server/data" 2>/dev/null || true

exec "$APP_DIR/entrypoint.sh" "$@"
