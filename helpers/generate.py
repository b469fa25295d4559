"""Paired fakes: ask an image generator for an image-to-image variation of each real face.

The report made one DALL-E 2 variation per real FFHQ face. :class:`OpenAIVariations`
implements the OpenAI Images API ``variations`` endpoint (model name a parameter); any other
generator, for example a local Stable Diffusion img2img pipeline, plugs in by subclassing
:class:`ImageGenerator` and implementing ``variation``. :func:`generate_pairs` prints the
estimated cost before any paid call, enforces a hard cap, skips pairs already done, and
writes ``pairs.csv`` linking each fake to its real image so splits keep pairs together.

The API key is read from the environment only (``OPENAI_API_KEY``); it is sent in the
request header and never printed, logged or written to a file.
"""

from __future__ import annotations

import base64
import io
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

import pandas as pd
from PIL import Image

from helpers import atomic
from helpers.data import load_image

PAIRS_FILE = "pairs.csv"
PAIR_COLUMNS = ["pair_id", "real_path", "fake_path", "generator", "model"]
# US$ per image for DALL-E 2 (published price list); other models: pass cost_per_image.
DALLE2_PRICES = {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.020}


class MissingCredentials(RuntimeError):
    """The generator's key is not set in the environment."""


class GeneratorError(RuntimeError):
    """The generator failed for good (after retries) or answered something unusable."""


class ImageGenerator(ABC):
    """An image-to-image generator: PNG bytes of a real face in, PNG/JPEG bytes of a variation out.

    To add one (e.g. a local Stable Diffusion img2img with ``diffusers`` on a GPU), subclass,
    set ``name`` (the ``fake/<name>/`` folder), ``model`` and ``cost_per_image``, and implement
    :meth:`variation`.
    """

    name: str = "generator"
    model: str = ""
    cost_per_image: float = 0.0

    @abstractmethod
    def variation(self, png: bytes) -> bytes:
        """Return the encoded bytes of one variation of the given square PNG."""


