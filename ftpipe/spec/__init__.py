"""Pipeline specs: the Pydantic models, YAML loading with line numbers, and the schema docs.

Public entry point: `load_spec(path, overrides)` returns a validated `LoadedSpec`. This package
imports neither torch nor Ludwig nor the data layer (an import-linter contract checks it).
"""

from ftpipe.spec.docs import spec_json_schema, spec_reference_markdown
from ftpipe.spec.loading import (
    LoadedSpec,
    display_path,
    hidden_escape,
    load_resolved_spec,
    load_spec,
    parse_override,
    project_root,
)
from ftpipe.spec.schema import (
    AdaloraAdapter,
    ComputeSpec,
    DataSpec,
    DiagnosisSpec,
    DistributedSpec,
    EvaluationSpec,
    FrozenAdapter,
    FullAdapter,
    GatesSpec,
    GenerationSpec,
    Ia3Adapter,
    LeakageSpec,
    LmEvalSpec,
    LohaAdapter,
    LoraAdapter,
    MixingSpec,
    MlflowSpec,
    PipelineSpec,
    PreferenceSpec,
    PrefixTuningAdapter,
    PROMPT_LEARNING_ADAPTERS,
    PromptTuningAdapter,
    QloraAdapter,
    ReplaySpec,
    SelfGeneratedReplaySpec,
    SourceSpec,
    SweepParam,
    SweepSpec,
    TaskSpec,
    TrackingSpec,
    TrainingSpec,
)

__all__ = [
    "load_spec", "load_resolved_spec", "LoadedSpec", "display_path", "parse_override", "project_root", "hidden_escape", "spec_json_schema",
    "spec_reference_markdown", "PipelineSpec", "TaskSpec", "SourceSpec", "DataSpec", "MixingSpec", "ReplaySpec",
    "LeakageSpec", "TrainingSpec", "GenerationSpec", "EvaluationSpec", "GatesSpec", "ComputeSpec",
    "DistributedSpec", "DiagnosisSpec", "SelfGeneratedReplaySpec", "SweepParam", "SweepSpec", "LmEvalSpec", "TrackingSpec", "MlflowSpec",
    "FullAdapter", "LoraAdapter", "QloraAdapter", "Ia3Adapter", "LohaAdapter", "AdaloraAdapter",
    "PromptTuningAdapter", "PrefixTuningAdapter", "FrozenAdapter", "PROMPT_LEARNING_ADAPTERS", "PreferenceSpec",
]
