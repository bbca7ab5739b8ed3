"""On-disk cache of decoded dataset files (point clouds, agent YAMLs, camera and depth images).

Real OPV2V clouds are ASCII PCDs and the agent YAMLs are long: decoding them is most of a DataLoader
worker's time (about 17 ms per 100k-point cloud and 11 ms per YAML on one core), and training reads
every frame once per epoch. With ``data_cache_dir: PATH`` in the experiment YAML, the first read of a
file stores its decoded form under PATH and later reads load that instead (well under 1 ms each; an
800x600 PNG takes ~6 ms to decode).

Nothing read from the cache can execute code: clouds are ``.npy`` files read with
``np.load(allow_pickle=False)``; every other value (YAML dicts, decoded PIL images) is an ``.npz`` archive
of plain arrays, also read with ``allow_pickle=False``, holding a JSON tree of the value (dicts, lists,
tuples, strings, numbers, booleans, None) whose arrays and images are references to members of the
archive (an image is its mode, size, palette and raw pixel bytes). Entry names are computable from the
dataset, so a planted entry is possible; it can only fail to decode (then it is rewritten) or give data.

A cache entry is named by a hash of the source's absolute path, size and modification time, so an
edited or replaced source file is decoded again; stale entries are simply never read. Entries are
written atomically (temp file + rename), so concurrent workers and killed runs never leave a partial
entry behind; an unreadable entry is ignored and rewritten. The cache never changes the dataset itself.
"""
import hashlib
import io
import json
import os
import zipfile

import numpy as np
from PIL import Image

from opencood.utils.atomic_io import atomic_open

# value kinds: 'npy' (an ndarray), 'obj' (a tree of plain values, arrays and PIL images); 'pkl' is the
# former name of 'obj' and is kept so callers written against it keep working
_KIND_SUFFIX = {"npy": "npy", "obj": "npz", "pkl": "npz"}
_TREE = "tree"


def encode_tree(value):
    """Split ``value`` into a JSON-able tree and a list of arrays the tree refers to.

    Args:
        value: nested dicts (any JSON scalar keys), lists, tuples, str/int/float/bool/None, numpy arrays,
            numpy scalars and PIL images.

    Returns:
        (tree, arrays).

    Raises:
        TypeError: a value of another type (the caller then skips caching it).
    """
    arrays = []

    def enc(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (list, tuple)):
            return {"t": "list" if isinstance(v, list) else "tuple", "v": [enc(x) for x in v]}
        if isinstance(v, dict):
            return {"t": "dict", "v": [[enc(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise TypeError("object arrays are not cached")
            arrays.append(v)
            return {"t": "nd", "i": len(arrays) - 1}
        if isinstance(v, Image.Image):
            arrays.append(np.frombuffer(v.tobytes(), np.uint8))
            return {"t": "img", "i": len(arrays) - 1, "mode": v.mode, "size": list(v.size),
                    "palette": v.getpalette() if v.mode == "P" else None}
        raise TypeError(f"cannot cache a {type(v).__name__}")

    return enc(value), arrays


def decode_tree(tree, arrays):
    """Inverse of :func:`encode_tree`.

    Raises:
        ValueError: a malformed tree (unknown tag, bad reference, image bytes of the wrong size).
    """
    def dec(v):
        if not isinstance(v, dict):
            return v
        tag = v.get("t")
        if tag == "list":
            return [dec(x) for x in v["v"]]
        if tag == "tuple":
            return tuple(dec(x) for x in v["v"])
        if tag == "dict":
            return {_hashable(dec(k)): dec(x) for k, x in v["v"]}
        if tag == "nd":
            return arrays[int(v["i"])]
        if tag == "img":
            img = Image.frombytes(str(v["mode"]), tuple(int(s) for s in v["size"]), arrays[int(v["i"])].tobytes())
            if v.get("palette") is not None:
                img.putpalette(v["palette"])
            return img
        raise ValueError(f"unknown cache tag {tag!r}")

    try:
        return dec(tree)
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"malformed cache entry ({type(e).__name__})") from None


def _hashable(key):
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key


def _save_tree(f, value):
    tree, arrays = encode_tree(value)
    np.savez(f, **{_TREE: np.frombuffer(json.dumps(tree).encode(), np.uint8)},
             **{f"a{i}": a for i, a in enumerate(arrays)})


def _load_tree(entry):
    with np.load(entry, allow_pickle=False) as z:
        members = [z[_TREE]]
        while f"a{len(members) - 1}" in z.files:
            members.append(z[f"a{len(members) - 1}"])
    if not all(isinstance(m, np.ndarray) for m in members):  # NpzFile returns a non-.npy member as bytes
        raise ValueError("cache entry holds a member that is not an array")
    return decode_tree(json.loads(members[0].tobytes().decode()), members[1:])


class DecodeCache:
    """Decoded-file cache under ``root`` (created on first write).

    Args:
        root: cache folder.
    """

    def __init__(self, root):
        self.root = os.path.abspath(str(root))

    def entry_path(self, source, kind):
        """Cache file of ``source`` (``kind``: ``npy``, ``obj`` or its old name ``pkl``); keyed by path,
        size and mtime."""
        suffix = _KIND_SUFFIX[kind]
        st = os.stat(source)
        key = f"{os.path.abspath(source)}|{st.st_size}|{st.st_mtime_ns}|{suffix}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return os.path.join(self.root, digest[:2], f"{digest}.{suffix}")

    def get(self, source, decode, kind):
        """``decode(source)``, or its cached result.

        Args:
            source: dataset file path.
            decode: function reading ``source`` (its errors propagate; nothing is cached then).
            kind: ``npy`` (decode returns an ndarray) or ``obj`` / ``pkl`` (a tree of plain values, arrays
                and PIL images; see :func:`encode_tree`).
        """
        if kind not in _KIND_SUFFIX:
            raise ValueError(f"DecodeCache: unknown kind {kind!r}; known: {', '.join(_KIND_SUFFIX)}")
        try:
            entry = self.entry_path(source, kind)
        except OSError:  # missing/unreadable source: the decoder raises its own one-line error
            return decode(source)
        if os.path.isfile(entry):
            try:
                return np.load(entry, allow_pickle=False) if kind == "npy" else _load_tree(entry)
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
                pass  # unreadable entry (disk trouble, foreign file): decode again and rewrite it
        value = decode(source)
        self._write(entry, value, kind)
        return value

    @staticmethod
    def _write(entry, value, kind):
        try:
            buf = io.BytesIO()
            if kind == "npy":
                np.save(buf, value, allow_pickle=False)
            else:
                _save_tree(buf, value)
        except (TypeError, ValueError):
            return  # a value outside the safe format is not cached
        try:
            os.makedirs(os.path.dirname(entry), exist_ok=True)
            with atomic_open(entry, "wb") as f:
                f.write(buf.getvalue())
        except OSError:
            return  # read-only or full cache disk: training goes on without caching
