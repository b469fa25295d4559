"""Notebook 08's protocol results kept between runs: frozen heads and fine-tuned detectors' scores.

A warm ``make reproduce`` reads every fine-tuned detector back from the trained-model cache
(:mod:`helpers.training_cache`), yet notebook 08 still trained each frozen head again (dozens of
them over the ablation, the cross-source matrix and both leave-one-out protocols) and scored every
fine-tuned detector's validation and test images again, clean and under each perturbation. That was
most of a warm run (08 took 13.4 of 22.5 min on a 2-core machine, 2026-12-04). :class:`CachedBank`
wraps a protocol bank (:class:`helpers.protocols.FeatureBank` or :class:`helpers.finetuned.ImageBank`),
answers the same ``train``/``score`` calls, and keeps under ``cache_dir``:

- ``heads/<key>/``: a frozen head's weights, its threshold, validation AUC, training time and log.
  The key covers everything deciding the head: the code (:func:`helpers.training_cache.code_fingerprint`
  of :mod:`helpers.protocols` and this module, with the TensorFlow, Keras and NumPy versions), the
  recipe, the seed, the training and validation rows (path, label, source) and a checksum of every
  feature array the head is trained or validated on;
- ``scores/<key>.npy``: a fine-tuned detector's scores of one split under one variant, keyed by its
  architecture and a checksum of every weight (so any detector with those weights, however obtained),
  the split's rows with each file's size and modification time, the variant, the recipe's scoring
  fields (test-time flip, fixed re-encoding), the bank's image size, framing and batch size, and the
  code of :mod:`helpers.finetuned` and this module.

A head read back is the head training would give (training is deterministic: the same recipe gives
the same head whatever ran before, :func:`helpers.protocols.train_recipe`); tables still show its
original training time. ``FAKEFACE_RETRAIN=1`` trains and scores everything again and replaces the
entries. Everything else goes to the wrapped bank unchanged.
"""

from __future__ import annotations

import hashlib
import tempfile
import weakref
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import atomic, finetuned, models, protocols, training_cache

HEAD_FILES = ("weights.npz", "log.csv")


def array_checksum(array: np.ndarray) -> str:
    """SHA-1 of an array's dtype, shape and bytes."""
    value = np.ascontiguousarray(array)
    digest = hashlib.sha1(f"{value.dtype}|{value.shape}".encode())
    digest.update(value.tobytes())
    return digest.hexdigest()


def rows_checksum(frame: pd.DataFrame) -> str:
    """SHA-1 of a frame's path, label and source columns, in order."""
    columns = [c for c in ("path", "label", "source") if c in frame.columns]
    return hashlib.sha1(frame[columns].astype(str).to_csv(index=False).encode()).hexdigest()


