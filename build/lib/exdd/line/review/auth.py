"""Who is acting: the operator identity every verdict and rollback is recorded under.

``review.auth`` picks the mode: ``none`` (the typed name), ``secret`` (the typed name once
a shared secret matches) or ``header`` (the identity an authenticating reverse proxy puts
in a header, trusted only from a configured proxy address and/or with the proxy's own
shared secret).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping

from exdd.config import ReviewConfig
from exdd.errors import ConfigError, ExddError


class AccessDenied(ExddError):
    """No operator identity, or the configured authentication did not accept it."""


def _trusted_proxy(cfg: ReviewConfig, lowered: Mapping[str, str], peer: str | None,
                   environ: Mapping[str, str]) -> None:
    """AccessDenied unless the request comes from the authenticating proxy: a configured
    proxy address and/or the proxy's shared secret (at least one must be configured)."""
    if not cfg.trusted_proxies and not cfg.proxy_secret_env:
        raise ConfigError("review.auth is 'header' but neither review.trusted_proxies nor "
                          "review.proxy_secret_env is set: anyone could send the "
                          f"{cfg.auth_header} header")
    if cfg.trusted_proxies:
        try:
            address = ipaddress.ip_address((peer or "").strip())
        except ValueError:
            address = None
        if address is None or not any(
                address in ipaddress.ip_network(n, strict=False) for n in cfg.trusted_proxies):
            raise AccessDenied(f"request from {peer or 'an unknown address'}, not from a "
                               f"trusted proxy (review.trusted_proxies): {cfg.auth_header} "
                               "is ignored")
    if cfg.proxy_secret_env:
        expected = environ.get(cfg.proxy_secret_env)
        if not expected:
            raise ConfigError(f"review.proxy_secret_env: the environment variable "
                              f"{cfg.proxy_secret_env} is not set")
        sent = lowered.get(cfg.proxy_secret_header.lower()) or ""
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise AccessDenied(f"the proxy's {cfg.proxy_secret_header} is missing or wrong: "
                               f"{cfg.auth_header} is ignored")


def authorize(cfg: ReviewConfig, operator: str, headers: Mapping[str, str] | None = None,
              secret: str | None = None, environ: Mapping[str, str] = os.environ,
              peer: str | None = None) -> str:
    """The operator identity every action is recorded under, or AccessDenied.

    ``none``: the typed name. ``secret``: the typed name, once the shared secret (read
    from the env var named in the config) matches. ``header``: the identity the reverse
    proxy put in the configured header, trusted only from a configured proxy address
    (``peer`` is the connecting address) and/or with the proxy's shared secret; a typed
    name cannot override it.
    """
    if cfg.auth == "header":
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        _trusted_proxy(cfg, lowered, peer, environ)
        who = (lowered.get(cfg.auth_header.lower()) or "").strip()
        if not who:
            raise AccessDenied(f"header {cfg.auth_header} missing: open the dashboard "
                               "through the authenticating proxy")
        return who
    who = operator.strip()
    if not who:
        raise AccessDenied("enter your operator name first")
    if cfg.auth == "secret":
        expected = environ.get(cfg.secret_env)
        if not expected:
            raise ConfigError(f"review.auth is 'secret' but the environment variable "
                              f"{cfg.secret_env} is not set")
        if not secret or not hmac.compare_digest(secret.encode(), expected.encode()):
            raise AccessDenied("the access key is wrong")
    return who
