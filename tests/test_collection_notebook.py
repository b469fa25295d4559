"""Notebook 01 runs every collection path offline: mirror fetch, paired fakes, S3 upload."""

import io
import os
import sys
import zipfile

import pandas as pd
import pytest
import yaml
from conftest import smooth_image, write_jpeg
from servers import ImagesAPIServer, free_port

from helpers import reproduce, sources, storage

KEY = "sk-notebook-" + "z" * 40


@pytest.mark.integration
def test_notebook_01_fetches_generates_and_uploads(tmp_path, monkeypatch):
    from moto.server import ThreadedMotoServer

    faces = tmp_path / "faces"
    for k in range(12):
        write_jpeg(faces / "real" / "cam" / f"real{k}.jpg", smooth_image(100 + k, 96))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for k in range(12):
            image = write_jpeg(tmp_path / "src" / f"sd{k}.jpg", smooth_image(200 + k, 96))
            zf.write(image, f"SDFD-main/allImages/sd{k}.jpg")
    (mirror / "sdfd-github.zip").write_bytes(buffer.getvalue())
    # The real entry is pinned to the sample's files; a registry of our own pins the test images instead.
    entry = {k: v for k, v in vars(sources.load_registry()["sdfd-github"]).items() if v is not None and k != "extra"}
    entry.update(files=str(tmp_path / "pins.csv"), expected_count=12)
    sources.write_pins(tmp_path / "src", entry["files"])
    registry_path = tmp_path / "sources.yml"
    registry_path.write_text(yaml.safe_dump({"sources": [entry]}))

    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    endpoint = f"http://127.0.0.1:{port}"
    storage.s3_client(endpoint).create_bucket(Bucket="lab")
    try:
        with ImagesAPIServer(script=[429], key=KEY) as api:
            monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
            output = tmp_path / "runs" / "nb01.ipynb"
            reproduce.run_notebook(reproduce.NOTEBOOKS_DIR / "01_data_collection.ipynb", output, dict(
                run_name="collect", runs_root=str(tmp_path / "runs"), figures_dir=str(tmp_path / "figs"),
                data_root=str(faces), collect_root=str(faces), fetch_sources=["sdfd-github"],
                registry_path=str(registry_path),
                mirror=str(mirror), generate_count=4, generator_base_url=f"{api.url}/v1",
                s3_bucket="lab", s3_prefix="course", s3_endpoint=endpoint))
        objects = storage.list_objects(storage.s3_client(endpoint), "lab", "course")
    finally:
        s3.stop()

    assert len(list((faces / "fake" / "sd21").glob("*.jpg"))) == 12
    assert len(list((faces / "fake" / "dalle2").glob("*.png"))) == 4
    split = pd.read_csv(tmp_path / "runs" / "collect" / "split.csv", keep_default_na=False)
    paired = split[split["pair_id"] != ""]
    assert len(paired) == 8 and paired.groupby("pair_id")["split"].nunique().max() == 1
    assert "course/manifest.csv" in objects and "course/faces/pairs.csv" in objects
    assert "course/faces/provenance.csv" in objects
    assert sum(k.startswith("course/faces/fake/dalle2/") for k in objects) == 4
    assert KEY not in output.read_text()
    assert (tmp_path / "figs" / "01_data_card.png").is_file()
