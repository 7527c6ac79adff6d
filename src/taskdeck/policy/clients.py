"""Who is asking, when it is not a dashboard session: API tokens and the networks /metrics admits.

* A token: ``Authorization: Bearer <token>``, one of ``TASKDECK["MONITOR"]["TOKENS"]``
  or an :class:`~taskdeck.models.ApiToken` (only its SHA-256 is stored).
* /metrics also admits a client address inside ``METRICS_NETWORKS``; behind a
  reverse proxy, only when the proxy is in ``METRICS_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from django.http import HttpRequest

from taskdeck import conf

#: Who a token of ``TASKDECK["MONITOR"]["TOKENS"]`` is: no owner, so no scope.
SETTINGS_TOKEN = "settings token"


def find_token(token: str | None) -> Any:
    """The holder of ``token``: :data:`SETTINGS_TOKEN`, an :class:`~taskdeck.models.ApiToken`, or None.

    An ApiToken whose owner is no longer active admits no one.
    """
    if not token:
        return None
    from taskdeck.models import ApiToken

    if any(hmac.compare_digest(token, allowed) for allowed in configured_tokens(conf.monitor()["TOKENS"])):
        return SETTINGS_TOKEN
    found = ApiToken.objects.select_related("owner").filter(digest=ApiToken.hash(token)).first()
    if found is None or (found.owner is not None and not found.owner.is_active):
        return None
    return found


def token_valid(token: str | None) -> bool:
    return find_token(token) is not None


def bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


#: Headers a reverse proxy adds: a request carrying one came through a proxy, whatever its peer address.
FORWARDING_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")


def metrics_allowed(request: HttpRequest) -> bool:
    """/metrics: a valid token, or a client address inside ``METRICS_NETWORKS``.

    (:func:`taskdeck.policy.metrics_scope` says what such a client sees.)

    Behind a reverse proxy on the same host every peer is 127.0.0.1: a request
    that carries a forwarding header is admitted by address only when its peer
    is in ``METRICS_TRUSTED_PROXIES``, and then by the client address the proxy
    forwarded (X-Forwarded-For). Otherwise it needs the token.
    """
    if token_valid(bearer(request)):
        return True
    options = conf.monitor()
    client = client_address(request, _networks(options["METRICS_TRUSTED_PROXIES"]))
    return client is not None and _inside(client, _networks(options["METRICS_NETWORKS"]))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(request: HttpRequest, trusted: list[Network]) -> Address | None:
    """The client's address: the peer's, or the one a trusted proxy forwarded; None when unknown."""
    peer = _address(request.META.get("REMOTE_ADDR", ""))
    if peer is None or not any(request.META.get(header) for header in FORWARDING_HEADERS):
        return peer
    if not _inside(peer, trusted):
        return None  # forwarded by a proxy nobody said to trust
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):  # the nearest hop a trusted proxy did not add is the client
        address = _address(hop)
        if address is None or not _inside(address, trusted):
            return address
    return None


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset)


def configured_tokens(value: Any) -> list[str]:
    """``MONITOR["TOKENS"]`` as it may be trusted: a list of non-empty strings.

    A string given instead of a list would otherwise be iterated into its
    characters, each a valid token; anything that is not a list of strings
    admits no one (``taskdeck.E024`` says why).
    """
    return [token for token in value if isinstance(token, str) and token] if _is_list(value) else []


def parse_networks(values: Any) -> tuple[list[Network], list[str]]:
    """The IP networks of a ``METRICS_*`` setting, and the entries that are not one (they admit no one)."""
    if not _is_list(values):
        return [], [repr(values)]
    networks: list[Network] = []
    bad: list[str] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except (TypeError, ValueError):
            bad.append(repr(value))
    return networks, bad


def _networks(values: Any) -> list[Network]:
    return parse_networks(values)[0]


def _inside(address: Address, networks: list[Network]) -> bool:
    return any(address in network for network in networks)
