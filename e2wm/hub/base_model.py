"""What a pushed model's base is: its Hub id (the original of an embedded model) and its licence."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml
from huggingface_hub import metadata_load, try_to_load_from_cache

from e2wm.training.models import EMBEDDED, embedded_name

# embedded model name (e2wm.training.models) -> (Hub id of the original, its licence). The licence is the one
# the original's model card declares (huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct: apache-2.0); the
# card takes the GGUF's own record (general.license) when the package is installed, this when it is not.
HUB_BASES = {"smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}


def embedded_base(adapter_config: dict, recipe: dict | None) -> str | None:
    """The embedded model name (``e2wm.training.models``) the adapter was trained on, if it was one."""
    name = (recipe or {}).get("model_name_or_path")
    if name in HUB_BASES:
        return name
    return embedded_name(str(adapter_config.get("base_model_name_or_path") or ""))


def base_model_id(adapter_config: dict, recipe: dict | None) -> str | None:
    """The base model's Hub id: an embedded model's original, or the adapter's base if it is a Hub id."""
    embedded = embedded_base(adapter_config, recipe)
    if embedded:
        return HUB_BASES[embedded][0]
    base = str(adapter_config.get("base_model_name_or_path") or "")
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", base) and not Path(base).exists()
    return base if hub_id else None


def base_license(adapter_config: dict, recipe: dict | None) -> tuple[dict[str, str], str | None]:
    """The base model's licence as card metadata (``license``, and ``license_name`` / ``license_link`` when
    its card has them) and where that was read; ``other`` and None when it is not known here.

    An embedded model's licence is the one its GGUF records; a local model directory's, the front matter
    of its README.md; a Hub model's, that of its model card if the Hub cache holds it (nothing is fetched).
    """
    embedded = embedded_base(adapter_config, recipe)
    if embedded:
        recorded = gguf_license(embedded)
        if recorded:
            return {"license": recorded}, f"the metadata of `{EMBEDDED[embedded][2]}`"
        hub_id, licence = HUB_BASES[embedded]
        return {"license": licence}, f"the model card of {hub_id}"
    base = str(adapter_config.get("base_model_name_or_path") or "")
    base_id = base_model_id(adapter_config, recipe)
    readme, source = None, None
    if base and Path(base).is_dir():
        readme, source = Path(base) / "README.md", f"the README.md of `{base}`"
    elif base_id:
        cached = try_to_load_from_cache(base_id, "README.md", revision=(recipe or {}).get("model_revision"))
        readme = Path(cached) if isinstance(cached, str) else None
        source = f"the model card of {base_id}"
    found = _card_license(readme) if readme is not None else {}
    return (found, source) if found else ({"license": "other"}, None)


def gguf_license(name: str) -> str | None:
    """The licence the embedded model's GGUF records (``general.license``, read with the ``gguf`` reader that
    transformers loads it with); None when the package that ships it is not installed, or it records none."""
    from gguf import GGUFReader

    _, package, file = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent / file if spec and spec.origin else None
    if path is None or not path.is_file():
        return None
    field = GGUFReader(path).fields.get("general.license")
    value = field.contents() if field is not None else None
    return value if isinstance(value, str) and value else None


def _card_license(readme: Path) -> dict[str, str]:
    """``license`` (with ``license_name`` and ``license_link``, if set) from a model card's front matter."""
    try:
        data = metadata_load(readme) if readme.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    keys = ("license", "license_name", "license_link")
    found = {k: data[k] for k in keys if isinstance(data.get(k), str) and data[k]}
    return found if "license" in found else {}