class CachedBank:
    """A protocol bank whose frozen heads and fine-tuned scores are kept on disk (see the module).

    ``hits`` and ``misses`` count what was read back and what was computed, per kind (``head``,
    ``scores``).
    """

    def __init__(self, bank, cache_dir: str | Path) -> None:
        self.bank = bank
        self.cache_dir = Path(cache_dir)
        self.hits = {"head": 0, "scores": 0}
        self.misses = {"head": 0, "scores": 0}
        self._checksums: dict[tuple, str] = {}
        self._weights: dict[int, str] = {}  # id(trained) -> checksum, dropped when the detector is

    def __getattr__(self, name: str):
        if name == "bank":  # not set yet (while unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.bank, name)

    # --- frozen heads -------------------------------------------------------------------------------
    def _feature_checksum(self, split: str, variant: str) -> str:
        if (split, variant) not in self._checksums:
            self._checksums[(split, variant)] = array_checksum(self.bank.arrays[split][variant])
        return self._checksums[(split, variant)]

    def head_key(self, recipe: protocols.Recipe, seed: int) -> str:
        """The key of training ``recipe``'s head on this bank with ``seed``."""
        variants = ["clean", "flipped"] + [f"{recipe.copy_kind}:{k}" for k in range(recipe.augment_copies)]
        train_rows = protocols.rows_of_sources(self.bank.frames["train"], recipe.train_sources)
        val_rows = protocols.rows_of_sources(self.bank.frames["val"], recipe.train_sources)
        return training_cache.training_key(dict(
            code=training_cache.code_fingerprint("helpers.protocols", "helpers.protocol_cache"),
            recipe=recipe.to_dict(), seed=seed, image_size=self.bank.image_size,
            train_rows=rows_checksum(self.bank.frames["train"].iloc[train_rows]),
            val_rows=rows_checksum(self.bank.frames["val"].iloc[val_rows]),
            train_features=[self._feature_checksum("train", v) for v in variants],
            val_features=self._feature_checksum("val", "clean")))

    def _train_head(self, recipe: protocols.Recipe, out_dir: str | Path, seed: int) -> protocols.TrainedHead:
        key = self.head_key(recipe, seed)
        heads = self.cache_dir / "heads"
        log_name = f"{protocols.checkpoint_name('head', recipe)}_log.csv"
        found = training_cache.lookup(heads, key)
        if found is not None and set(HEAD_FILES) <= set(found[1].get("files", {})):
            folder, entry = found
            self.hits["head"] += 1
            head = models.build_head("mobilenetv2", dropout=recipe.dropout, seed=seed)
            with np.load(folder / "weights.npz") as stored:
                head.set_weights([stored[f"w{i}"] for i in range(len(stored.files))])
            atomic.write_bytes(Path(out_dir) / log_name, (folder / "log.csv").read_bytes())
            return protocols.TrainedHead(recipe, head, float(entry["threshold"]), float(entry["val_auc"]),
                                         float(entry["seconds"]))
        self.misses["head"] += 1
        trained = protocols.train_recipe(recipe, self.bank, out_dir, seed=seed)
        with tempfile.TemporaryDirectory() as staging:
            weights = Path(staging) / "weights.npz"
            np.savez(weights, **{f"w{i}": w for i, w in enumerate(trained.head.get_weights())})
            training_cache.store(heads, key, {"weights.npz": weights, "log.csv": Path(out_dir) / log_name},
                                 dict(threshold=float(trained.threshold), val_auc=float(trained.val_auc),
                                      seconds=float(trained.seconds),
                                      recipe=recipe.to_dict()))
        return trained

    # --- fine-tuned detectors' scores -----------------------------------------------------------------
    def _rows_fingerprint(self, split: str) -> str:
        if ("rows", split) not in self._checksums:
            self._checksums[("rows", split)] = training_cache.data_fingerprint(self.bank.frames[split], self.bank.root)
        return self._checksums[("rows", split)]

    def _weights_checksum(self, trained) -> str:
        """The detector's architecture and weights (not its random-generator states, which inference
        never draws from and which differ between a model trained here and one read back)."""
        if id(trained) not in self._weights:
            digest = hashlib.sha1(training_cache.architecture(trained.model).encode())
            for weight in trained.model.weights:
                digest.update(array_checksum(np.asarray(weight)).encode())
            self._weights[id(trained)] = digest.hexdigest()
            weakref.finalize(trained, self._weights.pop, id(trained), None)  # its id may be reused after
        return self._weights[id(trained)]

    def scores_key(self, trained, split: str, variant: str) -> str:
        """The key of ``trained``'s scores of ``split`` under ``variant`` on this bank."""
        return training_cache.training_key(dict(
            code=training_cache.code_fingerprint("helpers.finetuned", "helpers.protocol_cache"),
            weights=self._weights_checksum(trained), rows=self._rows_fingerprint(split), split=split,
            variant=variant, tta_flip=trained.recipe.tta_flip,
            score_reencode=getattr(trained.recipe, "score_reencode", ""), image_size=self.bank.image_size,
            framing=self.bank.framing, batch_size=self.bank.batch_size))

    def _cached_scores(self, trained, split: str, variant: str) -> np.ndarray:
        if (split, variant) in trained.scores:
            return trained.scores[(split, variant)]
        target = self.cache_dir / "scores" / f"{self.scores_key(trained, split, variant)}.npy"
        if not training_cache.retrain_requested():
            scores = atomic.read_kept(target, np.load, "kept scores")
            if scores is not None and len(scores) == len(self.bank.frames[split]):
                self.hits["scores"] += 1
                trained.scores[(split, variant)] = scores
                return scores
        self.misses["scores"] += 1
        scores = self.bank.score(trained, split, variant)
        with atomic.atomic_path(target) as partial:
            np.save(partial, scores)
        return scores

    # --- the Bank protocol -----------------------------------------------------------------------------
    def train(self, recipe, out_dir: str | Path, seed: int = 42):
        """``recipe`` trained on the wrapped bank, or read back (frozen heads; fine-tuned detectors come
        from the trained-model cache as before, their validation scores from here)."""
        if isinstance(self.bank, protocols.FeatureBank):
            return self._train_head(recipe, out_dir, seed)
        return finetuned.train_finetuned(recipe, self, out_dir, seed=seed)

    def score(self, trained, split: str, variant: str = "clean") -> np.ndarray:
        """P(fake) of every row of ``split`` under ``variant`` (fine-tuned scores read back when kept)."""
        if isinstance(self.bank, protocols.FeatureBank):  # a head on stored features: milliseconds
            return self.bank.score(trained, split, variant)
        return self._cached_scores(trained, split, variant)

    def summary(self) -> str:
        """What was read back and what was trained or scored, in words."""
        if isinstance(self.bank, protocols.FeatureBank):
            return f"frozen heads: {self.hits['head']} read back, {self.misses['head']} trained"
        return f"fine-tuned score vectors: {self.hits['scores']} read back, {self.misses['scores']} computed"
