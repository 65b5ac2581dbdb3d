"""Filters that hand work to the kit's package, so compose and the roles share one implementation."""

from __future__ import annotations

from ansible_collections.celerykit.platform.plugins.plugin_utils.kit import proxy, tls


class FilterModule:
    def filters(self):
        return {
            # {{ {'server_name': ..., ...} | celerykit.platform.nginx_site }} -> the site's nginx config
            "nginx_site": lambda settings: proxy.render_site(**settings),
            # {{ server_name | celerykit.platform.self_signed_names(hostname, addresses) }}
            "self_signed_names": tls.self_signed_names,
            "self_signed_common_name": tls.common_name,
        }
