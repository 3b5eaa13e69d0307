"""The knowledge index's Whoosh codec: Whoosh 2.7's W3 format, written faster.

Every index commit writes its new segment's posting lists through
`FieldWriter.add_postings`, one Python call chain per posting (start_term, add,
add_posting's type asserts, a column read for the field length, finish_term) and, for
every term, a pickled and zlib-compressed block of its own. A one-document add has
~200 terms with one posting each: that was 10–14 ms of the ~35 ms of CPU an add cost
on a 10,000-document index (bench/b5_knowledge.py, issue 18), and a third of a
rebuild's Whoosh time.

`KnowledgeCodec` writes the same files, with two differences in how:

- A term's postings are gathered first and handed to W3's own block writer a block at
  a time (the same blocks, the same bytes), and field lengths are read once per field.
- Terms in fewer than INLINE_LIMIT documents keep their postings inside the term
  table entry ("inlined", a W3 feature Whoosh 2.7 never enables: its writer calls
  `set_inline`, which does not exist). Stock Whoosh reads such entries (ListMatcher),
  merges them and searches them; so do core/knowledge/search.py's raw readers.

Reading: `block_head` gives a posting block's ids and weights without unpickling its
values (the positions), which is most of what a block costs to read; ranking needs
only the ids and weights (core/knowledge/search.py).

Segments record their codec in the index's table of contents (pickled by class
path), so this class must stay importable here; indexes written by stock Whoosh
(no codec of ours) are read as before.
"""
from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from pickle import UnpicklingError, dumps, loads
from typing import Any

from whoosh.codec import whoosh3
from whoosh.codec.whoosh3 import LENGTHS_COLUMN, W3Codec, W3FieldWriter, W3TermInfo, _lenfield
from whoosh.filedb.filetables import _lengths as _ENTRY_LENGTHS
from whoosh.util.numeric import byte_to_length, length_to_byte

# Terms in fewer documents than this are inlined in the term table. Up to 3 postings
# a ListMatcher reads as fast as a block; most of a one-document segment's terms and
# about half of a 10,000-document index's vocabulary are that rare.
INLINE_LIMIT = 4

_Posting = tuple[str, bytes, int, float, bytes | None]


class KnowledgeCodec(W3Codec):  # type: ignore[misc]  # Whoosh has no type hints
    """W3 with inlined rare terms and a batched posting writer (see the module docstring)."""

    def __init__(self, blocklimit: int = 128, compression: int = 3, inlinelimit: int = INLINE_LIMIT) -> None:
        super().__init__(blocklimit=blocklimit, compression=compression, inlinelimit=inlinelimit)

    def field_writer(self, storage: Any, segment: Any) -> W3FieldWriter:
        return BatchFieldWriter(self, storage, segment)


def _lengths_of(lengths: Any, fieldname: str) -> Callable[[int], int | None]:
    # What W3PerDocReader.doc_field_length answers (None for a length byte of 0, 0
    # without a lengths column), from the column read once.
    reader = lengths._cached_reader(_lenfield(fieldname), LENGTHS_COLUMN) if lengths else None
    if reader is None:
        return lambda docnum: 0
    table = reader.load()

    def length(docnum: int) -> int | None:
        lbyte = table[docnum] if docnum < len(table) else 0
        return byte_to_length(lbyte) if lbyte else None
    return length


