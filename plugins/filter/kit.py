"""Filters that hand work to the kit's package, so compose and the roles share one implementation."""

from __future__ import annotations

from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import inventory, monitoring, pools, proxy, tls


class FilterModule:
    def filters(self):
        return {
            # {{ {'server_name': ..., ...} | celerykit.platform.nginx_site }} -> the site's nginx config
            "nginx_site": lambda settings: proxy.render_site(**settings),
            # {{ server_name | celerykit.platform.self_signed_names(hostname, addresses) }}
            "self_signed_names": tls.self_signed_names,
            "self_signed_common_name": tls.common_name,
            # {{ {'exporter': [...], 'flower': [...], ...} | celerykit.platform.prometheus_config }}
            "prometheus_config": lambda settings: monitoring.prometheus_config(**settings),
            # {{ {'smarthost': ..., 'mail_to': [...], ...} | celerykit.platform.alertmanager_config(header) }}
            "alertmanager_config": monitoring.alertmanager_config,
            # {{ server_name | celerykit.platform.external_url(https_port, prefix) }}
            "external_url": monitoring.external_url,
            # {{ celerykit_worker_pools | celerykit.platform.worker_nodes(ansible_facts.nodename) }}
            # -> ['high@host=high_priority', ...], as `celerykit pools` takes them
            "worker_nodes": pools.format_nodes,
            # {{ groups['celery_workers'] | map('extract', hostvars) | celerykit.platform.deployment_pools }}
            "deployment_pools": inventory.deployment_pools,
            # {{ pools | celerykit.platform.watch_environment }} -> CELERYKIT_POOLS and each pool's queues
            "watch_environment": monitoring.watch_environment,
            # {{ user | celerykit.platform.htpasswd_line(password) }} -> user:{SSHA}...
            "htpasswd_line": proxy.htpasswd_line,
            # {{ celerykit_redis_tls | celerykit.platform.redis_tls(groups) }} -> true/false
            "redis_tls": inventory.redis_tls,
            # {{ groups | celerykit.platform.redis_clients }} -> the Celery services' hosts
            "redis_clients": inventory.redis_clients,
        }
