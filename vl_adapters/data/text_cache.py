"""Frozen text features, computed once per distinct text: in memory, spilled to disk, or written by `extract`.

A frozen text tower maps token ids to features deterministically, so a text's features are keyed by
its token ids (the tokenizer's output, trimmed to the text's real length) under the backbone's weight
fingerprint: another tokenizer gives other ids and misses; another backbone (or other weights) has
another fingerprint and misses. Token states are trimmed to each text's length and kept in fp16 (they
are most of the bytes: about 15 KB for a 15-token caption at width 512); sentence embeddings stay fp32.

Lookup order: memory (a dict bounded by bytes; when full it is written out as a segment and cleared),
then segments (immutable on-disk blocks: the split's texts written by `vl-adapters extract` under
<cache>/<split>/text/, and the memory's spills in a temporary directory of the process), then the
text tower for what is still missing.

Segment layout (a directory, written as <name>.partial and renamed once complete):
  meta.json          format, backbone spec, weights fingerprint, count, embed_dim, text_width
  strings.json       optional: {text: row} of the strings it was written from, so that a store looks them
                     up without tokenizing them again (the backbone spec fixes the tokenizer)
  text_emb.npy       [M, D] fp32
  offsets.npy        [M+1]  int64: text i's tokens are rows offsets[i]:offsets[i+1] of the two below
  token_states.npy   [S, C] fp16
  input_ids.npy      [S]    int32 (text i's key is its slice)
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..core.features import TextFeatures
from ..core.io import load_json, save_json

TEXT_DIR = "text"  # a split's text segment, inside its feature cache directory
STRINGS_FILE = "strings.json"
SEGMENT_FORMAT = 1
TEXT_MEMORY_BYTES = 512 * 2**20  # in-memory features of one store before it spills to disk
TOKENIZED_MEMO_SIZE = 1_000_000  # strings whose token ids are remembered (tokenizing costs ~0.1-0.5 ms each)
ENCODE_CHUNK = 64  # texts per text-tower call at most (a fixed shape per backbone: see encode_chunk)
# Multiply-adds a CPU text-tower call should hold at least, so that its fixed cost (Python, dispatch) stays
# small beside the work: a big tower then encodes one text per call (no padding), a tiny one 64.
CPU_CALL_WORK = 10**9


class _Entry(NamedTuple):
    text_emb: np.ndarray  # [D] fp32
    token_states: np.ndarray  # [L, C] fp16

    @property
    def nbytes(self) -> int:
        return self.text_emb.nbytes + self.token_states.nbytes + 4 * len(self.token_states) + 128


def real_lengths(token_mask: Tensor) -> Tensor:
    """[B] one past each row's last real token (at least 1, so an empty text keeps a slot)."""
    positions = torch.arange(1, token_mask.shape[1] + 1, device=token_mask.device)
    return (token_mask.long() * positions).amax(1).clamp_min(1)


