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
# The ACL rules every celerykit Redis shares (their reasons: src/celerykit/share/redis/README.md).
sed -e "s/@USER@/$user/" -e "s/@PASSWORD_SHA256@/$hash/" /etc/redis/users.acl.in >/run/redis/users.acl
chown redis:redis /run/redis/users.acl
# Checked by the stack's init (CELERYKIT_REDIS_MAXMEMORY); empty is the kit's default, no limit.
exec setpriv --reuid=redis --regid=redis --init-groups redis-server /etc/redis/celerykit.conf \
  --maxmemory "${CELERYKIT_REDIS_MAXMEMORY:-0}" "$@"
