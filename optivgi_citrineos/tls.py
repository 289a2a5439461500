"""TLS material for the plugin's connections (REST, Hasura, RabbitMQ)."""

from __future__ import annotations

import ssl

import attrs

from optivgi.errors import ConfigurationError

__all__ = ["TlsFiles"]


@attrs.frozen
class TlsFiles:
    """TLS material for one connection: a CA bundle to trust and an optional client certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def configured(self) -> bool:
        """True when anything is set."""
        return any((self.ca_file, self.cert_file, self.key_file))

    def context(self) -> ssl.SSLContext:
        """A client context verifying the server (with ``ca_file`` if set) and presenting the
        client certificate if set; raises ConfigurationError when the files cannot be loaded."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.ca_file, self.cert_file, self.key_file) if f)
            raise ConfigurationError(f"cannot load the TLS files {files}: {exc}") from None
        return ctx
