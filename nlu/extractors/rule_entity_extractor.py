"""Rule-based entities from a spaCy pipeline built from the project's own data (no spaCy model needed).

Two kinds of rules, compiled into one spaCy EntityRuler over a blank English tokenizer:
- identifiers with a fixed shape (order, serial, ticket numbers, error codes): token patterns from
  nlu/entity_rules.yml that tolerate spaces and separators, with the value rewritten to its canonical form;
- phrases (appliance types, product model names): taken at training time from the NLU data's lookup tables,
  annotated examples and synonyms of the configured entity types, matched case-insensitively.

Rules are exact where DIET is a learned guess, so a rule entity replaces any other extractor's entity whose
span overlaps it. The trained patterns are persisted as JSON (nothing is unpickled at load time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Text, Tuple

import yaml

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import (
    ENTITIES,
    ENTITY_ATTRIBUTE_END,
    ENTITY_ATTRIBUTE_START,
    ENTITY_ATTRIBUTE_TYPE,
    ENTITY_ATTRIBUTE_VALUE,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

DEFAULT_RULES_FILE = Path(__file__).resolve().parent.parent / "entity_rules.yml"
PATTERNS_FILE = "rule_entities.json"
# Separators inside identifiers become tokens of their own, so patterns can make them optional.
EXTRA_INFIXES = [r"[-/#]"]
# Words that introduce an identifier ("order number 2021 000101", "error 21"): rules match them so the value
# is certain, but the entity's span starts after them, where annotators (and UIs) mark the identifier.
CONTEXT_WORDS = {"order", "ticket", "serial", "number", "no", "nr", "num", "ref", "reference", "error", "err", "code"}


def build_nlp(patterns: List[Dict[str, Any]]) -> Any:
    """A blank English pipeline with the separator-splitting tokenizer and an EntityRuler of `patterns`."""
    import spacy
    from spacy.util import compile_infix_regex

    nlp = spacy.blank("en")
    nlp.tokenizer.infix_finditer = compile_infix_regex(list(nlp.Defaults.infixes) + EXTRA_INFIXES).finditer
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER", "overwrite_ents": True})
    if patterns:
        ruler.add_patterns(patterns)
    return nlp


def load_rules(path: Path) -> Dict[str, Any]:
    """The identifier rules file, checked: every entity has patterns, every pattern a token list."""
    try:
        rules = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RasaException(f"SpacyRuleEntityExtractor: cannot read rules file '{path}': {error}") from error
    for entity, spec in rules.items():
        patterns = (spec or {}).get("patterns")
        if not patterns or not all(isinstance(p, dict) and isinstance(p.get("tokens"), list) for p in patterns):
            raise RasaException(f"SpacyRuleEntityExtractor: '{entity}' in '{path}' needs `patterns` with `tokens`.")
    return rules


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=True)
class SpacyRuleEntityExtractor(EntityExtractorMixin, GraphComponent):
    """Identifiers and catalogue phrases found by spaCy rules, with canonical values."""

    @staticmethod
    def required_packages() -> List[Text]:
        return ["spacy"]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            # Token-pattern rules for fixed-shape identifiers; None: nlu/entity_rules.yml.
            "rules_file": None,
            # Entity types whose phrases come from the training data (lookup tables, annotations, synonyms).
            "phrase_entities": ["appliance", "product_model"],
        }

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        patterns: Optional[List[Dict[str, Any]]] = None,
        canonical: Optional[Dict[str, str]] = None,
    ) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.patterns = patterns or []
        # Pattern id -> format string of the canonical value, for identifier rules.
        self.canonical = canonical or {}
        self._nlp = build_nlp(self.patterns)

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "SpacyRuleEntityExtractor":
        return cls(config, model_storage, resource)

    @classmethod
    def _rules_path(cls, config: Dict[Text, Any]) -> Path:
        return Path(config.get("rules_file") or DEFAULT_RULES_FILE)

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        # The rules file is an input of training: editing it must retrain, not reuse a cached component.
        path = cls._rules_path(config)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    @staticmethod
    def _phrases(training_data: TrainingData, entity_types: List[str]) -> Dict[Tuple[str, str], str]:
        """(entity type, phrase in lower case) -> canonical value, from lookups, annotations and synonyms."""
        synonyms = {k.lower(): v for k, v in training_data.entity_synonyms.items()}
        found: Dict[Tuple[str, str], str] = {}

        def add(entity: str, phrase: str, value: Optional[str] = None) -> None:
            phrase = re.sub(r"\s+", " ", phrase).strip()
            if len(phrase) < 2:
                return  # one letter would match everywhere
            canonical = synonyms.get(phrase.lower()) or value or phrase
            found.setdefault((entity, phrase.lower()), canonical)
            # Plurals, which customers use as often as singulars ("my washing machines").
            if not phrase.lower().endswith("s") and phrase[-1].isalpha():
                found.setdefault((entity, phrase.lower() + "s"), canonical)

        for table in training_data.lookup_tables:
            if table.get("name") in entity_types:
                for element in table.get("elements") or []:
                    add(table["name"], str(element))
        for example in training_data.entity_examples:
            text = example.get(TEXT) or ""
            for entity in example.get(ENTITIES) or []:
                if entity.get(ENTITY_ATTRIBUTE_TYPE) in entity_types:
                    phrase = text[entity[ENTITY_ATTRIBUTE_START] : entity[ENTITY_ATTRIBUTE_END]]
                    add(entity[ENTITY_ATTRIBUTE_TYPE], phrase, str(entity.get(ENTITY_ATTRIBUTE_VALUE) or phrase))
        return found

    def train(self, training_data: TrainingData) -> Resource:
        rules = load_rules(self._rules_path(self.config))
        patterns: List[Dict[str, Any]] = []
        canonical: Dict[str, str] = {}
        for entity, spec in rules.items():
            for i, pattern in enumerate(spec["patterns"]):
                pattern_id = f"rule:{entity}:{i}"
                patterns.append({"label": entity, "pattern": pattern["tokens"], "id": pattern_id})
                canonical[pattern_id] = str(pattern.get("canonical") or spec.get("canonical") or "")
        phrases = self._phrases(training_data, list(self.config["phrase_entities"]))
        for (entity, phrase), value in sorted(phrases.items()):
            patterns.append({"label": entity, "pattern": phrase, "id": f"phrase:{value}"})
        self.patterns, self.canonical = patterns, canonical
        self._nlp = build_nlp(patterns)
        logger.info(f"SpacyRuleEntityExtractor: {len(canonical)} identifier rules, {len(phrases)} phrases")
        self.persist()
        return self._resource

    def _value(self, span: Any) -> str:
        pattern_id = span.ent_id_ or ""
        if pattern_id.startswith("phrase:"):
            return pattern_id[len("phrase:") :]
        template = self.canonical.get(pattern_id)
        if not template:
            return span.text
        parts = [t.text.upper() for t in span if any(c.isdigit() for c in t.text)]
        try:
            return template.format(*parts)
        except IndexError:
            # A pattern that matched fewer digit groups than its template names: keep what was typed.
            return span.text

    @staticmethod
    def _trimmed(span: Any) -> Any:
        """The span without its leading context words and separators (never empty)."""
        if (span.ent_id_ or "").startswith("phrase:"):
            return span
        start = span.start
        while start < span.end - 1 and (span.doc[start].lower_ in CONTEXT_WORDS or span.doc[start].is_punct):
            start += 1
        return span.doc[start : span.end]

    def _matches(self, text: str) -> List[Tuple[Dict[str, Any], int, int]]:
        """(entity, start, end of the whole match including context words) per rule match in `text`."""
        if not text or not self.patterns:
            return []
        found = []
        for span in self._nlp(text).ents:
            shown = self._trimmed(span)
            entity = {
                ENTITY_ATTRIBUTE_TYPE: span.label_,
                ENTITY_ATTRIBUTE_START: shown.start_char,
                ENTITY_ATTRIBUTE_END: shown.end_char,
                ENTITY_ATTRIBUTE_VALUE: self._value(span),
                "confidence_entity": 1.0,
            }
            found.append((entity, span.start_char, span.end_char))
        return found

    def extract(self, text: str) -> List[Dict[str, Any]]:
        """Rule entities in `text`, each with its character span and canonical value."""
        return [entity for entity, _, _ in self._matches(text)]

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            matches = self._matches(message.get(TEXT) or "")
            if not matches:
                continue
            # Overlap with the whole match: DIET's "error" in "error 21" is part of the rule's evidence.
            kept = [
                e
                for e in message.get(ENTITIES, [])
                if not any(
                    e.get(ENTITY_ATTRIBUTE_START, 0) < end and start < e.get(ENTITY_ATTRIBUTE_END, 0)
                    for _, start, end in matches
                )
            ]
            found = self.add_extractor_name([entity for entity, _, _ in matches])
            message.set(ENTITIES, kept + found, add_to_output=True)
        return messages

    def persist(self) -> None:
        with self._model_storage.write_to(self._resource) as directory:
            (directory / PATTERNS_FILE).write_text(
                json.dumps({"patterns": self.patterns, "canonical": self.canonical}), encoding="utf-8"
            )

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "SpacyRuleEntityExtractor":
        try:
            with model_storage.read_from(resource) as directory:
                saved = json.loads((directory / PATTERNS_FILE).read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError):
            logger.debug(f"SpacyRuleEntityExtractor: nothing persisted in '{resource.name}'.")
            return cls.create(config, model_storage, resource, execution_context)
        return cls(config, model_storage, resource, saved["patterns"], saved["canonical"])
