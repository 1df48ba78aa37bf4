"""The layering the README promises, checked on the source (``ast``, nothing imported or run):

* only ``crm_store`` touches the CRM database: code outside it may import from SQLAlchemy the ``Session``
  type (for annotations) and exception classes (``sqlalchemy.exc``, for retry decisions), nothing that
  builds or runs a statement, and never calls ``execute``/``scalar``/``scalars``/``get``/``query``/
  ``exec_driver_sql``/``connection`` on a session;
* ``crm_store`` imports nothing else of ours (two listed exceptions, command-line entry points).

Not checked: ``bench/`` (benchmarks count rows to measure the product from outside), ``nlu/`` (runs in
the Rasa process, where SQLAlchemy belongs to Rasa's tracker store, not to the CRM) and, for the same reason,
``rasa_channels/channel_binding.py`` (the chat guard's read of Rasa's ``events`` table), which must then import
nothing of ``crm_store``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTSIDE_STORE = ("device_hooks", "web_service", "actions", "rasa_channels", "scripts")
OURS = {"actions", "bench", "device_hooks", "nlu", "rasa_channels", "scripts", "tests", "web_service"}
# Outside crm_store, modules that work on Rasa's tracker store in the Rasa process, not on the CRM (as nlu/ does).
RASA_TRACKER_STORE = {"rasa_channels/channel_binding.py"}
# module -> names code outside crm_store may import from it (None: any name)
ALLOWED_FROM = {"sqlalchemy.exc": None, "sqlalchemy.orm": {"Session"}, "sqlalchemy": {"exc"}}
ALLOWED_IMPORT = {"sqlalchemy.exc"}
SESSION_CALLS = {"execute", "scalar", "scalars", "get", "query", "exec_driver_sql", "connection"}
# Known exceptions to "crm_store imports nothing else of ours", each a command-line entry point importing
# inside main(): the erasure commands also revoke the erased customer's device accounts at the broker.
# The list may only shrink (moving those commands out of crm_store would empty it).
CRM_STORE_KNOWN = {("crm_store/erase.py", "device_hooks.revocation"), ("crm_store/retention.py", "device_hooks.revocation")}


def _files(*packages: str) -> list[pathlib.Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _receiver_name(node: ast.expr) -> str:
    """``session`` for ``session.execute``, ``session`` for ``turn.session.scalar``, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def database_access(source: str) -> list[tuple[int, str]]:
    """(line, what) for each SQLAlchemy import or session statement call that only crm_store may make."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy" and alias.name not in ALLOWED_IMPORT:
                    found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlalchemy":
            allowed = ALLOWED_FROM.get(node.module, set())
            for alias in node.names:
                if allowed is not None and alias.name not in allowed:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SESSION_CALLS
              and "session" in _receiver_name(node.func.value).lower()):
            found.append((node.lineno, f"session.{node.func.attr}(...)"))
    return found


def test_the_check_sees_what_it_must_refuse_and_allows_the_rest() -> None:
    refused = database_access(
        "from sqlalchemy import select, text\nimport sqlalchemy\nfrom sqlalchemy.orm import Session, sessionmaker\n"
        "from sqlalchemy.dialects import postgresql\n"
        "def f(session, turn):\n    from sqlalchemy import update\n    session.execute(x)\n"
        "    turn.session.scalar(y)\n    session.get(A, 1)\n    session.connection().exec_driver_sql('x')\n"
    )
    assert [what for _line, what in refused] == [
        "from sqlalchemy import select", "from sqlalchemy import text", "import sqlalchemy",
        "from sqlalchemy.orm import sessionmaker", "from sqlalchemy.dialects import postgresql",
        "from sqlalchemy import update", "session.execute(...)", "session.scalar(...)", "session.get(...)",
        "session.connection(...)",
    ]
    assert database_access(
        "from sqlalchemy.orm import Session\nfrom sqlalchemy.exc import DBAPIError, OperationalError\n"
        "from sqlalchemy import exc\nimport sqlalchemy.exc\n"
        "def f(session: Session, client):\n    session.commit()\n    client.execute('conv', 'action_x')\n"
    ) == []


@pytest.mark.parametrize("path", [p for p in _files(*OUTSIDE_STORE)
                                  if str(p.relative_to(ROOT)) not in RASA_TRACKER_STORE],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_crm_store_touches_the_database(path: pathlib.Path) -> None:
    found = database_access(path.read_text(encoding="utf-8"))
    assert not found, (f"{path.relative_to(ROOT)} works on the database itself: "
                       + "; ".join(f"line {line}: {what}" for line, what in found)
                       + " (add or use a crm_store repository function instead)")


@pytest.mark.parametrize("rel", sorted(RASA_TRACKER_STORE))
def test_what_reads_rasas_tracker_store_leaves_the_crm_alone(rel: str) -> None:
    source = (ROOT / rel).read_text(encoding="utf-8")
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    assert database_access(source), f"{rel} no longer reads a database: take it off RASA_TRACKER_STORE"
    assert not [name for name in imported if name.split(".")[0] == "crm_store"], imported


@pytest.mark.parametrize("path", _files("crm_store"), ids=lambda p: str(p.relative_to(ROOT)))
def test_crm_store_imports_nothing_else_of_ours(path: pathlib.Path) -> None:
    ours: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        rel = str(path.relative_to(ROOT))
        ours += [f"line {node.lineno}: {name}" for name in names
                 if name.split(".")[0] in OURS and (rel, name) not in CRM_STORE_KNOWN]
    assert not ours, f"{path.relative_to(ROOT)} imports other parts of the product: {ours}"