class BatchFieldWriter(W3FieldWriter):  # type: ignore[misc]
    """W3FieldWriter whose add_postings handles a term's postings together."""

    def add_postings(self, schema: Any, lengths: Any, items: Iterable[_Posting]) -> None:
        inline_limit = self._codec._inlinelimit
        blocklimit = self._codec._blocklimit
        table = _TermTable(self._tindex)
        for fieldname, field_postings in groupby(items, key=itemgetter(0)):
            fieldobj = schema[fieldname]
            self.start_field(fieldname, fieldobj)
            length_of = _lengths_of(lengths, fieldname)
            prefix = whoosh3.pack_ushort(self._fieldid)
            for btext, term_postings in groupby(field_postings, key=itemgetter(1)):
                postings = [p for p in term_postings if p[2] != -1]  # -1: spelling words, unused
                if not postings:
                    continue
                if len(postings) == 1 and inline_limit > 1:  # most terms of an add's segment
                    _, _, docnum, weight, value = postings[0]
                    table.add(prefix + btext, _inlined_one(docnum, weight, value, length_of(docnum)))
                    continue
                ids = array("I", [p[2] for p in postings])
                weights = array("f", [p[3] for p in postings])
                values = [p[4] for p in postings]
                doc_lengths = [length_of(docnum) for docnum in ids]
                raw_weights = [p[3] for p in postings]
                if len(postings) < inline_limit:
                    entry = _inlined(ids, weights, [v for v in values if v], raw_weights, doc_lengths)
                else:
                    entry = self._write_blocks(fieldobj, ids, weights, values, raw_weights, doc_lengths,
                                               blocklimit).to_bytes()
                table.add(prefix + btext, entry)
            self.finish_field()
        table.flush()

    def _write_blocks(self, fieldobj: Any, ids: array[int], weights: array[float], values: list[bytes | None],
                      raw_weights: list[float], doc_lengths: list[int | None], blocklimit: int) -> W3TermInfo:
        # W3PostingsWriter's own blocks, filled a block at a time instead of one
        # add_posting() each: it writes a full block before the posting that would
        # overflow it, and the last (possibly full) block in finish_postings().
        writer = self._postwriter
        writer.start_postings(fieldobj.format, W3TermInfo())
        for start in range(0, len(ids), blocklimit):
            if start:
                writer._write_block()
            end = start + blocklimit
            _fill(writer, ids[start:end], weights[start:end], [v for v in values[start:end] if v],
                  raw_weights[start:end], doc_lengths[start:end])
        return writer.finish_postings()


_FLOAT32 = struct.Struct("f")


def _inlined_one(docnum: int, weight: float, value: bytes | None, length: int | None) -> bytes:
    """_inlined() of a single posting, in fewer steps (same bytes)."""
    weight32 = _FLOAT32.unpack(_FLOAT32.pack(weight))[0]  # what array("f") holds
    lbyte = length_to_byte(length) if length else 0
    head: bytes = _TERMINFO.pack(True, 0 + weight32, 1, lbyte, lbyte, max(0, weight), docnum, docnum)
    return head + dumps(((docnum,), (weight32,), (value or b"",)), 2)


class _TermTable:
    """Appends entries to a W3 term table (an OrderedHashWriter) as its add() does,
    but through one buffer: add() asks the file for its position twice an entry, a
    system call each."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, tindex: Any) -> None:
        self._tindex = tindex
        self._buffer = bytearray()
        self._base = tindex.dbfile.tell()

    def add(self, key: bytes, value: bytes) -> None:
        tindex = self._tindex
        if key <= tindex.lastkey:
            raise ValueError(f"Keys must increase: {tindex.lastkey!r}..{key!r}")
        pos = self._base + len(self._buffer)
        tindex.index.append(pos)
        self._buffer += _ENTRY_LENGTHS.pack(len(key), len(value))
        self._buffer += key
        self._buffer += value
        h = tindex.hashfn(key)
        tindex.buckets[h & 255].append((h, pos))
        tindex.lastkey = key
        if len(self._buffer) >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what was added (before the table is closed)."""
        self._tindex.dbfile.write(bytes(self._buffer))
        self._base += len(self._buffer)
        self._buffer.clear()


def _stats(doc_lengths: list[int | None], raw_weights: list[float]) -> tuple[int | None, int, float]:
    # (min length, max length, max weight) as add_posting() tracks them: lengths of 0
    # or None are skipped, and the maximum weight starts at 0.
    present = [n for n in doc_lengths if n]
    return (min(present) if present else None), (max(present) if present else 0), max(0, *raw_weights)


def _fill(writer: Any, ids: array[int], weights: array[float], values: list[bytes],
          raw_weights: list[float], doc_lengths: list[int | None]) -> None:
    # Exactly what add_posting() leaves in the buffer after these postings.
    writer._ids, writer._weights, writer._values = ids, weights, values
    writer._minlength, writer._maxlength, writer._maxweight = _stats(doc_lengths, raw_weights)


_TERMINFO = W3TermInfo._struct


def _inlined(ids: array[int], weights: array[float], values: list[bytes], raw_weights: list[float],
             doc_lengths: list[int | None]) -> bytes:
    """The term table entry W3TermInfo.to_bytes() makes of postings inlined by
    add_block() + set_inlined(), without the objects (this runs once per term)."""
    minlength, maxlength, maxweight = _stats(doc_lengths, raw_weights)
    head: bytes = _TERMINFO.pack(True, 0 + sum(weights), len(ids),
                          0 if minlength is None else length_to_byte(minlength), length_to_byte(maxlength),
                          maxweight, ids[0], ids[-1])
    # One value per posting even when the format has none (an ID field): Whoosh's
    # ListMatcher answers '' (a str) for a missing value, which its merging refuses.
    return head + dumps((tuple(ids), tuple(weights), tuple(values) or (b"",) * len(ids)), 2)


