"""Near-duplicate files by MinHash over token 5-grams, as BigCode deduplicates The Stack.

Copies of a file with small edits (a vendored module patched in one place, the same template
in ten services) would be learnt many times over. Each file becomes the set of its 5-grams of
``\\w+`` tokens (hashed); MinHash with ``PERMUTATIONS`` seeded hash functions estimates the Jaccard
similarity J(A, B) = |A and B| / |A or B| of two sets as the share of equal signature entries.
Locality-sensitive hashing (``BANDS`` bands of ``ROWS`` rows) finds candidate pairs without
comparing all pairs: two files with similarity s become candidates with probability
1 - (1 - s^ROWS)^BANDS (about 0.97 at s = 0.85 with 8 x 8), and a candidate counts as a
duplicate when its estimated similarity reaches the threshold. The first file (in path order)
is kept. Everything is seeded, so the same tree gives the same result in every run.
"""

import re
import zlib

import numpy as np

PERMUTATIONS = 64
BANDS = 8
ROWS = PERMUTATIONS // BANDS
SHINGLE = 5
_TOKEN = re.compile(r"\w+")
_CHUNK = 8192
# Odd 64-bit constants that combine a 5-gram's token hashes (fixed: signatures must not
# change between runs or machines).
_MIXERS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD],
    dtype=np.uint64,
)  # fmt: skip


class NearDuplicates:
    """Remembers the signatures of kept files and answers: is this one a near-duplicate?"""

    def __init__(self, threshold: float, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        # Multiply-shift hashing, h -> ((a h + b) mod 2^64) >> 32 with a odd: a 2-universal
        # family that needs no modulus (uint64 arithmetic wraps by itself). A family without
        # mixing, e.g. (a h + b) mod p with p above every a h, would pick the same minimal
        # shingle for every "permutation".
        self._a = rng.integers(0, 1 << 63, PERMUTATIONS, dtype=np.uint64) * 2 + 1
        self._b = rng.integers(0, 1 << 63, PERMUTATIONS, dtype=np.uint64)
        self.threshold = threshold
        self._buckets: list[dict[bytes, int]] = [{} for _ in range(BANDS)]
        self._signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray | None:
        """The MinHash signature of ``text``'s 5-gram set; None when it has no 5-gram.

        Vectorised: each token is hashed once (crc32, through ``map`` so no Python frame per
        token), a 5-gram's hash is a fixed random linear combination of its tokens' hashes
        (uint64 arithmetic wraps, which is fine for hashing), its top 32 bits kept.
        """
        tokens = _TOKEN.findall(text)
        if len(tokens) < SHINGLE:
            return None
        # Text decoded with errors="replace" holds no lone surrogates: plain UTF-8 encodes it.
        hashes = np.fromiter(
            map(zlib.crc32, map(str.encode, tokens)), dtype=np.uint64, count=len(tokens)
        )
        count = len(tokens) - SHINGLE + 1
        with np.errstate(over="ignore"):
            combined = sum(
                hashes[offset : offset + count] * _MIXERS[offset] for offset in range(SHINGLE)
            )
        shingles = np.unique(combined >> np.uint64(32))
        result = np.full(PERMUTATIONS, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(shingles), _CHUNK):
            chunk = shingles[start : start + _CHUNK, None]
            with np.errstate(over="ignore"):
                permuted = (chunk * self._a + self._b) >> np.uint64(32)
            np.minimum(result, permuted.min(axis=0), out=result)
        return result

    def is_duplicate(self, text: str) -> bool:
        """True when ``text`` is a near-duplicate of a file seen before; else remember it."""
        signature = self.signature(text)
        if signature is None:
            return False
        bands = [signature[band * ROWS : (band + 1) * ROWS].tobytes() for band in range(BANDS)]
        candidates = {
            self._buckets[band][key] for band, key in enumerate(bands) if key in self._buckets[band]
        }
        for candidate in sorted(candidates):
            if np.mean(self._signatures[candidate] == signature) >= self.threshold:
                return True
        index = len(self._signatures)
        self._signatures.append(signature)
        for band, key in enumerate(bands):
            self._buckets[band].setdefault(key, index)
        return False
