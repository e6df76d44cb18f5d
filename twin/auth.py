"""Bearer tokens of the twin API: a read token and a write token, generated once per
data directory (``twin-tokens.env``, mode 600) like the stack's other credentials,
never in the repository.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> t = Tokens.for_data_dir(d)
>>> t == Tokens.for_data_dir(d), t.scope_of(t.read), t.scope_of(t.write), t.scope_of("guess")
(True, 'read', 'write', None)
>>> oct((d / "twin-tokens.env").stat().st_mode & 0o777)
'0o600'
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ecoretrofit.config import create_private_once

TOKENS_FILE = "twin-tokens.env"


@dataclass(frozen=True)
class Tokens:
    read: str = field(repr=False)
    write: str = field(repr=False)

    def scope_of(self, token: str) -> str | None:
        """'write', 'read' or None; compared in constant time."""
        if hmac.compare_digest(token.encode(), self.write.encode()):
            return "write"
        if hmac.compare_digest(token.encode(), self.read.encode()):
            return "read"
        return None

    @staticmethod
    def path(data_dir: Path) -> Path:
        return Path(data_dir) / TOKENS_FILE

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> "Tokens":
        text = create_private_once(
            cls.path(data_dir), f"read={secrets.token_urlsafe(24)}\nwrite={secrets.token_urlsafe(24)}\n")
        values = dict(line.split("=", 1) for line in text.split())
        return cls(read=values["read"], write=values["write"])


def dashboard_url(settings) -> str:
    """The city dashboard with its read token in the fragment (never sent to the server)."""
    return f"http://{settings.bind_host}:{settings.port('twin')}/#token={Tokens.for_data_dir(settings.data_dir).read}"
