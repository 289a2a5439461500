"""Checking the plugin's URL settings and taking credentials out of them."""

from __future__ import annotations

import re
import urllib.parse

from optivgi.config import Settings, mask_url
from optivgi.errors import ConfigurationError
from optivgi.redaction import url_error_reason

__all__ = ["check_url", "split_credentials"]


def check_url(settings: Settings, name: str) -> str | None:
    """The URL in variable ``name`` (trailing ``/`` dropped), or None; ConfigurationError naming the
    variable, the URL shown with its password masked, when it is not an absolute URL with a host."""
    raw = settings.get(name)
    if raw is None:
        return None
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]+", raw):
        raise ConfigurationError(f"{name} must be an absolute URL, got {mask_url(raw)!r}")
    try:
        split = urllib.parse.urlsplit(raw)
        split.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ConfigurationError(
            f"{name} is not a valid URL ({url_error_reason(str(exc), raw)}): {mask_url(raw)!r}"
        ) from None
    if not split.hostname:
        raise ConfigurationError(f"{name} must name a host, got {mask_url(raw)!r}")
    return raw.rstrip("/")


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its ``user:password@`` part, and the user and password (percent-decoded)."""
    split = urllib.parse.urlsplit(url)
    if split.username is None and split.password is None:
        return url, None, None
    host = split.netloc.rsplit("@", 1)[1]
    bare = urllib.parse.urlunsplit((split.scheme, host, split.path, split.query, split.fragment))
    user = urllib.parse.unquote(split.username) if split.username is not None else None
    password = urllib.parse.unquote(split.password) if split.password is not None else None
    return bare, user, password
