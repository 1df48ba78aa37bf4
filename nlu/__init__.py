"""Custom Rasa NLU components. config.yml names them by these stable paths, e.g.
`nlu.SentenceTransformerFeaturizer`, whatever file they live in."""

from nlu import rasa_runtime
from nlu.classifiers.linear_intent_classifier import LinearIntentClassifier
from nlu.extractors.rule_entity_extractor import SpacyRuleEntityExtractor
from nlu.featurizers.sentence_transformer_featurizer import SentenceTransformerFeaturizer

# Rasa imports this package for every model that names these components: the Rasa process serving the bot.
rasa_runtime.apply()

__all__ = ["LinearIntentClassifier", "SentenceTransformerFeaturizer", "SpacyRuleEntityExtractor"]
