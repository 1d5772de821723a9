"""Who serves a request: the provider named from the host (and port) where it is known or
declared, else the vendor of the wire format spoken. Local servers are free by
declaration: tokmagic declares the well-known ones, the user declares their own."""
from __future__ import annotations

import threading

#: Hosts whose provider differs from the vendor of the wire format they speak.
_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
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
    "ollama.com": "ollama-cloud",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
}
#: Default ports of local model servers, whatever their wire format.
_LOCAL_PORTS = {"11434": "ollama", "1234": "lmstudio"}
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0")

_declared: dict[str, str] = {}
_free: set[str] = {"ollama", "lmstudio"}
_lock = threading.Lock()


def set_provider(host: str, provider: str, free: bool | None = None) -> None:
    """Name the provider behind ``host`` (``"host"`` or ``"host:port"``), e.g. a vLLM server:
    ``set_provider("127.0.0.1:8000", "vllm", free=True)``. ``free`` True declares the
    provider's calls cost 0, False that they are priced; None leaves that as it was (a
    provider tokmagic does not know is priced), so naming a second Ollama host keeps
    Ollama free."""
    if not isinstance(host, str) or not host or not isinstance(provider, str) or not provider:
        raise TypeError(f"tokmagic.set_provider takes a host ('host' or 'host:port') and a provider "
                        f"name, both non-empty strings; got {host!r}, {provider!r}")
    with _lock:
        _declared[host.lower()] = provider
        if free:
            _free.add(provider)
        elif free is not None:
            _free.discard(provider)


def is_free(provider: str) -> bool:
    return provider in _free


def provider_for(host: str, path: str, vendor: str) -> str:
    """The provider of a request to ``host`` (may carry ``:port``) speaking ``vendor``'s format."""
    host = host.lower()
    if _declared:
        named = _declared.get(host) or _declared.get(host.rsplit(":", 1)[0])
        if named:
            return named
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if name.endswith((".openai.azure.com", ".cognitiveservices.azure.com")) or "/openai/deployments/" in path:
        return "azure"
    if name.endswith("aiplatform.googleapis.com") or "/publishers/google/" in path:
        return "google-vertex"
    if "bedrock-runtime" in name and name.endswith(".amazonaws.com"):  # FIPS and VPC endpoints too
        return "bedrock"
    if name in _HOSTS:
        return _HOSTS[name]
    if port in _LOCAL_PORTS and (name in _LOOPBACK or vendor == "ollama"):
        return _LOCAL_PORTS[port]
    return vendor


_DEPLOYMENTS = "/openai/deployments/"


def deployment_of(path: str) -> str | None:
    """The Azure OpenAI deployment a request ``path`` calls (``/openai/deployments/<name>/...``),
    None for any other path: Azure routes by deployment, and the deployment, not the
    model its responses name, is what says which model ran."""
    _, marker, rest = path.partition(_DEPLOYMENTS)
    name = rest.split("/", 1)[0] if marker else ""
    return name or None