class OpenAIVariations(ImageGenerator):
    """OpenAI Images API ``POST /images/variations`` (DALL-E 2 in the report).

    Retries 429 and 5xx answers with exponential backoff (honouring ``Retry-After``) and keeps
    at least ``min_interval`` seconds between requests.
    """

    def __init__(self, model: str = "dall-e-2", size: str = "256x256", name: str = "dalle2",
                 base_url: str = "https://api.openai.com/v1", key_env: str = "OPENAI_API_KEY",
                 max_retries: int = 5, min_interval: float = 1.0, backoff: float = 1.0,
                 timeout: float = 120.0, cost_per_image: float | None = None) -> None:
        key = os.environ.get(key_env, "")
        if not key:
            raise MissingCredentials(f"set {key_env} in the environment to use the Images API")
        self._key = key
        self.model, self.size, self.name = model, size, name
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.min_interval = max_retries, min_interval
        self.backoff, self.timeout = backoff, timeout
        self.cost_per_image = cost_per_image if cost_per_image is not None else DALLE2_PRICES.get(size, 0.02)
        self._last_call = 0.0
        self.requests_made = 0

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIVariations(model={self.model!r}, size={self.size!r}, base_url={self.base_url!r})"

    def _wait_for_slot(self) -> None:
        delay = self.min_interval - (time.monotonic() - self._last_call)
        if delay > 0:
            time.sleep(delay)
        self._last_call = time.monotonic()

    def variation(self, png: bytes) -> bytes:
        import requests

        for attempt in range(self.max_retries + 1):
            self._wait_for_slot()
            self.requests_made += 1
            try:
                response = requests.post(
                    f"{self.base_url}/images/variations",
                    headers={"Authorization": f"Bearer {self._key}"},
                    files={"image": ("face.png", png, "image/png")},
                    data={"model": self.model, "n": "1", "size": self.size, "response_format": "b64_json"},
                    timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                status, detail, retry_after = None, type(exc).__name__, None
            else:
                if response.ok:
                    return self._decode(response.json())
                status, detail = response.status_code, response.text[:200]
                retry_after = response.headers.get("Retry-After")
                if status not in (408, 409, 429) and status < 500:
                    raise GeneratorError(f"Images API answered {status}: {detail}")
            if attempt == self.max_retries:
                raise GeneratorError(f"Images API still failing after {self.max_retries} retries "
                                     f"(last: {status} {detail})")
            time.sleep(float(retry_after) if retry_after else self.backoff * 2 ** attempt)
        raise GeneratorError("unreachable")

    def _decode(self, payload: dict) -> bytes:
        import requests

        item = (payload.get("data") or [{}])[0]
        if item.get("b64_json"):
            return base64.b64decode(item["b64_json"])
        if item.get("url"):
            return requests.get(item["url"], timeout=self.timeout).content
        raise GeneratorError("Images API answer has neither b64_json nor url")


def square_png(path: str | Path, size: int = 512, max_bytes: int = 4 * 1024 * 1024) -> bytes:
    """The image as a centre-cropped square RGB PNG under the API's 4 MB limit."""
    loaded = load_image(path)
    if not loaded.ok:
        raise GeneratorError(f"{path}: {loaded.error}")
    image = Image.fromarray(loaded.image)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    if buffer.tell() > max_bytes:
        raise GeneratorError(f"{path}: PNG of {buffer.tell()} bytes exceeds {max_bytes}")
    return buffer.getvalue()


def load_pairs(root: str | Path) -> pd.DataFrame:
    """The pairs table of a data root (empty if none)."""
    path = Path(root) / PAIRS_FILE
    return pd.read_csv(path, keep_default_na=False) if path.exists() else pd.DataFrame(columns=PAIR_COLUMNS)


def generate_pairs(real_paths: list[str], root: str | Path, generator: ImageGenerator, max_images: int,
                   progress: bool = True) -> pd.DataFrame:
    """Make one variation per real image (paths relative to ``root``) into ``fake/<generator.name>/``.

    Pairs already in ``pairs.csv`` with their file present are skipped, so an interrupted run
    resumes. At most ``max_images`` new images are requested; the estimated cost is printed
    before the first request. Returns the full pairs table.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    pairs = load_pairs(root)
    done = {r.real_path for r in pairs.itertuples()
            if r.generator == generator.name and (root / r.fake_path).exists()}
    todo = [p for p in real_paths if p not in done]
    if len(todo) > max_images:
        print(f"cap: {len(todo)} real images wait for a variation; requesting only the first {max_images}")
        todo = todo[:max_images]
    print(f"{generator!r}: {len(done)} pairs already done, {len(todo)} to request, estimated cost "
          f"US$ {len(todo) * generator.cost_per_image:.2f} ({generator.cost_per_image:.3f} per image)")
    out_dir = root / "fake" / generator.name
    out_dir.mkdir(parents=True, exist_ok=True)
    for real in tqdm(todo, desc=f"variations ({generator.name})", disable=not progress):
        content = generator.variation(square_png(root / real))
        fake = out_dir / f"{Path(real).stem}_{generator.name}.png"
        atomic.write_bytes(fake, content)
        row = dict(pair_id=f"pair-{Path(real).stem}", real_path=real,
                   fake_path=fake.relative_to(root).as_posix(), generator=generator.name,
                   model=generator.model)
        pairs = pd.concat([pairs[pairs["real_path"].ne(real) | pairs["generator"].ne(generator.name)],
                           pd.DataFrame([row])], ignore_index=True)
        atomic.write_csv(root / PAIRS_FILE, pairs)  # after every image: resumable
    return pairs


def maybe_generate_pairs(root: str | Path, count: int, model: str = "dall-e-2", size: str = "256x256",
                         seed: int = 0, base_url: str = "https://api.openai.com/v1") -> pd.DataFrame | None:
    """Notebook 01's optional step: skipped, with the reason, when not asked for or not possible.

    Picks ``count`` real images by a seeded hash of their path and makes one variation each.
    """
    import hashlib

    root = Path(root)
    if count <= 0:
        print("Paired-fake generation skipped (generate_count=0).")
        return None
    if not os.environ.get("OPENAI_API_KEY"):
        print("Paired-fake generation skipped: OPENAI_API_KEY is not set in the environment.")
        return None
    if not os.access(root, os.W_OK):
        print(f"Paired-fake generation skipped: {root} is read-only; fetch or copy data into data/faces.")
        return None
    reals = sorted((p.relative_to(root).as_posix() for p in (root / "real").rglob("*") if p.is_file()),
                   key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    generator = OpenAIVariations(model=model, size=size, base_url=base_url)
    return generate_pairs(reals[:count], root, generator, max_images=count)
