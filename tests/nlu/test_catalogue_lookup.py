"""The NLU's product-model lookup table (nlu/data/catalogue.yml) names every model the CRM sells."""

from __future__ import annotations

import pathlib

from ruamel.yaml import YAML

from crm_store.demo_data import MODELS

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_catalogue_model_is_in_the_product_model_lookup():
    nlu = YAML(typ="safe").load((ROOT / "nlu" / "data" / "catalogue.yml").read_text())["nlu"]
    lookup = next(block for block in nlu if block.get("lookup") == "product_model")
    names = {line.strip()[2:] for line in lookup["examples"].splitlines() if line.strip().startswith("- ")}
    synonyms = {block["synonym"] for block in nlu if "synonym" in block}
    catalogue = {name for models in MODELS.values() for _, name, _ in models}
    assert catalogue <= names
    # Every synonym maps a short form to a model that exists.
    assert synonyms <= catalogue
