#!/bin/sh
# Write the ACL file from the secret (as a SHA-256 hash: no plain password on disk or in argv),
# then drop to the redis user.
set -eu
user=${CELERYKIT_REDIS_USER:-celery}
password_file=${CELERYKIT_REDIS_PASSWORD_FILE:?CELERYKIT_REDIS_PASSWORD_FILE must be set}
if [ ! -s "$password_file" ]; then
  echo "redis: CELERYKIT_REDIS_PASSWORD_FILE: secret file $password_file is missing or empty" >&2
  exit 78
fi
hash=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$password_file" | tr -d '\n' | sha256sum | cut -d' ' -f1)
install -d -o redis -g redis -m 0700 /run/redis
umask 077
# The Celery user may do what a broker client does, but not administer, flush or reconfigure:
# -@admin drops CONFIG, DEBUG, MODULE, SHUTDOWN...; -@dangerous drops FLUSHALL, FLUSHDB, KEYS...
# The default user is off (no password, no login: unauthenticated clients get NOAUTH) but keeps
# its permissions. Redis (7.0.15 in Debian 12; fixed upstream by redis/redis#14545) replays the
# AOF as the default user and re-checks that user's ACL at each EXEC: with a permission-less
# default user, transactions in the AOF (kombu's unacked bookkeeping, requeues and acks among
# them) are silently dropped on restart and requeued tasks vanish (redis/redis#14541).
printf 'user default off resetpass ~* &* +@all\nuser %s on #%s ~* &* +@all -@admin -@dangerous\n' \
  "$user" "$hash" >/run/redis/users.acl
chown redis:redis /run/redis/users.acl
exec setpriv --reuid=redis --regid=redis --init-groups redis-server /etc/redis/celerykit.conf "$@"
