"""Paired-fake generation against a local server implementing the Images API variations contract."""

import pytest
from conftest import smooth_image, write_jpeg
from servers import ImagesAPIServer

from helpers import data, generate, splits

KEY = "sk-test-" + "q" * 40


@pytest.fixture
def real_root(tmp_path):
    root = tmp_path / "faces"
    for k in range(4):
        write_jpeg(root / "real" / "cam" / f"face{k}.jpg", smooth_image(k, 80))
    return root


def _generator(server, **kwargs):
    return generate.OpenAIVariations(base_url=f"{server.url}/v1", min_interval=0.0, backoff=0.01, **kwargs)


def _reals(root):
    return sorted(p.relative_to(root).as_posix() for p in (root / "real").rglob("*.jpg"))


def test_retries_cap_pairs_and_resume(real_root, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ImagesAPIServer(script=[429, 500], key=KEY) as server:
        generator = _generator(server)
        pairs = generate.generate_pairs(_reals(real_root), real_root, generator, max_images=3, progress=False)
        assert len(pairs) == 3 and generator.requests_made == 5  # 2 refused, then 3 answered
        assert all(r["auth_ok"] for r in server.requests)
        assert server.requests[0]["fields"] == ["image", "model", "n", "response_format", "size"]
        out = capsys.readouterr().out
        assert "cap: 4 real images" in out and "estimated cost US$ 0.05" in out

        again = _generator(server)
        pairs = generate.generate_pairs(_reals(real_root), real_root, again, max_images=10, progress=False)
        assert again.requests_made == 1 and len(pairs) == 4  # only the missing pair was requested
    for row in pairs.itertuples():
        assert (real_root / row.fake_path).is_file() and row.fake_path.startswith("fake/dalle2/")
        assert row.pair_id == f"pair-{row.real_path.split('/')[-1].removesuffix('.jpg')}"


def test_pairs_stay_on_one_side_of_the_split(real_root, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for k in range(4, 24):
        write_jpeg(real_root / "real" / "cam" / f"face{k}.jpg", smooth_image(k, 80))
    with ImagesAPIServer(key=KEY) as server:
        generate.generate_pairs(_reals(real_root), real_root, _generator(server), max_images=50,
                                progress=False)
    manifest = data.scan_folder(real_root, progress=False)
    assert (manifest["pair_id"] != "").all()
    split = splits.split_manifest(manifest, seed=0)
    assert split.groupby("pair_id")["split"].nunique().max() == 1


def test_the_key_is_never_written_or_shown(real_root, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ImagesAPIServer(script=[500], key=KEY) as server:
        generator = _generator(server)
        generate.generate_pairs(_reals(real_root), real_root, generator, max_images=2, progress=False)
    assert KEY not in repr(generator) and KEY not in capsys.readouterr().out
    for path in real_root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_missing_key_and_hard_errors_are_clear(real_root, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(generate.MissingCredentials, match="OPENAI_API_KEY"):
        generate.OpenAIVariations()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with ImagesAPIServer(key=KEY) as server, pytest.raises(generate.GeneratorError, match="401"):
        generate.generate_pairs(_reals(real_root), real_root, _generator(server), 1, progress=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    failing = ImagesAPIServer(script=[503] * 5, key=KEY)
    with failing as server, pytest.raises(generate.GeneratorError, match="after 2 retries"):
        generate.generate_pairs(_reals(real_root), real_root, _generator(server, max_retries=2), 1,
                                progress=False)


def test_a_custom_generator_plugs_in(real_root):
    class Mirror(generate.ImageGenerator):
        name, model, cost_per_image = "mirror", "flip", 0.0

        def variation(self, png: bytes) -> bytes:
            return png

    pairs = generate.generate_pairs(_reals(real_root), real_root, Mirror(), max_images=2, progress=False)
    assert set(pairs["generator"]) == {"mirror"} and len(list((real_root / "fake" / "mirror").iterdir())) == 2
