"""The pod-config registry: layering, lookups, strict decoding (pop-spec §4.8, §9 case 75)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from popflow.adapters.registry import (
    InvalidRegistry,
    PodConfig,
    ProcessConfig,
    Registry,
    UnknownOperationType,
    thaw,
)
from popflow.errors import CallerError

POP_SAMPLE_REGISTRY: dict[str, Any] = {
    "basePodConfig": {
        "memoryRequestCount": "1000m",
        "cpuMinRequestCount": "1000m",
        "cpuMaxRequestCount": "1000m",
        "podScheduledTimeoutMs": 600000,
        "reapCompletedPods": False,
        "pullAlways": False,
        "labels": {"team": "media"},
        "volumes": [{"name": "config-volume", "configMap": {"name": "pop-config"}}],
    },
    "sample": {
        "podConfig": {
            "imageName": "pop-sample:1.0.0",
            "namePrefix": "pop-sample",
            "cpuMinRequestCount": "100m",
            "cpuMaxRequestCount": "250m",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        }
    },
}


def registry(document: dict[str, Any]) -> Registry:
    return Registry.from_json(json.dumps(document), source="registry.json")


def problems(document: dict[str, Any] | str) -> tuple[str, ...]:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(InvalidRegistry) as caught:
        Registry.from_json(text, source="registry.json")
    return caught.value.problems


def test_the_base_fills_in_what_the_entry_leaves_out() -> None:
    config = registry(POP_SAMPLE_REGISTRY).pod_config("sample")
    assert config.memory_request_count == "1000m"
    assert config.pod_scheduled_timeout_ms == 600000
    assert config.reap_completed_pods is False
    assert config.pull_always is False
    assert config.labels == {"team": "media"}


def test_the_entry_overrides_the_base() -> None:
    config = registry(POP_SAMPLE_REGISTRY).pod_config("sample")
    assert config.image_name == "pop-sample:1.0.0"
    assert config.name_prefix == "pop-sample"
    assert (config.cpu_min_request_count, config.cpu_max_request_count) == ("100m", "250m")


def test_a_field_is_replaced_whole_never_merged() -> None:
    config = registry(POP_SAMPLE_REGISTRY).pod_config("sample")
    assert thaw(config.volumes) == [{"name": "scratch", "emptyDir": {}}]


def test_core_defaults_apply_when_neither_layer_says() -> None:
    config = registry({"sample": {"podConfig": {"imageName": "img"}}}).pod_config("sample")
    assert config.end_of_log_identifier == "HandlerComplete"
    assert config.service_account_name == "pop-service"
    assert config.pod_scheduled_timeout_ms == 300_000
    assert config.pod_stdout_timeout == 120_000
    assert config.reap_completed_pods is False
    assert (config.cpu_min_request_count, config.cpu_max_request_count) == ("1.0", "1.0")
    assert config.name_prefix == "pop"
    assert config.command == ()


def test_every_pod_field_decodes_from_its_camel_case_name() -> None:
    fields = {
        "imageName": "img:2",
        "command": ["python", "-m", "handler"],
        "arguments": ["--fast"],
        "envVars": {"MODE": "fast"},
        "cpuMinRequestCount": "0.5",
        "cpuMaxRequestCount": "2",
        "memoryRequestCount": "256Mi",
        "memoryLimitCount": "1Gi",
        "labels": {"app": "x"},
        "serviceAccountName": "runner",
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "namePrefix": "encode",
        "podScheduledTimeoutMs": 1000,
        "podStdoutTimeout": 2000,
        "reapCompletedPods": True,
        "pullAlways": True,
        "endOfLogIdentifier": "Done",
    }
    config = registry({"encode": {"podConfig": fields}}).pod_config("encode")
    assert thaw(config) == fields


def test_lookups_cannot_change_the_registry() -> None:
    loaded = registry(POP_SAMPLE_REGISTRY)
    config = loaded.pod_config("sample")
    with pytest.raises(TypeError):
        config.labels["team"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.volumes[0]["emptyDir"]["medium"] = "Memory"
    with pytest.raises(AttributeError):
        config.image_name = "other"  # type: ignore[misc]
    thawed = thaw(config)
    thawed["labels"]["team"] = "other"
    assert loaded.pod_config("sample").labels == {"team": "media"}


def test_an_unknown_type_is_named_in_the_error() -> None:
    loaded = registry(POP_SAMPLE_REGISTRY)
    with pytest.raises(UnknownOperationType, match=r"^Unknown operation type found: encode$"):
        loaded.pod_config("encode")
    with pytest.raises(UnknownOperationType) as caught:
        loaded.process_config("sample")
    assert caught.value.operation_type == "sample"
    assert isinstance(caught.value, CallerError)


def test_process_entries_are_taken_as_written() -> None:
    document = {
        "basePodConfig": {"imageName": "base-image"},
        "sample": {
            "process": {
                "command": ["python", "-m", "popflow.handler.sample"],
                "envVars": {"LOG_LEVEL": "DEBUG"},
                "workingDirectory": "/srv/handlers",
                "timeoutMs": 60000,
                "silenceTimeoutMs": 0,
            }
        },
        "local-only": {"process": {"command": ["./run.sh"]}},
    }
    loaded = registry(document)
    assert loaded.process_config("sample") == ProcessConfig(
        command=("python", "-m", "popflow.handler.sample"),
        env_vars={"LOG_LEVEL": "DEBUG"},
        working_directory="/srv/handlers",
        timeout_ms=60000,
        silence_timeout_ms=0,
    )
    defaults = loaded.process_config("local-only")
    assert (defaults.timeout_ms, defaults.silence_timeout_ms) == (0, 120_000)
    assert loaded.process_types() == ("local-only", "sample")
    assert loaded.pod_types() == ()


def test_an_entry_can_be_both_a_pod_and_a_process() -> None:
    loaded = registry(
        {"sample": {"podConfig": {"imageName": "img"}, "process": {"command": ["sample"]}}}
    )
    assert loaded.pod_types() == ("sample",)
    assert loaded.process_types() == ("sample",)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"sample": {"podConfig": {"imageName": "img", "cpuMinRequest": "1"}}},
            "registry.json: sample.podConfig: Object contains unknown field `cpuMinRequest`",
        ),
        (
            {"sample": {"podConfig": {"imageName": "img", "labels": {"a": 1}}}},
            "registry.json: sample.podConfig.labels[...]: Expected `str`, got `int`",
        ),
        (
            {"sample": {"podConfig": {"imageName": "img", "podStdoutTimeout": 0}}},
            "registry.json: sample.podConfig.podStdoutTimeout: Expected `int` >= 1",
        ),
        (
            {"sample": {"podConfig": {"imageName": "img", "namePrefix": "Pop_Sample"}}},
            "registry.json: sample.podConfig.namePrefix: Expected `str` matching regex",
        ),
        (
            {"sample": {"podConfig": {"namePrefix": "x"}}},
            "registry.json: sample.podConfig: imageName is required (here or in basePodConfig)",
        ),
        (
            {"sample": {"process": {"command": []}}},
            "registry.json: sample.process.command: Expected `array` of length >= 1",
        ),
        (
            {"sample": {"process": {"args": ["x"]}}},
            "registry.json: sample.process: Object contains unknown field `args`",
        ),
        (
            {"sample": {"configMapName": "pop-sample-01", "podConfig": {"imageName": "i"}}},
            "registry.json: sample: Object contains unknown field `configMapName`",
        ),
        ({"sample": {}}, "registry.json: sample: an entry needs a podConfig, a process, or both"),
        ({"sample": "pop-sample:1"}, "registry.json: sample: Expected `object`, got `str`"),
        (
            {"basePodConfig": {"reapCompletedPods": "yes"}},
            "registry.json: basePodConfig.reapCompletedPods: Expected `bool`, got `str`",
        ),
        ({"basePodConfig": []}, "registry.json: basePodConfig: expected an object"),
    ],
)
def test_a_mistake_is_named_by_entry_and_field(document: dict[str, Any], expected: str) -> None:
    (problem,) = problems(document)
    assert problem.startswith(expected)


def test_every_mistake_is_reported_at_once() -> None:
    found = problems(
        {
            "basePodConfig": {"pullAlways": 1},
            "a": {"podConfig": {"imageName": 2}},
            "b": {"process": {}},
            "good": {"podConfig": {"imageName": "img"}},
        }
    )
    assert [p.split(":")[1].strip() for p in found] == [
        "basePodConfig.pullAlways",
        "a.podConfig.imageName",
        "b.process",
    ]


def test_a_document_that_is_not_a_json_object_is_refused() -> None:
    assert problems("[1, 2]") == ("registry.json: the registry must be a JSON object",)
    (problem,) = problems('{"sample": ')
    assert problem.startswith("registry.json: not valid JSON")


def test_load_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(POP_SAMPLE_REGISTRY))
    assert Registry.load(path).pod_config("sample").image_name == "pop-sample:1.0.0"
    path.write_text('{"sample": {"podConfig": {"imageName": 1}}}')
    with pytest.raises(InvalidRegistry, match=r"registry\.json: sample\.podConfig\.imageName"):
        Registry.load(path)
    with pytest.raises(InvalidRegistry, match="cannot read the registry"):
        Registry.load(tmp_path / "missing.json")


def test_a_registry_can_be_built_from_values() -> None:
    built = Registry({"x": PodConfig(image_name="img", labels={"a": "b"})}, {})
    config = built.pod_config("x")
    assert config.labels == {"a": "b"}
    with pytest.raises(TypeError):
        config.labels["a"] = "c"  # type: ignore[index]


def test_the_documented_example_loads_as_described() -> None:
    text = (Path(__file__).parents[2] / "docs" / "handlers.md").read_text(encoding="utf-8")
    section = text[text.index("## The registry") :]
    example = section[section.index("```json") + len("```json") : section.index("```\n", 10)]
    loaded = Registry.from_json(example, source="docs/handlers.md")
    sample = loaded.pod_config("sample")
    assert (sample.cpu_min_request_count, sample.cpu_max_request_count) == ("100m", "1")
    assert (sample.memory_request_count, sample.pod_scheduled_timeout_ms) == ("512Mi", 600000)
    assert sample.labels == {"team": "media"}
    assert loaded.process_config("sample").command == ("python", "-m", "popflow.handler.sample")
    assert loaded.pod_types() == ("encode", "sample")
