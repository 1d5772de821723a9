"""The core works in a plain script: importing it pulls in no IPython, display or data
library, and capture + records + pricing work without them."""
import json
import os
import subprocess
import sys
import textwrap

HEAVY = ["IPython", "ipywidgets", "pandas", "matplotlib", "tiktoken", "genai_prices", "httpx", "httpx2"]


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_tokmagic_imports_nothing_heavy():
    loaded = run(f"""
        import json, sys, tokmagic
        tokmagic.install()
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
    """)
    assert loaded == []


def test_core_runs_with_display_libraries_blocked():
    """IPython, ipywidgets, pandas and matplotlib made unimportable: a captured call is
    still recorded and priced."""
    result = run("""
        import json, sys
        for name in ("IPython", "ipywidgets", "pandas", "matplotlib"):
            sys.modules[name] = None          # any import of them now fails
        import httpx2, tokmagic
        body = {"id": "x", "object": "chat.completion", "model": "gpt-4o", "choices": [],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 100,
                          "prompt_tokens_details": {"cached_tokens": 200}}}
        client = httpx2.Client(transport=httpx2.MockTransport(lambda r: httpx2.Response(200, json=body)))
        with tokmagic.track("script") as summary:
            client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o"})
        (r,) = tokmagic.session.records()
        print(json.dumps([r.tag, r.usage.input_tokens, r.usage.cached_input_tokens,
                          r.usage.output_tokens, round(r.cost_usd, 8), summary.calls]))
    """)
    # gpt-4o: 800 fresh input at $2.5/M + 200 cached at $1.25/M + 100 output at $10/M
    assert result == ["script", 1000, 200, 100, 0.00325, 1]
