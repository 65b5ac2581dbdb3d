#!/bin/sh
# PONG from the Celery user: Redis is up, loaded its data and accepts the stack's credentials
# (over TLS, checked against the stack's CA, when the stack runs Redis with TLS).
case "${CELERYKIT_REDIS_TLS:-false}" in
  [Tt][Rr][Uu][Ee]) export CELERYKIT_REDIS_CLI_TLS="--tls --cacert /run/redis/ca.crt -h redis" ;;
esac
REDISCLI_AUTH=$(cat "${CELERYKIT_REDIS_PASSWORD_FILE}") \
  exec sh -c 'redis-cli ${CELERYKIT_REDIS_CLI_TLS:-} --no-auth-warning --user "${CELERYKIT_REDIS_USER:-celery}" ping | grep -qx PONG'
