"""An experiment's stages as a chain of paths: what each stage reads and writes, and the check
``python -m emprl.pipeline --check --recipe DIR``.

A stage reads the paths in its recipe's path keys (its config fields marked ``existing_path``, read from
the stage table: ``StageKind.reads``) and writes its ``output_dir``.
The check walks the stages in pipeline order and stops at the first path that no earlier stage
writes, that is not one of the dataset folders the reproduction guide asks for (``DATA_LAYOUT``) and
that does not exist either: the chain would break there, maybe hours into a GPU run.

An experiment may read the outputs of others (DailyDialog evaluates the EmpatheticDialogues-trained
systems): its folder then holds ``chain.yaml`` with ``after: [recipes/<experiment>, ...]``, and
their stages count as earlier ones. ``train-all`` runs one folder; run the ``after`` folders first.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any

from emprl.common.errors import UserError
from emprl.pipeline import stages as table
from emprl.pipeline.config import load_recipe_values, load_yaml_mapping, strip_format
from emprl.pipeline.stages import Stage, StageKind

CHAIN_FILE = "chain.yaml"

JSONL_PREFIX = "jsonl:"
# Where the real datasets go (docs/reproduction.md, "Data layout"): a recipe may read them before
# they are there, since the user downloads them. Any other path must exist or be an earlier output.
DATA_LAYOUT = ("data/empathetic_dialogues", "data/pec", "data/dailydialog", "data/epitome", "data/glove")


@dataclasses.dataclass
class Link:
    """One stage of a chain: its recipe, the stage it runs, what it writes and what it reads."""
    experiment: str
    stage: Stage
    recipe_path: str
    values: dict[str, Any]
    output_dir: str
    reads: list[tuple[str, str]]  # (key, path as written in the recipe)


def stage_reads(kind: StageKind, values: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, path) for every path ``values`` (a recipe of ``kind``) reads; a mapping (the evaluation's
    ``systems``) reads each of its values."""
    reads = []
    for key, default in kind.reads().items():
        value = values.get(key, default)
        if isinstance(value, dict):
            reads += [(f"{key}.{name}", spec) for name, spec in value.items() if isinstance(spec, str)]
        elif isinstance(value, str) and value:
            reads.append((key, value))
    return reads


def path_of(spec: str) -> str:
    """The file-system path in a recipe value: ``FORMAT:PATH`` and ``jsonl:PATH`` lose their prefix."""
    if spec.startswith(JSONL_PREFIX):
        return spec[len(JSONL_PREFIX):]
    return strip_format(spec)


def _chain_list(experiment: str, key: str, expected: str, exists, missing: str) -> list[str]:
    """A list of strings under ``key`` in the experiment's ``chain.yaml`` ([] without the file); each
    must pass ``exists`` (else a one-line error naming the file, the key and the entry)."""
    path = os.path.join(experiment, CHAIN_FILE)
    if not os.path.isfile(path):
        return []
    names = load_yaml_mapping(path).get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: key '{key}': expected a list of {expected}")
    for name in names:
        if not exists(name):
            raise UserError(f"{path}: key '{key}': {missing.format(name=name, experiment=experiment)}")
    return names


def required_after(experiment: str) -> list[str]:
    """The experiments named in ``chain.yaml``'s ``after`` (checked to be folders)."""
    return _chain_list(experiment, "after", "experiment folders (recipes/<experiment>)", os.path.isdir,
                       "experiment folder '{name}' does not exist")


def on_demand(experiment: str) -> list[str]:
    """Stage recipes named in ``chain.yaml``'s ``on_demand``: train-all leaves them out (they run with
    ``--targets`` or their own make target), e.g. ablations too slow for the demo's time budget."""
    return _chain_list(experiment, "on_demand", "recipe file names (e.g. ppo_no_kl.yaml)",
                       lambda name: os.path.isfile(os.path.join(experiment, name)),
                       "recipe file '{name}' does not exist in {experiment}")


def experiment_links(experiment: str, stages=None) -> list[Link]:
    """The stages the folder has, in pipeline order (a folder may hold only some of them)."""
    stages = table.STAGES if stages is None else stages
    if not os.path.isdir(experiment):
        raise UserError(f"{experiment}: experiment folder does not exist (expected recipes/<experiment>)")
    links = []
    for stage in stages:
        path = os.path.join(experiment, stage.recipe)
        if not os.path.isfile(path):
            continue
        values = load_recipe_values(path)
        output_dir = values.get("output_dir")
        if not isinstance(output_dir, str) or not output_dir:
            raise UserError(f"{path}: missing required key 'output_dir'")
        links.append(Link(experiment, stage, path, values, output_dir, stage_reads(stage.kind, values)))
    if not links:
        raise UserError(f"{experiment}: no stage recipe found (expected sft.yaml, ppo.yaml, evaluate.yaml, ...)")
    return links


def full_chain(experiment: str, stages=None) -> list[Link]:
    """The ``after`` experiments' stages (recursively, each folder once), then this folder's."""
    order: list[str] = []

    def visit(folder: str, trail: tuple[str, ...]) -> None:
        key = os.path.normpath(folder)
        if key in trail:
            raise UserError(f"{os.path.join(folder, CHAIN_FILE)}: key 'after': experiments wait for each other "
                            "in a cycle")
        if key in order:
            return
        for other in required_after(folder):
            visit(other, trail + (key,))
        order.append(key)

    visit(experiment, ())
    return [link for folder in order for link in experiment_links(folder, stages)]


def writer_of(path: str, links: list[Link]) -> Link | None:
    """The last of ``links`` whose output folder holds ``path`` (or is it)."""
    target = os.path.normpath(path.split("{", 1)[0].rstrip("/")) if "{" in path else os.path.normpath(path)
    for link in reversed(links):
        out = os.path.normpath(link.output_dir)
        if target == out or target.startswith(out + os.sep):
            return link
    return None


def in_data_layout(path: str) -> bool:
    norm = os.path.normpath(path)
    return any(norm == d or norm.startswith(d + os.sep) or norm.startswith(d + ".") for d in DATA_LAYOUT)


def exists(path: str) -> bool:
    return bool(glob.glob(path.replace("{seed}", "*"))) if "{" in path else os.path.exists(path)


def check_chain(experiment: str, stages=None) -> list[Link]:
    """Raise a one-line UserError (file and key) at the first read that nothing provides."""
    links = full_chain(experiment, stages)
    for i, link in enumerate(links):
        for key, spec in link.reads:
            path = path_of(spec)
            if writer_of(path, links[:i]) is None and not in_data_layout(path) and not exists(path):
                raise UserError(f"{link.recipe_path}: key '{key}': reads '{path}', which no earlier stage writes, "
                                "which is not a dataset folder of docs/reproduction.md and which does not exist")
    return links


def needed_links(experiment: str, links: list[Link]) -> list[Link]:
    """The experiment's own stages and, of the ``after`` experiments, only those whose outputs they
    need (directly or through others), in chain order; a stage repeated under another folder (same
    output folder) counts once."""
    own = os.path.normpath(experiment)
    unique: list[Link] = []
    for link in links:
        if not any(os.path.normpath(u.output_dir) == os.path.normpath(link.output_dir) for u in unique):
            unique.append(link)
    needed = {id(link) for link in unique if os.path.normpath(link.experiment) == own}
    for i in range(len(unique) - 1, -1, -1):
        link = unique[i]
        if id(link) not in needed:
            continue
        for _, spec in link.reads:
            writer = writer_of(path_of(spec), unique[:i])
            if writer is not None:
                needed.add(id(writer))
    return [link for link in unique if id(link) in needed]
