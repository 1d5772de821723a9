"""Which wire format a request speaks, and which provider serves it.

Recognition runs on every HTTP request the kernel makes, so it looks at the path's last
few characters alone first, before anything else."""
from __future__ import annotations

from .. import providers
from . import bedrock, cohere, gemini, ollama
from .anthropic import MESSAGES
from .base import Protocol, Reading, StreamReader
from .openai import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES

#: Path endings of the LLM endpoints tokmagic reads, and their wire format.
_ENDINGS: dict[str, Protocol] = {
    "/chat/completions": CHAT,
    "/completions": COMPLETIONS,
    "/responses": RESPONSES,
    "/embeddings": EMBEDDINGS,
    "/v1/messages": MESSAGES,
    ":generateContent": gemini.GENERATE,
    ":streamGenerateContent": gemini.GENERATE,
    ":embedContent": gemini.EMBED,
    ":batchEmbedContents": gemini.EMBED,
    "/api/chat": ollama.CHAT,
    "/api/generate": ollama.GENERATE,
    "/api/embed": ollama.EMBED,
    "/api/embeddings": ollama.EMBED,
    "/v2/chat": cohere.CHAT,
    "/v1/chat": cohere.CHAT,
    "/v2/embed": cohere.EMBED,
    "/v1/embed": cohere.EMBED,
    "/converse": bedrock.CONVERSE,
    "/converse-stream": bedrock.CONVERSE,
    "/invoke": bedrock.INVOKE,
    "/invoke-with-response-stream": bedrock.INVOKE,
}
#: The last characters of every ending (as many as the shortest has): a path ending in
#: none of these is no LLM call, told with one slice and one set lookup. Capture makes
#: this test inline, on the raw path, before it works out anything else about a request:
#: endings hold no character a client would percent-encode.
TAIL = min(map(len, _ENDINGS))
TAILS = frozenset(e[-TAIL:] for e in _ENDINGS)
#: Longest ending first, so "/api/embeddings" is not taken for OpenAI's "/embeddings".
_BY_LENGTH = sorted(_ENDINGS.items(), key=lambda item: -len(item[0]))


def recognise(method: str, path: str) -> Protocol | None:
    """The wire format of a request, from its method and path; None for anything else."""
    if path[-TAIL:] not in TAILS or method != "POST":
        return None
    protocol = next((protocol for ending, protocol in _BY_LENGTH if path.endswith(ending)), None)
    return protocol if protocol is not None and protocol.recognises(path) else None


def provider_for(host: str, path: str, protocol: Protocol) -> str:
    """The provider that serves a request (see tokmagic.providers)."""
    return providers.provider_for(host, path, protocol.vendor)


__all__ = ["Protocol", "Reading", "StreamReader", "recognise", "provider_for", "TAIL", "TAILS"]
