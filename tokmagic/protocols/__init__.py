"""Which wire format a request speaks, and which provider serves it.

Recognition runs on every HTTP request the kernel makes, so it looks at the path alone
first, with one C-level suffix test, before anything else."""
from __future__ import annotations

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
}
_SUFFIXES = tuple(_ENDINGS)

#: Hosts whose provider differs from the vendor of the wire format they speak.
_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.groq.com": "groq",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral",
    "openrouter.ai": "openrouter",
    "api.x.ai": "x-ai",
    "api.fireworks.ai": "fireworks",
    "api.perplexity.ai": "perplexity",
    "api.cerebras.ai": "cerebras",
    "router.huggingface.co": "huggingface",
}


def recognise(method: str, path: str) -> Protocol | None:
    """The wire format of a request, from its method and path; None for anything else."""
    if not path.endswith(_SUFFIXES) or method != "POST":
        return None
    for ending, protocol in _ENDINGS.items():
        if path.endswith(ending):
            if protocol is COMPLETIONS and path.endswith("/chat/completions"):
                continue
            return protocol
    return None


def provider_for(host: str, path: str, protocol: Protocol) -> str:
    """The provider that serves a request: named from the host where the host is known,
    else the vendor of the wire format it speaks."""
    host = host.lower()
    if host.endswith((".openai.azure.com", ".cognitiveservices.azure.com")) or "/openai/deployments/" in path:
        return "azure"
    return _HOSTS.get(host, protocol.vendor)


__all__ = ["Protocol", "Reading", "StreamReader", "recognise", "provider_for"]
