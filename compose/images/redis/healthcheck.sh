#!/bin/sh
# PONG from the Celery user: Redis is up, loaded its data and accepts the stack's credentials.
REDISCLI_AUTH=$(cat "${CELERYKIT_REDIS_PASSWORD_FILE}") \
  exec sh -c 'redis-cli --no-auth-warning --user "${CELERYKIT_REDIS_USER:-celery}" ping | grep -qx PONG'
