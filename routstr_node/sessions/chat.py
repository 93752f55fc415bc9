"""A chat request in a session: the stored conversation put in, the new turn kept.

With sessions on, a chat request paid by an account may name a ``session_id`` (none:
a new session is made; an unknown one starts under that id). The node sends the
upstream the request's system messages, then the session's stored messages, then the
request's own; the answer names the session (its body, every stream event); the
request's own messages and the assistant's answer are then kept, the newest
``max_messages``. The stored history is in the forwarded body, so it is reserved for
and paid as input like any prompt. ``session_id`` is never forwarded upstream.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mints.token import parse_token
from routstr_node.config import SessionsSection
from routstr_node.errors import invalid_request
from routstr_node.payment import presented_credential
from routstr_node.sessions.store import Message, SessionStore
from routstr_node.sse import event_data, event_json
from routstr_node.state import NodeState
from routstr_node.usage import delta_text

log = logging.getLogger(__name__)

SESSION_FIELD = "session_id"
_MAX_ID_CHARS = 128
_SYSTEM_ROLES = ("system", "developer")
_KEPT_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
# the start of an event's JSON object that has members: the session id goes first in it
_EVENT_OBJECT = re.compile(rb"^(data: ?)\{(?=\s*\")", re.M)


def alive_since(settings: SessionsSection) -> int:
    """Sessions updated before this (unix seconds) have expired."""
    return int(time.time()) - settings.ttl_hours * 3600


@dataclass
class SessionTurn:
    """One request's turn in a session."""

    id: str
    own_messages: list[Message]  # the request's messages the session keeps (no system)
    store: SessionStore
    settings: SessionsSection
    _text: list[str] = field(default_factory=list)  # a stream's answer, as it passes

    @property
    def member(self) -> bytes:
        return b'"session_id":' + json.dumps(self.id).encode() + b","

    def tag_events(self, block: bytes) -> bytes:
        """A block of stream events, each naming the session; its text is kept."""
        for event in block.split(b"\n\n"):
            data = event_data(event.replace(b"\r\n", b"\n"))
            if data is not None and data != "[DONE]":
                found = event_json(data)
                if found is not None:
                    self._text.append(delta_text(found))
        return _EVENT_OBJECT.sub(lambda m: m.group(1) + b"{" + self.member, block)

    def streamed_answer(self) -> Message:
        return {"role": "assistant", "content": "".join(self._text)}

    async def keep(self, account_id: int, answer: Message) -> None:
        """The request's own messages and the answer, added to the session. A failure
        is logged: the answer was paid and is the client's all the same."""
        settings = self.settings
        try:
            await self.store.append(
                account_id,
                self.id,
                [*self.own_messages, answer],
                int(time.time()),
                settings.max_messages,
                alive_since(settings),
            )
        except Exception as exc:
            log.warning("session turn not kept: %s", type(exc).__name__)


def answer_message(data: dict[str, Any]) -> Message:
    """The assistant's message of a chat answer, as the next request sends it back."""
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        return {"role": "assistant", "content": ""}
    kept = {k: message[k] for k in _KEPT_KEYS if message.get(k) is not None}
    kept.setdefault("role", "assistant")
    kept.setdefault("content", "")
    return kept


async def open_turn(
    request: web.Request,
    node: NodeState,
    store: SessionStore | None,
    raw: bytes,
    body: dict[str, Any],
) -> tuple[SessionTurn | None, bytes, dict[str, Any]]:
    """The request's session (None: sessions off, or an X-Cashu payer without one) and
    the body to forward: the stored messages put in after the system messages."""
    settings = node.settings.sessions
    if not settings.enabled or store is None:
        return None, raw, body  # session_id is dropped (never forwarded)
    given = body.get(SESSION_FIELD)
    if given is not None and not (
        isinstance(given, str) and 0 < len(given) <= _MAX_ID_CHARS and given.isprintable()
    ):
        raise invalid_request(
            "invalid_session_id",
            f"session_id must be a string of 1 to {_MAX_ID_CHARS} printable characters",
            param=SESSION_FIELD,
        )
    credential = await presented_credential(request, node)
    if credential.x_cashu or credential.text is None:
        if given is not None and credential.x_cashu:
            raise invalid_request(
                "session_requires_account",
                "sessions belong to an account: pay with an sk- key or a Cashu token as"
                " the key to use session_id (X-Cashu pays for one request only)",
                param=SESSION_FIELD,
            )
        return None, raw, body
    account_id = credential.account_id
    if credential.is_token:
        try:
            account_id = await node.wallet.ledger.account_id_for_token(parse_token(credential.text))
        except Exception:  # not a token after all: the payment says so next
            account_id = None
    session_id = given if isinstance(given, str) else "sess_" + secrets.token_hex(12)
    messages = body["messages"]
    own = [m for m in messages if not (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES)]
    turn = SessionTurn(session_id, own, store, settings)
    stored = (
        await store.messages(account_id, session_id, alive_since(settings))
        if account_id is not None
        else []
    )
    if not stored:
        return turn, raw, body
    system = [m for m in messages if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
    merged = {**body, "messages": [*system, *stored, *own]}
    return turn, json.dumps(merged).encode(), merged
