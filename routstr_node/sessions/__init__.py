"""Chat sessions (contract section 11): the conversation kept on the node, per account."""

from routstr_node.sessions.chat import SessionTurn, answer_message, open_turn
from routstr_node.sessions.routes import SESSIONS
from routstr_node.sessions.store import SessionStore

__all__ = ["SESSIONS", "SessionStore", "SessionTurn", "answer_message", "open_turn"]
