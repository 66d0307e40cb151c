#!/bin/sh
# Starts nats-server with the users of nats.conf: reads each user's password from its secret
# file ($JETMAIL_NATS_SECRETS_DIR/nats_<user>_password, /run/secrets by default) into the
# variable nats.conf names (JETMAIL_NATS_<USER>_PASSWORD), then runs nats-server with the
# arguments given. A password is never printed. JetStream's store is JETMAIL_NATS_STORE_DIR
# (default /data/jetstream).
#
# nats-server parses a variable's value as config: a password with other characters than
# letters, digits, `-` and `_`, or one starting with a digit, could be read as something else
# (a number, a comment...). Such a password is refused here rather than silently changed there.
set -eu
dir="${JETMAIL_NATS_SECRETS_DIR:-/run/secrets}"
for user in admin ingest sender monitor webui; do
  file="$dir/nats_${user}_password"
  if [ ! -r "$file" ]; then
    echo "nats-entrypoint: cannot read $file (the $user user's password)" >&2
    exit 1
  fi
  password=$(head -n 1 "$file" | tr -d '\r')
  if [ -z "$password" ] || [ -n "$(printf '%s' "$password" | tr -d 'A-Za-z0-9_-')" ]; then
    echo "nats-entrypoint: $file: a password is letters, digits, - and _ only (try: openssl rand -hex 24 | sed s/^/p/)" >&2
    exit 1
  fi
  case "$password" in
    [A-Za-z]*) ;;
    *)
      echo "nats-entrypoint: $file: a password starts with a letter (else it may be read as a number)" >&2
      exit 1
      ;;
  esac
  upper=$(echo "$user" | tr 'a-z' 'A-Z')
  export "JETMAIL_NATS_${upper}_PASSWORD=$password"
done
export JETMAIL_NATS_STORE_DIR="${JETMAIL_NATS_STORE_DIR:-/data/jetstream}"
exec "${NATS_SERVER_BIN:-nats-server}" "$@"
