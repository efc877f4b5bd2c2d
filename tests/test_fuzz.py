"""Bad input, fuzzed: any value for any config key either trains (tiny data, one step) or is one clean
error line of a user-facing error class; never a raw exception, never a half-written output.

The property runs in-process, through the same steps as the command (``precompose``, Hydra's
compose, ``cli.run``), so it is fast; a few subprocess checks confirm what the user sees.  Set
MLPTRAIN_FUZZ_EXAMPLES to explore more (the default keeps the suite fast and deterministic).
"""

from __future__ import annotations

import json
import math
import os
import resource
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import TINY, mlptrain
from mlptrain import checkpoint, cli
from mlptrain.checkpoint import CheckpointError
from mlptrain.cli.train import flatten
from mlptrain.compose import CONFIG_PACKAGE, config_groups, precompose
from mlptrain.config import VISION, ConfigError
from mlptrain.data import DataError
from mlptrain.errors import TrainingError

USER_ERRORS = (ConfigError, DataError, CheckpointError, TrainingError)
BASE = [*TINY, "trainer.max_steps=1", "trainer.num_threads=0"]


def _leaf_keys() -> dict:
    """Every key of the composed config (default groups plus the keys other options add) and its default."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    keys = {}
    for extra in (["optim=sgd", "dataset=friedman1", "loss=gaussian_nll"], []):
        with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
            keys.update(flatten(OmegaConf.to_container(compose(config_name="config", overrides=extra))))
    return keys


def _offline(group: str, option: str) -> bool:
    """Options that need no download (image sets, and presets that pick one, would fetch data)."""
    from importlib import resources

    text = (resources.files(CONFIG_PACKAGE) / group / f"{option}.yaml").read_text()
    return option not in VISION and not any(f"/dataset: {v}" in text for v in VISION)


GROUPS = {g: [o for o in opts if _offline(g, o)] for g, opts in config_groups().items()}
DEFAULTS = _leaf_keys()
KEYS = sorted(DEFAULTS) + sorted(GROUPS)

# Numbers: small ones (valid and not), and extremes far beyond any allocation, never the in-between
# sizes that are valid but slow (a 10^9-sample data set is a user's right, not a fuzz case).
INTS = st.one_of(st.integers(-3, 12), st.sampled_from([2**48, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63), -(10**30)]))
FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.5, 1e-9, 0.999999])
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "${oc.env:HOME}",
            "${nope}",
            "a,b",
            "[1,",
            "'",
            '"',
            "\\",
            "=",
            "~x",
            "+",
            "null",
            "1e3",
            "0x10",
            "cuda:7",
            "mps",
            "relu ",
            "RELU",
            "torch.optim.SGD",
            "os.system",
            "builtins.eval",
            "subprocess.Popen",
            "torch.nn.Linear",
            "ü∂ƒ",
            "\u202e",
            "x" * 300,
        ]
    ),
)
SCALARS = st.one_of(INTS, FLOATS, st.booleans(), st.none(), TEXT)
LISTS = st.one_of(
    st.lists(st.one_of(INTS, FLOATS, TEXT), max_size=4),
    st.integers(500, 2000).map(lambda n: [1] * n),  # a huge list
    st.lists(st.lists(st.integers(1, 3), max_size=2), max_size=2),
)
VALUES = st.one_of(SCALARS, LISTS, st.dictionaries(st.sampled_from(["a", "lr", "x"]), SCALARS, max_size=2))


def near(default):
    """Plausible values next to a key's default, so that runs get past validation and into training."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(0, 4)
    if isinstance(default, float):
        return st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 2.0])
    if isinstance(default, list):
        return st.lists(st.integers(1, 6), max_size=3)
    return st.just(default)


NO_TRUE = {"trainer.compile"}  # torch.compile on CPU takes tens of seconds: fuzzed with junk only
RUN_LENGTH = {"trainer.epochs", "trainer.max_steps"}  # a valid 2**48-step run is a user's right, not a fuzz case


