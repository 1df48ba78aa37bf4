"""The fuzz harness's checks outside the conversations (bench/fuzz.py): schemathesis over the web service's OpenAPI
routes, the process list and every log file searched for secrets and customers' details, the supervisor's deaths."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAILURE_KINDS = ("http_5xx", "crashes", "hangs_over_5s", "data_leaks", "secrets_in_logs", "customer_details_in_logs",
                 "accounts_linked_by_bruteforce", "auth_bypass", "schema_violations", "transport_errors",
                 "harness_errors")


def run_schemathesis(web_url: str, token: str | None, max_examples: int, report_dir: pathlib.Path,
                     workers: int = 2) -> dict[str, Any]:
    """schemathesis (examples, coverage and fuzzing phases) against ``/openapi.json``, with ``token`` as a bearer
    token or anonymously. Every request is read back from the HAR report: ``cases`` (requests sent), ``http_5xx``,
    ``over_5s``; ``schema_violations``: operations whose response broke its declared schema (JUnit report);
    ``other_conformance_findings``: undocumented status codes and content types, listed for reading."""
    report_dir.mkdir(parents=True, exist_ok=True)
    har, junit = report_dir / "requests.har", report_dir / "junit.xml"
    cmd = [str(ROOT / ".venv-app/bin/schemathesis"), "run", f"{web_url}/openapi.json", "--url", web_url,
           "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
           "--phases", "examples,coverage,fuzzing", "--max-examples", str(max_examples), "--workers", str(workers),
           "--seed", "15", "--no-shrink", "--continue-on-failure", "--request-timeout", "30", "--suppress-health-check", "all",
           "--report", "har,junit", "--report-har-path", str(har), "--report-junit-path", str(junit),
           "--output-truncate", "true", "--warnings", "off",
           # Server-sent event streams stay open by design: each case would last the request timeout.
           "--exclude-path-regex", "/stream$"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    proc = subprocess.run(cmd, cwd=report_dir, capture_output=True, text=True)
    (report_dir / "output.txt").write_text(proc.stdout + proc.stderr)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = [int(e["response"]["status"]) for e in entries]
    slow = [e for e in entries if float(e.get("time") or 0) > 5000]
    examples = [{"status": e["response"]["status"], "method": e["request"]["method"], "url": e["request"]["url"][:200]}
                for e in entries if int(e["response"]["status"]) >= 500][:10]
    violations, undocumented = _junit_failures(junit)
    examples += [{"check_failed": v} for v in violations[:10]]
    return {"cases": len(entries), "http_5xx": sum(s >= 500 for s in statuses), "over_5s": len(slow),
            "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "schema_violations": len(violations), "other_conformance_findings": undocumented,
            "exit_code": proc.returncode, "examples": examples}


def _junit_failures(path: pathlib.Path) -> tuple[list[str], list[str]]:
    """Failed checks by operation, in two lists: a response body that breaks its declared schema, and the rest of
    the conformance checks (an undocumented status code or content type: the schema's gaps, not the server's).
    Server errors are counted from the HAR, not here."""
    if not path.exists() or not path.stat().st_size:
        return [], []
    schema, other = set(), set()
    for case in ET.parse(path).getroot().iter("testcase"):
        for failure in [*case.iter("failure"), *case.iter("error")]:
            text = (failure.get("message") or "") + "\n" + (failure.text or "")
            for title in re.findall(r"^\s*-\s*(.+)$", text, re.MULTILINE) or [text.strip().splitlines()[0] if text.strip() else "?"]:
                if "server error" in title.lower():
                    continue
                (schema if "violates schema" in title.lower() else other).add(f"{case.get('name')}: {title.strip()[:200]}")
    return sorted(schema), sorted(other)


def audit_processes(stack: Any) -> list[str]:
    """Secrets of the stack on any process's command line (``ps -eo args``), by name."""
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [name for name, value in stack.secrets().items() if value in listing]


def audit_logs(stack: Any, secrets: dict[str, str], personal: list[str]) -> dict[str, Any]:
    """Every log file of the stack and the launcher's output: each secret (by name) and each seeded customer's
    e-mail address or phone number found, with where; ``tracebacks`` per file (unhandled errors, for reading)."""
    files = {p.name: p.read_text(errors="replace") for p in sorted((stack.work / "log").rglob("*.log"))}
    files["launcher output"] = "".join(stack.output)
    found_secrets = [{"secret": name, "where": where} for name, value in secrets.items() if value
                     for where, text in files.items() if value in text]
    found_personal = [{"detail": _mask(detail), "where": where} for detail in set(personal) if detail
                      for where, text in files.items() if detail in text]
    return {"files": len(files), "bytes": sum(len(t) for t in files.values()), "secrets": found_secrets,
            "personal": found_personal,
            "tracebacks": {where: text.count("Traceback (most recent call last)") for where, text in files.items()
                           if "Traceback (most recent call last)" in text}}


def _mask(detail: str) -> str:
    return detail[:3] + "…" + detail[-3:] if len(detail) > 8 else "…"


def crashes(stack: Any) -> list[str]:
    """The supervisor's lines about a child that died (each is a crash of a stack process)."""
    return [line.strip() for line in stack.output if re.search(r"supervisor: \S+ \(pid \d+\) died", line)]
