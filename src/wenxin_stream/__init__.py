"""wenxin-stream: stream answers from Baidu's ERNIE Bot (文心一言), exactly and fast.

The public surface is re-exported here; the private modules (``_sse``, ``_events``,
``_exceptions``, ``_wire_v1``, …) are implementation detail. See ARCHITECTURE.md.
"""

from ._accumulate import Accumulator, accumulate
from ._async_client import AsyncChat, AsyncChatStream, AsyncClient
from ._client import Chat, ChatStream, Client
from ._continuation import CONTINUE_PROMPT
from ._conversation import Turn, TurnOutcome
from ._conversation_async import AsyncConversation
from ._conversation_sync import Conversation
from ._events import (
    ChatResult,
    ChunkMeta,
    EndReason,
    FinishEvent,
    FinishReason,
    FunctionCall,
    FunctionCallEvent,
    ReasoningDelta,
    SafetyEvent,
    SearchInfoEvent,
    SearchResult,
    SearchStatusEvent,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    TruncatedEvent,
    UnknownFieldsEvent,
    Usage,
    UsageEvent,
)
from ._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientRateLimitTimeout,
    ConfigurationError,
    ContextLengthError,
    IncompleteStreamError,
    InternalServerError,
    InvalidRequestError,
    LocalProtocolError,
    MalformedResponseError,
    MissingCredentialsError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RemoteProtocolError,
    SSELimitError,
    TokenExpiredError,
    WenxinError,
    is_retryable,
)
from ._models import CATALOGUE, Catalogue, ModelSpec, lookup_model
from ._ratelimit import RateLimits
from ._retry import RetryPolicy
from ._sse import DONE_EVENT, ServerSentEvent, SSEDecoder, encode_comment, encode_event
from ._timeouts import Timeout
from ._transport import Limits
from ._version import __version__
from ._wire_v1 import V1StreamParser
from ._wire_v2 import V2StreamParser

__all__ = [
    "CATALOGUE",
    "CONTINUE_PROMPT",
    "DONE_EVENT",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Accumulator",
    "AsyncChat",
    "AsyncChatStream",
    "AsyncClient",
    "AsyncConversation",
    "AuthenticationError",
    "BadRequestError",
    "Catalogue",
    "Chat",
    "ChatResult",
    "ChatStream",
    "ChunkMeta",
    "Client",
    "ClientRateLimitTimeout",
    "ConfigurationError",
    "ContextLengthError",
    "Conversation",
    "EndReason",
    "FinishEvent",
    "FinishReason",
    "FunctionCall",
    "FunctionCallEvent",
    "IncompleteStreamError",
    "InternalServerError",
    "InvalidRequestError",
    "Limits",
    "LocalProtocolError",
    "MalformedResponseError",
    "MissingCredentialsError",
    "ModelSpec",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RateLimits",
    "ReasoningDelta",
    "RemoteProtocolError",
    "RetryPolicy",
    "SSEDecoder",
    "SSELimitError",
    "SafetyEvent",
    "SearchInfoEvent",
    "SearchResult",
    "SearchStatusEvent",
    "ServerSentEvent",
    "StreamEvent",
    "TextDelta",
    "Timeout",
    "TokenExpiredError",
    "ToolCall",
    "ToolCallDelta",
    "TruncatedEvent",
    "Turn",
    "TurnOutcome",
    "UnknownFieldsEvent",
    "Usage",
    "UsageEvent",
    "V1StreamParser",
    "V2StreamParser",
    "WenxinError",
    "__version__",
    "accumulate",
    "encode_comment",
    "encode_event",
    "is_retryable",
    "lookup_model",
]
