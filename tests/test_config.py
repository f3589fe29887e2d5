"""Pipeline config validation: good files load, bad ones name the field and the file."""

import asyncio
from pathlib import Path

import pytest

from annotator.backends import BACKENDS, build_backend, teacher_config
from annotator.backends.local_llama import LocalTeacherConfig
from annotator.backends.openai_config import OpenAITeacherConfig
from annotator.backends.vllm_offline import VLLMTeacherConfig
from annotator.config import load_config
from annotator.errors import ConfigError
from annotator.tasks.label import LabelTaskConfig

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = """
name: t
input: {path: data.csv}
task:
  type: label
  labels:
    - {name: pos, description: positive}
    - neg
output: {dir: out}
"""


def test_shipped_pipelines_are_valid():
    files = sorted((REPO / "pipelines").glob("*.yaml"))
    assert files, "the project ships at least one pipeline"
    for f in files:
        cfg = load_config(f)
        assert cfg.input.path.is_absolute() and cfg.input.path.exists(), f


def test_relative_paths_resolve_against_the_yaml_directory(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.input.path == (tmp_path / "data.csv").resolve()
    assert cfg.output.dir == (tmp_path / "out").resolve()
    assert isinstance(cfg.task, LabelTaskConfig)
    assert cfg.task.label_names == ["pos", "neg"]
    assert cfg.task.labels[0].description == "positive"
    assert cfg.teacher.backend == "local"  # the offline default


@pytest.mark.parametrize(
    "broken, expected",
    [
        (GOOD.replace("labels:", "lables:"), "task.lables: unknown field"),
        (GOOD.replace("{dir: out}", "{}"), "output.dir: Field required"),
        (GOOD + "teacher: {backend: gpt}\n", "teacher.backend"),
        (GOOD + "teacher: {samples: 0}\n", "teacher.samples"),
        (GOOD.replace("type: label", "type: summarize"), "task"),
        (GOOD.replace("    - neg\n", "    - pos\n"), "duplicate label names: pos"),
        (GOOD.replace("    - neg\n", ""), "task.labels"),
    ],
)
def test_bad_config_names_field_and_file(tmp_path, broken, expected):
    path = write(tmp_path, broken)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert expected in msg


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_qa_bounds_checked(tmp_path):
    text = "name: q\ninput: {path: d.csv}\ntask: {type: qa, min_pairs: 4, max_pairs: 2}\noutput: {dir: o}\n"
    with pytest.raises(ConfigError, match="min_pairs"):
        load_config(write(tmp_path, text))


def teacher_errors(tmp_path: Path, teacher: str) -> list[str]:
    """The error lines of GOOD with this ``teacher`` section (the file's header line dropped)."""
    path = write(tmp_path, GOOD + f"teacher: {teacher}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    header, *lines = str(exc.value).splitlines()
    assert str(path) in header
    return lines


@pytest.mark.parametrize(
    "teacher, expected",
    [
        (
            "{backend: openai, model: m, n_ctx: 512}",
            "teacher.n_ctx: not a setting of backend openai (it belongs to backend local)",
        ),
        (
            "{backend: openai, model: m, vllm_engine_args: {}}",
            "teacher.vllm_engine_args: not a setting of backend openai (it belongs to backend vllm)",
        ),
        (
            "{base_url: 'http://127.0.0.1:8000/v1'}",
            "teacher.base_url: not a setting of backend local (it belongs to backend openai)",
        ),
        (
            "{backend: local, mode: batch}",
            "teacher.mode: not a setting of backend local (it belongs to backend openai)",
        ),
        (
            "{backend: local, batch_size: 8}",
            "teacher.batch_size: not a setting of backend local (it belongs to backend vllm)",
        ),
        (
            "{backend: vllm, model: m, parallel: 4}",
            "teacher.parallel: not a setting of backend vllm (it belongs to backend local)",
        ),
        (
            "{backend: vllm, model: m, price: {input: 1, output: 2}}",
            "teacher.price: not a setting of backend vllm (it belongs to backend openai)",
        ),
        (
            "{backend: vllm, model: m, timeout: 5}",
            "teacher.timeout: not a setting of backend vllm (it belongs to backend openai)",
        ),
    ],
)
def test_a_setting_of_another_backend_is_one_line_naming_both(tmp_path, teacher, expected):
    assert teacher_errors(tmp_path, teacher) == [f"  - {expected}"]


def test_unknown_teacher_settings_and_backends(tmp_path):
    assert teacher_errors(tmp_path, "{backend: openai, model: m, concurrencyy: 4}") == [
        "  - teacher.concurrencyy: unknown field (check spelling)"
    ]
    assert teacher_errors(tmp_path, "{backend: gpt}") == [
        "  - teacher.backend: unknown backend 'gpt' (known: local, openai, vllm)"
    ]
    # a bad value of a backend's own setting is located without the backend tag
    assert teacher_errors(tmp_path, "{backend: openai, model: m, concurrency: lots}")[0].startswith(
        "  - teacher.concurrency: Input should be a valid integer"
    )


@pytest.mark.parametrize(
    "teacher, expected",
    [
        (
            "{backend: null}",
            "teacher.backend: unknown backend null (known: local, openai, vllm; leave backend out for local)",
        ),
        ("{backend: 3}", "teacher.backend: unknown backend 3 (known: local, openai, vllm)"),
        (
            "{backend: OpenAI}",
            "teacher.backend: unknown backend 'OpenAI' (known: local, openai, vllm; did you mean 'openai'?)",
        ),
        (
            "",
            "teacher: expected a section of settings (key: value lines), got nothing (an empty section: fill it, "
            "or remove it for the defaults)",
        ),
        ("3", "teacher: expected a section of settings (key: value lines), got 3"),
    ],
)
def test_a_backend_that_is_no_name_says_the_fix(tmp_path, teacher, expected):
    """Not Python's words ('None', 'instance of LocalTeacherConfig'): the value as written and what to write."""
    assert teacher_errors(tmp_path, teacher) == [f"  - {expected}"]


def test_a_backend_switched_by_set_is_named_in_the_other_backend_error(tmp_path):
    path = write(tmp_path, GOOD + "teacher: {n_ctx: 512}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["teacher.backend=openai"])
    assert str(exc.value).splitlines()[1:] == [
        "  - teacher.n_ctx: not a setting of backend openai (it belongs to backend local) "
        "(from --set teacher.backend=openai)"
    ]


def test_teacher_backend_defaults_to_local(tmp_path):
    assert isinstance(load_config(write(tmp_path, GOOD)).teacher, LocalTeacherConfig)  # no teacher section
    cfg = load_config(write(tmp_path, GOOD + "teacher: {n_ctx: 512, samples: 3}\n"))  # a section without backend
    assert isinstance(cfg.teacher, LocalTeacherConfig)
    assert (cfg.teacher.backend, cfg.teacher.n_ctx, cfg.teacher.samples) == ("local", 512, 3)


@pytest.mark.parametrize("f", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda f: f.name)
def test_shipped_pipelines_have_a_local_teacher(f):
    assert isinstance(load_config(f).teacher, LocalTeacherConfig)


@pytest.mark.parametrize(
    "data, cls",
    [
        ({"backend": "local", "n_ctx": 512, "ray": {"workers": 2}}, LocalTeacherConfig),
        (
            {"backend": "openai", "model": "m", "rpm": 60, "price": {"input": 1, "output": 2}, "max_cost": 3},
            OpenAITeacherConfig,
        ),
        ({"backend": "vllm", "model": "m", "vllm_engine_args": {"tensor_parallel_size": 2}}, VLLMTeacherConfig),
    ],
)
def test_teacher_settings_round_trip_through_json(data, cls):
    # run.json records the effective config, and a Ray worker rebuilds its backend's settings from JSON
    cfg = teacher_config(data)
    assert type(cfg) is cls and cls is BACKENDS[data["backend"]]
    again = teacher_config(cfg.model_dump_json())
    assert type(again) is cls and again == cfg


def test_build_backend_builds_the_backend_of_the_settings():
    cfg = teacher_config({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "concurrency": 3})
    backend = build_backend(cfg)  # no request is made
    assert (backend.name, backend.model_id, backend.max_concurrency) == ("openai", "openai:http://127.0.0.1:9/v1:m", 3)
    asyncio.run(backend.aclose())
