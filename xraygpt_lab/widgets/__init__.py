"""Interactive widgets: the chat panel and its dataset browser."""
from __future__ import annotations

from .browser import DatasetBrowser
from .chat import ChatPanel
from .session import ChatInputError, ChatSession, GenerationSettings

__all__ = ["ChatInputError", "ChatPanel", "ChatSession", "DatasetBrowser", "GenerationSettings"]