def encode_chunk(backbone) -> int:
    """Texts per text-tower call, fixed for a backbone on a device: kernels pick their algorithm by shape, so
    a text's features would otherwise depend on how many texts missed with it, and a resumed run would not
    reproduce an uninterrupted one bit for bit. Every call is padded to it, so it is chosen small where
    padding costs: on a GPU a call of 64 texts takes about as long as a call of one (ENCODE_CHUNK); on a
    CPU the time grows with the texts, and the chunk is the fewest texts (a power of two) whose work
    reaches CPU_CALL_WORK: 1 for a CLIP ViT-B text tower (about 3e9 multiply-adds a text), 64 for tiny."""
    if backbone.device.type == "cuda":
        return ENCODE_CHUNK
    vision = {id(p) for p in backbone.vision_tower().parameters()}
    tables = {id(p) for m in backbone.model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    weights = sum(p.numel() for p in backbone.model.parameters() if id(p) not in vision and id(p) not in tables)
    work = max(1, weights * backbone.dims.context_length)  # multiply-adds of one text, about
    return min(ENCODE_CHUNK, 1 << max(0, math.ceil(math.log2(CPU_CALL_WORK / work))))


def encode_entries(backbone, texts: Sequence[str], chunk: int | None = None) -> Iterator[tuple[bytes, _Entry]]:
    """(key, entry) of each text through the frozen text tower, in order. Every call holds exactly
    `chunk` texts (default encode_chunk(backbone); the last call is padded with empty texts), so a text's
    features never depend on the texts encoded with it."""
    chunk = chunk or encode_chunk(backbone)
    for start in range(0, len(texts), chunk):
        part = list(texts[start:start + chunk])
        out = backbone.encode_text(part + [""] * (chunk - len(part)))
        lengths = real_lengths(out.token_mask).cpu().tolist()[:len(part)]
        emb = out.text_emb.float().cpu().numpy()
        states = out.token_states.to(torch.float16).cpu().numpy()
        ids = out.input_ids.to(torch.int32).cpu().numpy()
        for i, length in enumerate(lengths):
            yield ids[i, :length].tobytes(), _Entry(emb[i].copy(), states[i, :length].copy())


class _Segment:
    """An immutable on-disk block of text features (memory-mapped)."""

    def __init__(self, directory: Path, meta: dict) -> None:
        self.directory = directory
        self.meta = meta
        self.text_emb = np.load(directory / "text_emb.npy", mmap_mode="r")
        self.token_states = np.load(directory / "token_states.npy", mmap_mode="r")
        self.offsets = np.load(directory / "offsets.npy")
        self.input_ids = np.load(directory / "input_ids.npy")
        strings = directory / STRINGS_FILE
        self.strings: dict[str, int] = load_json(strings) if strings.exists() else {}

    def keys(self) -> Iterator[bytes]:
        ids, off = self.input_ids, self.offsets
        for i in range(len(off) - 1):
            yield ids[off[i]:off[i + 1]].tobytes()

    def entry(self, row: int) -> _Entry:
        start, stop = self.offsets[row], self.offsets[row + 1]
        return _Entry(self.text_emb[row], self.token_states[start:stop])

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(text_emb [B, D], token_states [B, L, C] fp16, input_ids [B, L], mask [B, L]) of `rows`, the
        token axes padded to the longest of them: one indexed read, no loop over texts."""
        start, length = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        position = np.arange(int(length.max()))
        mask = position[None, :] < length[:, None]
        index = np.where(mask, start[:, None] + position[None, :], 0)
        states = self.token_states[index.ravel()].reshape(*index.shape, -1)
        states[~mask] = 0  # assigned, not multiplied: numpy's float16 arithmetic is emulated (4.6 ms against 0.13)
        ids = np.where(mask, self.input_ids[index], 0).astype(np.int64)
        return np.asarray(self.text_emb[rows]), states, ids, mask


def _meta(backbone, weights: str, count: int) -> dict:
    dims = backbone.dims
    return {"format": SEGMENT_FORMAT, "backbone": backbone.spec, "weights": weights, "count": int(count),
            "embed_dim": int(dims.embed_dim), "text_width": int(dims.text_width)}


def write_segment(directory: str | Path, meta: dict, entries: Iterable[tuple[bytes, _Entry]], *,
                  total_tokens: int, strings: dict[str, int] | None = None) -> Path:
    """Write meta["count"] (key, entry) pairs holding `total_tokens` tokens in all as a segment (with
    `strings`, text -> row, when the texts are known); the directory appears only once complete (written
    as <directory>.partial, then renamed)."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count, d, c = meta["count"], meta["embed_dim"], meta["text_width"]
    open_memmap = np.lib.format.open_memmap
    emb = open_memmap(partial / "text_emb.npy", mode="w+", dtype=np.float32, shape=(count, d))
    states = open_memmap(partial / "token_states.npy", mode="w+", dtype=np.float16, shape=(total_tokens, c))
    ids = open_memmap(partial / "input_ids.npy", mode="w+", dtype=np.int32, shape=(total_tokens,))
    offsets = np.zeros(count + 1, dtype=np.int64)
    row = -1
    for row, (key, entry) in enumerate(entries):
        start = offsets[row]
        stop = start + len(entry.token_states)
        emb[row] = entry.text_emb
        states[start:stop] = entry.token_states
        ids[start:stop] = np.frombuffer(key, dtype=np.int32)
        offsets[row + 1] = stop
    if row + 1 != count or offsets[-1] != total_tokens:
        raise RuntimeError(f"{directory}: expected {count} texts of {total_tokens} tokens, got {row + 1} "
                           f"of {offsets[row + 1]}")
    for array in (emb, states, ids):
        array.flush()
    del emb, states, ids
    np.save(partial / "offsets.npy", offsets)
    if strings:
        save_json(partial / STRINGS_FILE, strings)
    save_json(partial / "meta.json", meta)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(partial, directory)
    return directory


class TextFeatureStore:
    """Frozen text features of one backbone's text tower, each distinct token sequence encoded once.

    `features(backbone, texts)` returns fp32 TextFeatures on the backbone's device, token axes padded to
    the batch's longest text. `open(directory, backbone)` adds a segment written by `extract`.
    `encoded` counts the texts this store ran through the text tower.
    """

    def __init__(self, *, max_bytes: int = TEXT_MEMORY_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.encoded = 0
        self._weights: str | None = None  # the fingerprint every feature held belongs to
        self._bound, self._params, self._versions = None, [], []  # the backbone it was computed for
        self._memory: dict[bytes, _Entry] = {}
        self._memory_bytes = 0
        self._segments: list[_Segment] = []
        self._on_disk: dict[bytes, tuple[_Segment, int]] = {}
        self._tokenizer = None
        self._ids_of: dict[str, bytes] = {}
        self._spill_dir: Path | None = None

    # A copy (VideoLanguageModel.merge deep-copies the model) may get other weights: it starts empty.
    def __deepcopy__(self, memo) -> TextFeatureStore:
        return TextFeatureStore(max_bytes=self.max_bytes)

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    # ---- keys -------------------------------------------------------------------------------
    def _bind(self, backbone) -> str:
        """The backbone's fingerprint; features held for other weights are dropped. Hashing the weights is
        redone only for another backbone object or when one of its parameters was written in place."""
        bound = self._bound() if self._bound is not None else None
        if bound is backbone and [p._version for p in self._params] == self._versions:
            return self._weights
        weights = backbone.fingerprint()
        self._bound, self._params = weakref.ref(backbone), list(backbone.parameters())
        self._versions = [p._version for p in self._params]
        if weights != self._weights:
            self._weights = weights
            self._memory, self._memory_bytes = {}, 0
            self._segments, self._on_disk = [], {}
        return weights

    def keys(self, backbone, texts: Sequence[str]) -> list[bytes]:
        """Each text's key: its token ids up to its real length, as bytes (int32)."""
        tokenizer = getattr(backbone, "tokenizer", backbone)
        if tokenizer is not self._tokenizer:  # another tokenizer: ids remembered from the last one are void
            self._tokenizer, self._ids_of = tokenizer, {}
        new = [t for t in dict.fromkeys(texts) if t not in self._ids_of]
        if new:
            if len(self._ids_of) + len(new) > TOKENIZED_MEMO_SIZE:
                self._ids_of = {}
            ids, mask = backbone.tokenize(new)
            ids = ids.to(torch.int32).cpu().numpy()
            for text, row, length in zip(new, ids, real_lengths(mask.cpu()).tolist(), strict=True):
                self._ids_of[text] = row[:length].tobytes()
        return [self._ids_of[t] for t in texts]

    # ---- lookup -----------------------------------------------------------------------------
    def __contains__(self, key: bytes) -> bool:
        return key in self._memory or key in self._on_disk

    def _entry(self, key: bytes) -> _Entry:
        entry = self._memory.get(key)
        if entry is None:
            segment, row = self._on_disk[key]
            entry = segment.entry(row)
        return entry

    @torch.no_grad()
    def features(self, backbone, texts: Sequence[str]) -> TextFeatures:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("frozen text features: texts must be a list of strings")
        texts = list(texts)
        if not texts:  # the backbone's own check names the error, one message for both paths
            return backbone.encode_text(texts)
        self._bind(backbone)
        keys = self.keys(backbone, texts)
        first = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self and key not in first:
                first[key] = text
        if first:
            self._add(encode_entries(backbone, list(first.values())))
            self.encoded += len(first)
            if self._memory_bytes > self.max_bytes:
                self._spill(backbone)
        return self._assemble(keys, texts, backbone.device)

    def _add(self, entries: Iterable[tuple[bytes, _Entry]]) -> None:
        for key, entry in entries:
            if key not in self._memory:
                self._memory[key] = entry
                self._memory_bytes += entry.nbytes

    def _assemble(self, keys: list[bytes], texts: list[str], device: torch.device) -> TextFeatures:
        found = [self._on_disk.get(k) if k not in self._memory else None for k in keys]
        segment = found[0][0] if found[0] is not None else None
        if segment is not None and all(f is not None and f[0] is segment for f in found):
            arrays = segment.gather(np.fromiter((f[1] for f in found), dtype=np.int64, count=len(found)))
            return self._tensors(*arrays, texts=texts, device=device)
        entries = [self._entry(k) for k in keys]
        longest = max(len(e.token_states) for e in entries)
        b, c = len(entries), entries[0].token_states.shape[1]
        emb = np.stack([e.text_emb for e in entries])
        states = np.zeros((b, longest, c), dtype=np.float16)
        ids = np.zeros((b, longest), dtype=np.int64)
        mask = np.zeros((b, longest), dtype=np.bool_)
        for i, (key, entry) in enumerate(zip(keys, entries, strict=True)):  # a loop over texts, not tokens
            length = len(entry.token_states)
            states[i, :length] = entry.token_states
            ids[i, :length] = np.frombuffer(key, dtype=np.int32)
            mask[i, :length] = True
        return self._tensors(emb, states, ids, mask, texts=texts, device=device)

    @staticmethod
    def _tensors(emb, states, ids, mask, *, texts: list[str], device: torch.device) -> TextFeatures:
        tensors = [torch.from_numpy(a) for a in (emb, states, ids, mask)]
        if device.type == "cuda":
            tensors = [t.pin_memory().to(device, non_blocking=True) for t in tensors]
        emb_t, states_t, ids_t, mask_t = tensors
        return TextFeatures(text_emb=emb_t, token_states=states_t.float(), token_mask=mask_t, input_ids=ids_t,
                            texts=texts)

    # ---- disk -------------------------------------------------------------------------------
    def _attach(self, directory: Path, meta: dict, tokenizer=None) -> None:
        segment = _Segment(directory, meta)
        self._segments.append(segment)
        keys = list(segment.keys())
        for row, key in enumerate(keys):
            self._on_disk.setdefault(key, (segment, row))
        if segment.strings and tokenizer is not None:  # the segment's own strings need no tokenizing
            if tokenizer is not self._tokenizer:
                self._tokenizer, self._ids_of = tokenizer, {}
            self._ids_of.update({text: keys[row] for text, row in segment.strings.items()})

    def open(self, directory: str | Path, backbone) -> bool:
        """Add a text segment (e.g. <cache>/<split>/text from `extract`). False, and nothing added, when
        there is none or it belongs to other weights (another backbone's features must miss)."""
        directory = Path(directory)
        weights = self._bind(backbone)
        if not (directory / "meta.json").exists():
            return False
        meta = load_json(directory / "meta.json")
        if meta.get("format") != SEGMENT_FORMAT or meta.get("weights") != weights:
            return False
        if any(s.directory.resolve() == directory.resolve() for s in self._segments):
            return True
        if meta.get("backbone") == backbone.spec:  # the same spec tokenizes alike: its strings are keys
            self._attach(directory, meta, getattr(backbone, "tokenizer", backbone))
        else:
            self._attach(directory, meta)
        return True

    def _spill(self, backbone) -> None:
        """Write the memory out as a segment of a temporary directory (removed with the store) and clear it."""
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="vl-adapters-text-"))
            weakref.finalize(self, shutil.rmtree, str(self._spill_dir), True)
        directory = self._spill_dir / f"spill{len(self._segments)}"
        meta = _meta(backbone, self._weights, len(self._memory))
        total = sum(len(e.token_states) for e in self._memory.values())
        write_segment(directory, meta, self._memory.items(), total_tokens=total)
        self._attach(directory, meta)
        self._memory, self._memory_bytes = {}, 0


