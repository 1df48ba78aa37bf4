"""Starts Rasa's server (``rasa run`` with the given arguments) with its HTTP API secret from the environment.

Rasa takes ``--jwt-secret`` only on its command line, where every local user can read it (``ps``). This
launcher reads ``RASA_TOKEN`` from the environment, removes it there, and hands it to Rasa's own argument
parser inside the process, so it appears in no process list. Clients authenticate with a short-lived HS256
JWT signed with the same secret in an ``Authorization`` header (never a ``?token=`` in a URL). Run with the
Rasa environment's Python: ``.venv-rasa/bin/python scripts/rasa_server.py run --enable-api ...``.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    secret = os.environ.pop("RASA_TOKEN", "")
    args = sys.argv[1:]
    if secret and "--enable-api" in args:
        args += ["--jwt-secret", secret, "--jwt-method", "HS256"]
    sys.argv = ["rasa", *args]
    from rasa.__main__ import main as rasa_main

    # The product's changes inside the Rasa process (nlu/rasa_runtime.py) are applied when the model loads; applying
    # them before Rasa starts also lets Rasa register the after-stop listener that closes the kept-alive action
    # server connections (nlu/kept_alive_endpoints.py).
    import nlu  # noqa: F401

    rasa_main()


if __name__ == "__main__":
    main()