def segment_postings(reader: Any) -> Iterator[_Posting]:
    """What `reader.iter_postings()` yields (every live posting of a SegmentReader, in
    term order), reading inlined terms straight from the sequential scan of the term
    table: Whoosh looks each term up again by hash (an md5 and a seek) and walks a
    ListMatcher, ~80 % of a merge of small segments."""
    schema = reader.schema
    deleted = frozenset(reader._perdoc.deleted_docs())
    for (fieldname, btext), terminfo in reader._terms.items():
        if fieldname not in schema:
            continue
        if not terminfo.is_inlined():
            matcher = reader.postings(fieldname, btext)
            while matcher.is_active():
                yield fieldname, btext, matcher.id(), matcher.weight(), matcher.value()
                matcher.next()
            continue
        ids, weights, values = terminfo.inlined_postings()
        for docnum, weight, value in zip(ids, weights or (1.0,) * len(ids), values or ("",) * len(ids),
                                         strict=True):
            if docnum not in deleted:
                yield fieldname, btext, docnum, weight, value


def add_segment(writer: Any, reader: Any) -> None:
    """`writer.add_reader(reader)` for a SegmentReader, its postings read by
    segment_postings (the stored fields, lengths and columns as Whoosh copies them)."""
    schema = writer.schema
    fieldnames = set(schema.names()) | {name for name in reader.indexed_field_names() if name in schema}
    basedoc = writer.docnum
    docmap = writer.write_per_doc(fieldnames, reader)
    add = writer.pool.add
    for item in writer._process_posts(segment_postings(reader), basedoc, docmap):
        add(item)
    writer._added = True


# W3 pickles a block as (ids, weights, values) with protocol 2, where every bytes
# value becomes a call of _codecs.encode: unpickling the values is ~95 % of loading a
# block (300 of 313 µs for a full block of a common term, this machine, busy). The
# values are last, each starts with this global (then a memo reference to it), and
# nothing before them can contain it (ints and floats are opcodes with short binary
# arguments, and the only memo entries are the two tuples): the pickle cut where the
# values begin, closed as a 2-tuple, unpickles to (ids, weights) alone.
_VALUES_START = b"c_codecs\nencode\n"
_MARK = ord("(")
_CLOSE_PAIR = b"\x86."  # TUPLE2, STOP
_CHUNK = 2048  # decompressed bytes per step: the values are usually the last ~75 %


def block_head(matcher: Any) -> tuple[Any, Any]:
    """(ids, weights) of the current block of a W3LeafMatcher, as its `_data[0]` and
    `_data[1]` hold them after `_read_data()` (delta-coded ids; None or a float when
    the weights are all 1 or all equal), read without the block's values. The
    matcher's own state is not touched."""
    raw = matcher._postfile.get(matcher._dataoffset, matcher._nextoffset - matcher._dataoffset)
    inflater = zlib.decompressobj() if matcher._compression else None
    data = inflater.decompress(raw, _CHUNK) if inflater else raw
    at = data.find(_VALUES_START)
    while at < 0 and inflater and inflater.unconsumed_tail:
        seen = max(0, len(data) - len(_VALUES_START))
        data += inflater.decompress(inflater.unconsumed_tail, _CHUNK)
        at = data.find(_VALUES_START, seen)
    head = _cut_before_values(data, at)
    if head is not None:
        return head
    if inflater:  # no values, or not as expected: the whole block, as Whoosh reads it
        data += inflater.decompress(inflater.unconsumed_tail) + inflater.flush()
    full = loads(data)
    return full[0], full[1]


def _cut_before_values(data: bytes, at: int) -> tuple[Any, Any] | None:
    """(ids, weights) from a block's pickle cut where its values begin (`at`: where
    _VALUES_START was found, -1 if not), None if it cannot be cut there."""
    if at <= 0:
        return None
    cut = at - 1 if data[at - 1] == _MARK else at  # a MARK opens a tuple of more than 3
    try:
        head = loads(data[:cut] + _CLOSE_PAIR)
    except (UnpicklingError, EOFError, IndexError, ValueError, TypeError):
        return None
    return (head[0], head[1]) if isinstance(head, tuple) and len(head) == 2 else None
