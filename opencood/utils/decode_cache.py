"""On-disk cache of decoded dataset files (point clouds, agent YAMLs, camera and depth images).

Real OPV2V clouds are ASCII PCDs and the agent YAMLs are long: decoding them is most of a DataLoader
worker's time (about 17 ms per 100k-point cloud and 11 ms per YAML on one core), and training reads
every frame once per epoch. With ``data_cache_dir: PATH`` in the experiment YAML, the first read of a
file stores its decoded form under PATH (``.npy`` for clouds, pickle for YAML dicts and decoded PIL
images) and later reads load that instead (well under 1 ms each; an 800x600 PNG takes ~6 ms to decode).

A cache entry is named by a hash of the source's absolute path, size and modification time, so an
edited or replaced source file is decoded again; stale entries are simply never read. Entries are
written atomically (temp file + rename), so concurrent workers and killed runs never leave a partial
entry behind; an unreadable entry is ignored and rewritten. The cache never changes the dataset itself.
"""
import hashlib
import os
import pickle

import numpy as np

from opencood.utils.atomic_io import atomic_open


class DecodeCache:
    """Decoded-file cache under ``root`` (created on first write).

    Args:
        root: cache folder.
    """

    def __init__(self, root):
        self.root = os.path.abspath(str(root))

    def entry_path(self, source, kind):
        """Cache file of ``source`` (``kind``: ``npy`` or ``pkl``); keyed by path, size and mtime."""
        st = os.stat(source)
        key = f"{os.path.abspath(source)}|{st.st_size}|{st.st_mtime_ns}|{kind}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return os.path.join(self.root, digest[:2], f"{digest}.{kind}")

    def get(self, source, decode, kind):
        """``decode(source)``, or its cached result.

        Args:
            source: dataset file path.
            decode: function reading ``source`` (its errors propagate; nothing is cached then).
            kind: ``npy`` (decode returns an ndarray) or ``pkl`` (any picklable object).
        """
        try:
            entry = self.entry_path(source, kind)
        except OSError:  # missing/unreadable source: the decoder raises its own one-line error
            return decode(source)
        if os.path.isfile(entry):
            try:
                if kind == "npy":
                    return np.load(entry, allow_pickle=False)
                with open(entry, "rb") as f:
                    return pickle.load(f)
            except (OSError, ValueError, EOFError, pickle.UnpicklingError):
                pass  # unreadable entry (disk trouble, foreign file): decode again and rewrite it
        value = decode(source)
        self._write(entry, value, kind)
        return value

    @staticmethod
    def _write(entry, value, kind):
        try:
            os.makedirs(os.path.dirname(entry), exist_ok=True)
            with atomic_open(entry, "wb") as f:
                if kind == "npy":
                    np.save(f, value, allow_pickle=False)
                else:
                    pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError:
            return  # read-only or full cache disk: training goes on without caching
