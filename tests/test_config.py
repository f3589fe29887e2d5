"""Pipeline config validation: good files load, bad ones name the field and the file."""

from pathlib import Path

import pytest

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
