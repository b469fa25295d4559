from pathlib import Path

import pytest

from helpers import config


def make_root(path: Path) -> Path:
    (path / "real").mkdir(parents=True)
    return path


def test_resolution_order(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shared = make_root(tmp_path / "shared" / "data" / "faces")
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    assert config.resolve_data_root(repo_root=repo) == shared.resolve()
    local = make_root(repo / "data" / "faces")
    assert config.resolve_data_root(repo_root=repo) == local.resolve()
    env_root = make_root(tmp_path / "env_faces")
    monkeypatch.setenv(config.DATA_ENV, str(env_root))
    assert config.resolve_data_root(repo_root=repo) == env_root.resolve()
    explicit = make_root(tmp_path / "explicit")
    assert config.resolve_data_root(explicit, repo_root=repo) == explicit.resolve()


def test_explicit_path_that_is_wrong_is_an_error_not_a_fallthrough(tmp_path, monkeypatch):
    make_root(tmp_path / "shared" / "data" / "faces")
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    with pytest.raises(config.DataNotFoundError) as err:
        config.resolve_data_root(tmp_path / "typo", repo_root=tmp_path / "repo")
    assert "typo" in str(err.value) and "not found" in str(err.value)


def test_missing_data_lists_every_place_and_how_to_get_data(tmp_path, monkeypatch):
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    (tmp_path / "repo" / "data" / "faces").mkdir(parents=True)
    with pytest.raises(config.DataNotFoundError) as err:
        config.resolve_data_root(repo_root=tmp_path / "repo")
    message = str(err.value)
    assert str(tmp_path / "repo" / "data" / "faces") in message
    assert "exists but has no real/ or fake/ folder" in message
    assert str(tmp_path / "shared" / "data" / "faces") in message
    assert "FAKEFACE_DATA" in message


def test_run_config_round_trip(face_tree, tmp_path):
    cfg = config.make_config(run_name="t", data_root=str(face_tree), runs_root=str(tmp_path / "runs"),
                             figures_dir=str(tmp_path / "figs"), image_size=96, seed=7)
    config.save_run_config(cfg)
    again = config.load_run_config("t", str(tmp_path / "runs"), str(tmp_path / "figs"))
    assert (again.data_root, again.image_size, again.seed) == (cfg.data_root, 96, 7)
    with pytest.raises(FileNotFoundError, match="run notebook 01"):
        config.load_run_config("missing", str(tmp_path / "runs"))
