"""The ended console sessions' port: the session ids (`jti`) of console logins that logged out.

A console session is an access token in a cookie, valid until its `exp`; a copy of the cookie
taken before logout would keep working until then. Logout records the token's id here, and every
request a console session authenticates asks whether its id has ended, in any process or replica.
"""

from __future__ import annotations

from typing import Protocol


class SessionStore(Protocol):
    def end(self, session_id: str, *, until: int) -> None:
        """Record `session_id` as ended; kept until `until` (Unix seconds: the token's `exp`
        and the clock leeway), after which the token is refused for its age anyway. Records
        already past their `until` are pruned here."""
        ...

    def has_ended(self, session_id: str) -> bool: ...

    def close(self) -> None: ...