def write_text_features(directory: str | Path, backbone, texts: Sequence[str]) -> Path:
    """Encode each distinct text once and write the segment `directory` (what `extract` does for a
    split's captions, questions or candidates). Texts are keyed by their token ids, so a later run that
    formats them differently simply misses and encodes its own."""
    store = TextFeatureStore()
    keys = store.keys(backbone, list(texts))
    first: dict[bytes, str] = {}
    for key, text in zip(keys, texts, strict=True):
        first.setdefault(key, text)
    row = {key: i for i, key in enumerate(first)}
    total = sum(len(k) // 4 for k in first)
    meta = _meta(backbone, backbone.fingerprint(), len(first))
    return write_segment(directory, meta, encode_entries(backbone, list(first.values())), total_tokens=total,
                         strings={text: row[key] for text, key in zip(texts, keys, strict=True)})


class _HeadDefaults:
    """A model without adapters, as far as formatting goes: the task head's own templates."""

    def format_candidates(self, question: str, answers: list[str]) -> None:
        return None


def dataset_texts(dataset, model=None) -> list[str]:
    """The distinct texts a dataset's batches will ask the task head to encode, formatted as the head
    formats them: through `model`'s adapters (multiple-choice candidates, format_candidates), or with the
    head's defaults when no model is given."""
    if model is None:
        from ..tasks import build_task

        task, model = build_task(dataset.task, logit_scale=1.0), _HeadDefaults()
    else:
        task = model.task
    samples = dataset.samples
    if task.name == "retrieval":
        texts = [s["text"] for s in samples]
    elif task.name == "multiple_choice":
        texts = [""]  # the padding slot of a question with fewer candidates than its batch's longest
        for s in samples:
            texts += task.candidate_texts(model, [s["question"]], [list(s["candidates"])])
    elif task.name == "open_qa":
        texts = [task.config.template.format(question=s["question"]) for s in samples]
    else:
        return []
    return list(dict.fromkeys(texts))
