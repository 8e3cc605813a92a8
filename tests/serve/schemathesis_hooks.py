"""Schemathesis hooks for a CLI run against the service (see ``serve_fuzz.py``):

    PYTHONPATH=tests/serve SCHEMATHESIS_HOOKS=schemathesis_hooks \\
        .venv/bin/schemathesis run http://127.0.0.1:PORT/openapi.json --checks all

Valid requests get real pictures and prompts inside them (``serve_fuzz.fit_request``);
invalid ones are sent as generated.
"""

from __future__ import annotations

import schemathesis
import serve_fuzz

serve_fuzz.register()
schemathesis.hook(serve_fuzz.map_case)
