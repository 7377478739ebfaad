"""Reading a BPF ring buffer straight from its memory mapping, without a callback per record.

libbpf's ``ring_buffer__poll`` calls back into Python once per record through ctypes, which costs more than
decoding the record. The ring buffer's memory layout is stable UAPI (the same one libbpf reads):

- page 0, mapped read-write: ``consumer_pos`` (u64), advanced by the reader;
- page 1, mapped read-only with the data: ``producer_pos`` (u64), advanced by the kernel;
- from page 2: the data area, mapped twice back to back so a record that wraps reads as one slice.

Each record has an 8-byte header: ``len`` (u32, with BUSY and DISCARD bits) and a page offset, then the
payload, padded to 8 bytes. The kernel refuses a record (and the sensor counts a drop) only when reserving it
would put the producer more than the ring's size ahead of the consumer; :meth:`RingBuffer.could_have_dropped`
uses that to tell when the drop counters need reading at all.

x86-64 is a total-store-order machine, and a memoryview cast to ``Q`` reads and writes an aligned u64 with
one instruction (a fixed-size memcpy), which is all the acquire/release pairing needs there. Both positions
are read through memoryviews rather than ctypes: after a sleep every distinct piece of C the poll touches
costs microseconds of cache misses, and ctypes' field access was one more.
"""

from __future__ import annotations

import mmap
import select
from collections.abc import Callable

from assay.errors import SensorError

_BUSY = 1 << 31
_DISCARD = 1 << 30
_LEN_MASK = ~(_BUSY | _DISCARD) & 0xFFFFFFFF
_RELEASE_EVERY = 64  # records between stores of the consumer position


class RingBuffer:
    """A consumer of one BPF_MAP_TYPE_RINGBUF map."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise SensorError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        try:
            cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            data_map = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except OSError as exc:
            raise SensorError(f"cannot map the ring buffer (fd {map_fd}): {exc}") from exc
        self._setup(cons_map, data_map, size)
        self._epoll: select.epoll | None = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    @classmethod
    def over(cls, cons_map: mmap.mmap, data_map: mmap.mmap, size: int) -> RingBuffer:
        """A consumer over mappings laid out like the kernel's (tests build them in anonymous memory)."""
        ring = cls.__new__(cls)
        ring._setup(cons_map, data_map, size)
        ring._epoll = None
        return ring

    def _setup(self, cons_map: mmap.mmap, data_map: mmap.mmap, size: int) -> None:
        self._size = size
        self._mask = size - 1
        self._page = mmap.PAGESIZE
        self._cons_map = cons_map
        self._data_map = data_map
        self._cons_view = memoryview(cons_map)
        self._consumer = self._cons_view[0:8].cast("Q")  # consumer_pos, ours to store
        self._view = memoryview(data_map)
        self._producer = self._view[0:8].cast("Q")
        # record headers are 8-aligned u32s: one item of a u32 view, several times cheaper than unpack_from
        self._words = self._view.cast("I")
        #: bytes the kernel had written and we had not released, at most, over the last drain() and the
        #: wait before it: the ring could only have refused a record if this came within a record of full
        self.span = 0

    def wait(self, timeout: float) -> None:
        """Sleep until the kernel wakes us (lazy mode: only past the fill threshold) or the timeout."""
        if self.pending() == 0 and self._epoll is not None:
            self._epoll.poll(timeout)

    def pending(self) -> int:
        return int(self._producer[0] - self._consumer[0])

    def idle(self) -> bool:
        """Nothing to read, and nothing was read by the last drain() (so the ring was empty since then)."""
        return not self.span and self._producer[0] == self._consumer[0]

    def could_have_dropped(self, max_record: int) -> bool:
        """Whether the kernel may have failed to reserve a record of ``max_record`` bytes (header included)
        since the drain() before the last one; when False, its drop counters cannot have moved."""
        return self.span + max_record > self._mask

    def drain(self, handle: Callable[[mmap.mmap, int, int], None]) -> int:
        """Pass every committed record to ``handle(buf, offset, length)``; returns how many.

        The record lies at ``buf[offset:offset+length]``, valid only during the call. ``buf`` is the mapping
        itself: slicing it gives ``bytes``, and ``struct.unpack_from(buf, offset)`` reads in place, so no
        per-record view or copy is made here.
        """
        consumer = self._consumer
        cons = start = consumer[0]
        if self._producer[0] == cons:
            # nothing new: after a sleep every line costs microseconds (cold caches), so do none of the rest
            self.span = 0
            return 0
        n = 0
        buf = self._data_map
        words = self._words
        size = self._size
        end = self._page + size  # the second mapping starts here: an offset past it wraps by `size`
        pos = self._page + (cons & self._mask)
        producer = self._producer
        # Per record this is the cost floor of the sensor, so it is written for CPython 3.11: locals, not
        # globals; comparisons and additions (specialised for ints) rather than `&` (generic); no flag
        # masking in the common case, where the header word is the length itself.
        flagged, busy, len_mask = _DISCARD, _BUSY, _LEN_MASK
        countdown = _RELEASE_EVERY
        try:
            prod = producer[0]
            while cons < prod:
                while cons < prod:
                    hdr = words[pos >> 2]
                    if hdr >= flagged:  # BUSY or DISCARD
                        if hdr & busy:
                            return n  # the producer is still writing this one
                        step = ((hdr & len_mask) + 15) & ~7
                        cons += step
                        pos += step
                        if pos >= end:
                            pos -= size
                        continue
                    step = (hdr + 15) & ~7  # the 8-byte header, the record, padding to 8
                    cons += step  # past it before handling: a bad record is not re-read
                    handle(buf, pos + 8, hdr)
                    pos += step
                    if pos >= end:
                        pos -= size
                    n += 1
                    countdown -= 1
                    if not countdown:
                        # release space as we go (a store per record would cost more than the
                        # record), so the kernel can reuse it while we decode the rest
                        consumer[0] = cons
                        countdown = _RELEASE_EVERY
                prod = producer[0]
        finally:
            consumer[0] = cons
            # Between the previous drain and now, the consumer position never went below `start` and the
            # producer never went past what it is now: the ring's fill level was at most the difference.
            self.span = int(producer[0]) - start
        return n

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        self._producer.release()
        self._words.release()
        self._view.release()
        self._consumer.release()
        self._cons_view.release()
        self._cons_map.close()
        self._data_map.close()
