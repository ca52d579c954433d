"""The probgen command: graph and query subcommands, clear errors with exit status 2."""

from __future__ import annotations

import pytest

from probgen.cli import main


def test_query_prints_the_posterior(capsys):
    assert main(["query", "asia", "lung", "--evidence", "smoke=yes"]) == 0
    out = capsys.readouterr().out
    assert "lung(yes)" in out and "0.1000" in out


def test_bad_state_is_one_clear_line(capsys):
    assert main(["query", "asia", "lung", "--evidence", "smoke=maybe"]) == 2
    err = capsys.readouterr().err
    assert "'maybe'" in err and "'smoke'" in err and "Traceback" not in err


def test_unknown_network_names_it(capsys):
    assert main(["query", "nosuchnet", "A"]) == 2
    assert "nosuchnet" in capsys.readouterr().err


def test_graph_list_and_show(tmp_path, capsys):
    assert main(["graph", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"sprinkler", "asia", "vae", "alarm"} <= set(names)
    png = tmp_path / "vae.png"
    assert main(["graph", "show", "vae", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_family_is_refused():
    with pytest.raises(SystemExit):
        main(["train", "nosuchfamily"])
