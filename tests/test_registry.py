"""The one registry: built-ins, run-time registrations and entry points found by
importlib.metadata, with errors that name the known names and the broken plugin.

Plugins here are real distribution metadata (a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt``) on ``sys.path``: the files pip would write, read by the real
:mod:`importlib.metadata`. ``tests/test_plugins.py`` installs a plugin with pip itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from routecast.cli import COMMANDS
from routecast.data import IMPORTERS, load_dataset, save_dataset
from routecast.errors import ConfigError
from routecast.registry import GROUPS, Registry, resolve
from routecast.routers import ROUTERS, make_router, router_names
from tests.toy import toy_dataset


def write_dist(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for fake-installed distributions; registries re-read after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registries = (ROUTERS, IMPORTERS, COMMANDS)
    yield tmp_path
    for registry in registries:
        registry.refresh()


def test_builtins_list_in_documented_order_without_reading_entry_points() -> None:
    fresh = Registry[object]("thing", "routecast.test-nothing", {"b": "math:pi", "a": "math:e"},
                             lambda name, obj: obj)
    assert fresh.load("b") == pytest.approx(3.14159, abs=1e-5)
    assert fresh._plugins is None  # a built-in costs no metadata scan
    assert fresh.names() == ["b", "a"]
    with pytest.raises(ConfigError, match="unknown thing 'c'; known things: b, a"):
        fresh.load("c")
    assert "c" not in fresh and fresh.get("c") is None  # Mapping semantics


def test_every_group_is_documented() -> None:
    assert set(GROUPS) == {"routecast.routers", "routecast.signals", "routecast.encoders",
                           "routecast.formats", "routecast.commands",
                           "routecast.prompt_formats", "routecast.devices"}
    assert resolve("routecast.routers.knn:KNNRouter") is ROUTERS["knn"]
    assert resolve("routecast.data.routerbench") is IMPORTERS["routerbench"]


def test_entry_point_router_format_and_command_join_their_families(
        plugins: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    write_dist(plugins, "toyplug", """\
        [routecast.routers]
        always-large = toyplug_mod:AlwaysLarge
        [routecast.formats]
        toyjson = toyplug_fmt
        [routecast.commands]
        hello = toyplug_mod:hello
        """, {
        "toyplug_mod": """\
            import click
            from routecast.routers.baselines import BestSingleRouter

            class AlwaysLarge(BestSingleRouter):
                name = "always-large"

            @click.command()
            def hello() -> None:
                click.echo("hello from a plugin")
            """,
        "toyplug_fmt": """\
            from routecast.data import canonical

            def detect(path):
                return path.name.endswith(".toyjson")

            def load(path, *, seed=0, name=None):
                return canonical.load(path)
            """,
    })
    for registry in (ROUTERS, IMPORTERS, COMMANDS):
        registry.refresh()
    assert router_names()[-1] == "always-large"
    assert make_router("always-large").name == "always-large"
    # A data format: detected after the built-ins, by the plugin's own detect().
    folder = tmp_path_factory.mktemp("fmt")
    plain = save_dataset(toy_dataset(30), folder / "toy.jsonl")
    renamed = plain.rename(folder / "toy.toyjson")
    assert "toyjson" in IMPORTERS
    assert load_dataset(renamed).n_prompts == 30
    # A command: listed in --help and run by name.
    assert isinstance(COMMANDS["hello"], click.Command) and "hello" in list(COMMANDS)


def test_a_broken_plugin_is_named_and_a_built_in_cannot_be_shadowed(plugins: Path) -> None:
    write_dist(plugins, "badplug", """\
        [routecast.routers]
        broken = badplug_mod:Broken
        knn = badplug_mod:Broken
        misnamed = badplug_mod:Misnamed
        """, {"badplug_mod": """\
            from routecast.routers.baselines import CheapestRouter
            raise_now = True

            class Misnamed(CheapestRouter):
                name = "something-else"
            """})
    ROUTERS.refresh()
    with pytest.warns(UserWarning, match="ignoring plugin router 'knn'"):
        names = router_names()
    assert "broken" in names and names.count("knn") == 1
    assert ROUTERS["knn"].__module__ == "routecast.routers.knn"
    with pytest.raises(ConfigError, match=r"plugin router 'broken' \(badplug_mod:Broken, from "
                                          r"distribution 'badplug'\) failed to load: "
                                          r"AttributeError.*Fix: reinstall or uninstall"):
        make_router("broken")
    with pytest.raises(ConfigError, match="class attribute `name` is 'something-else'"):
        make_router("misnamed")


def test_cli_help_lists_plugin_commands_but_running_a_built_in_reads_no_metadata() -> None:
    code = ("import sys; from routecast.cli import COMMANDS, cli; "
            "cli.main(['info', '--help'], standalone_mode=False); "
            "print('metadata' if COMMANDS._plugins is not None else 'none', "
            "'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-2:] == ["none", "False"]


def test_the_help_summaries_of_built_in_commands_are_their_own() -> None:
    from routecast.cli import _BUILTINS, SUMMARIES

    assert set(SUMMARIES) == set(_BUILTINS)
    for name, summary in SUMMARIES.items():
        assert COMMANDS.load(name).get_short_help_str(1000) == summary, name