def render(v, quote: bool) -> str:
    """A value in Hydra's override syntax (strings quoted, or raw: Hydra may then refuse to parse)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, list):
        return "[" + ",".join(render(x, quote) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{render(x, quote)}" for k, x in v.items()) + "}"
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" if quote else v


@st.composite
def overrides(draw) -> list[str]:
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    if "trainer.epochs" in keys and "trainer.max_steps" in keys:
        keys.remove("trainer.epochs")  # one of the two always bounds the run
    out = []
    for key in keys:
        if key in GROUPS:
            value = draw(st.one_of(st.sampled_from(GROUPS[key] or ["x"]), TEXT))
        else:
            value = draw(st.one_of(near(DEFAULTS[key]), VALUES, near(DEFAULTS[key])))
            if key in NO_TRUE and value is True:
                value = "yes"
            if key in RUN_LENGTH and type(value) is int and 12 < value < 2**63:
                value = 2**63  # past the int64 step counter: must be refused, not trained
        out.append(f"{key}={render(value, draw(st.booleans()))}")
    return out


def attempt(argv: list[str], out: Path):
    """What `mlptrain ARGV` does, in-process: returns the metrics or raises a user error."""
    from hydra import compose, initialize_config_module

    precompose(argv)
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=argv)
    return cli.run(cfg, out)


def assert_outputs_whole(out: Path) -> None:
    if not out.exists():
        return
    assert not list(out.glob(".*.tmp")), "a temp file was left behind"
    if (out / "metrics.json").exists():
        assert json.loads((out / "metrics.json").read_text())["status"]
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            checkpoint.load(out / name)  # raises if partly written


@pytest.fixture
def guarded():
    """Restore torch's thread count, and cap memory: a value validation misses must fail an allocation
    (a clean out-of-memory error) instead of exhausting a shared machine."""
    threads = torch.get_num_threads()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status")
    if status.exists():
        vm = int(status.read_text().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 2**30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    torch.set_num_threads(threads)


@settings(
    max_examples=int(os.environ.get("MLPTRAIN_FUZZ_EXAMPLES", 40)),
    deadline=None,
    derandomize="MLPTRAIN_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(argv=overrides())
def test_any_override_trains_or_fails_with_one_clean_line(argv, tmp_path_factory, guarded):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    try:
        metrics = attempt([*BASE, *argv], out)
    except USER_ERRORS as e:
        msg = str(e)
        event("out of memory" if msg.startswith("out of memory") else type(e).__name__)
        assert msg and "\n" not in msg and "Traceback" not in msg, (argv, msg)
    else:
        assert metrics["status"] in ("completed", "early_stopped"), argv
        assert metrics["steps"] <= 1 or any(a.startswith("trainer.max_steps=") for a in argv)
        event("trained")
    assert_outputs_whole(out)


@pytest.mark.parametrize("override", ["trainer.batch_size='ü'", "dataset.n_samples=281474976710656"])
def test_the_command_answers_fuzzed_input_in_one_line(tmp_path, override):
    r = mlptrain(*BASE, override, cwd=tmp_path)
    assert r.returncode in (1, 2), (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlptrain: error: ") and "Traceback" not in r.stdout, r.stderr


# ----------------------------------------------------------------------------- malformed CSV files
CSV_CELLS = st.one_of(
    st.sampled_from(["1", "-2.5", "0", "x", "red", "", " ", "NA", "1e400", "3e39", "inf", "nan", "1,234.5", "3,14"]),
    st.sampled_from(['"', '"x', 'x"', '"a""b"', '"a,b"', '"two\nlines"', "a;b", "\t", '"1 234,5"']),
    st.text(alphabet='ab1.,;"\n ', max_size=4),
)


@st.composite
def csv_files(draw) -> str:
    width = draw(st.integers(1, 4))
    header = ",".join(f"c{j}" for j in range(width))
    rows = draw(
        st.lists(
            st.one_of(st.just([]), st.lists(CSV_CELLS, min_size=width, max_size=width + 1)), min_size=1, max_size=12
        )
    )
    return "\n".join([header, *(",".join(r) for r in rows)]) + draw(st.sampled_from(["\n", ""]))


@settings(
    max_examples=int(os.environ.get("MLPTRAIN_FUZZ_EXAMPLES", 60)),
    deadline=None,
    derandomize="MLPTRAIN_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(text=csv_files())
def test_every_line_of_a_malformed_csv_is_a_row_a_counted_skip_or_a_one_line_refusal(text, tmp_path_factory):
    from mlptrain.data.csv_reader import RawTable

    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_text(text, encoding="utf-8")
    try:
        raw = RawTable(str(path), "dataset.path", ",")
    except DataError as e:
        msg = str(e)
        event("refused")
        assert msg.startswith("dataset.path: ") and "\n" not in msg.replace("\\n", ""), msg
        return
    event("read")
    n_lines = len(text.splitlines()) if text.endswith("\n") or not text else len(text.split("\n"))
    starts, blank = list(raw.lines), set(raw.blank_lines)
    multiline = set(raw.multiline_rows)
    assert not set(starts) & blank
    owner = None  # every physical line after the header: a row's start, a blank line, or inside a multi-line row
    for line in range(2, n_lines + 1):
        if line in blank:
            owner = None
        elif line in starts:
            owner = line
        else:
            assert owner in multiline, (line, text)
    for name, col in raw.columns.items():
        assert len(col) == len(starts), name
