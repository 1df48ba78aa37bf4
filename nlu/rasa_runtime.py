"""Rasa server speed-ups that need no change to Rasa's behaviour, applied when Rasa imports this package.

Rasa imports the `nlu` package for the custom components of every model it loads (training, `rasa run`,
`rasa test`), so whatever Rasa process serves the product's model has these applied.

Action server responses: Rasa 3.6 checks every response of the action server (each custom action and each
form validation) with `jsonschema.validate(result, schema)`, which first re-validates the constant schema
against the JSON Schema meta-schema. With jsonschema 4.17 (the newest Rasa 3.6 allows) that meta-schema check
costs ~46 ms of CPU per call on this machine against ~0.6 ms for the response itself, and it was 30-40 % of
the Rasa process's CPU under chat load (bench/bench_chat.py, py-spy). Here the same schema is checked once and
its validator reused: a response is accepted or refused exactly as before, with the same error message.
"""

from __future__ import annotations

from typing import Any, Dict, Text

_APPLIED = False


def apply() -> None:
    """Installs the speed-ups once per process (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _reuse_action_response_validator()
    _APPLIED = True


def _reuse_action_response_validator() -> None:
    from jsonschema import ValidationError
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import DOCS_BASE_URL, RemoteAction

    schema = RemoteAction.action_response_format_spec()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)  # what jsonschema.validate does on every call, done once here
    validator = validator_class(schema)

    def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
        # As RemoteAction._validate_action_result in Rasa 3.6, with the validator built once.
        try:
            error = best_match(validator.iter_errors(result))  # the error jsonschema.validate raises
            if error is not None:
                raise error
            return True
        except ValidationError as e:
            e.message += (
                f". Failed to validate Action server response from API, "
                f"make sure your response from the Action endpoint is valid. "
                f"For more information about the format visit "
                f"{DOCS_BASE_URL}/custom-actions"
            )
            raise e

    RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
