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
# TLS (CELERYKIT_REDIS_TLS, checked by the stack's init, which made the certificate): the plain
# port closed, the TLS one in its place; the key handed to the redis user, readable by it alone.
case "${CELERYKIT_REDIS_TLS:-false}" in
  [Tt][Rr][Uu][Ee])
    install -o redis -g redis -m 0400 /run/celerykit/secrets/redis-server.key /run/redis/tls.key
    install -o redis -g redis -m 0444 /run/celerykit/secrets/redis-server.crt /run/redis/tls.crt
    install -o redis -g redis -m 0444 /run/celerykit/secrets/redis-ca.crt /run/redis/ca.crt
    set -- --port 0 --tls-port 6379 --tls-cert-file /run/redis/tls.crt --tls-key-file /run/redis/tls.key \
      --tls-ca-cert-file /run/redis/ca.crt --tls-auth-clients no "$@"
    ;;
esac
# Checked by the stack's init (CELERYKIT_REDIS_MAXMEMORY); empty is the kit's default, no limit.
exec setpriv --reuid=redis --regid=redis --init-groups redis-server /etc/redis/celerykit.conf \
  --maxmemory "${CELERYKIT_REDIS_MAXMEMORY:-0}" "$@"
