"""Reading a BPF ring buffer straight from its memory mapping, without a callback per record.

libbpf's ``ring_buffer__poll`` calls back into Python once per record through ctypes, which costs more than
decoding the record. The ring buffer's memory layout is stable UAPI (the same one libbpf reads):

- page 0, mapped read-write: ``consumer_pos`` (u64), advanced by the reader;
- page 1, mapped read-only with the data: ``producer_pos`` (u64), advanced by the kernel;
- from page 2: the data area, mapped twice back to back so a record that wraps reads as one slice.

Each record has an 8-byte header: ``len`` (u32, with BUSY and DISCARD bits) and a page offset, then the
payload, padded to 8 bytes. x86-64 is a total-store-order machine, and ctypes reads and writes an aligned
u64 with one instruction, which is all the acquire/release pairing needs there.
"""

from __future__ import annotations

import ctypes
import mmap
import select
import struct
from collections.abc import Callable

from assay.errors import SensorError

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_LEN_MASK = ~(_BUSY | _DISCARD) & 0xFFFFFFFF
_U32 = struct.Struct("<I")


class RingBuffer:
    """A consumer of one BPF_MAP_TYPE_RINGBUF map."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise SensorError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self._size = size
        self._mask = size - 1
        try:
            self._cons_map = mmap.mmap(
                map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
            )
            self._data_map = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except OSError as exc:
            raise SensorError(f"cannot map the ring buffer (fd {map_fd}): {exc}") from exc
        self._consumer = ctypes.c_uint64.from_buffer(self._cons_map, 0)
        # The data mapping is read-only, so ctypes cannot view it in place; read producer_pos through a
        # memoryview cast to u64 (one aligned 8-byte load).
        self._view = memoryview(self._data_map)
        self._producer = self._view[0:8].cast("Q")
        self._data = self._view[page:]
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def wait(self, timeout: float) -> None:
        """Sleep until the kernel wakes us (lazy mode: only past the fill threshold) or the timeout."""
        if self.pending() == 0:
            self._epoll.poll(timeout)

    def pending(self) -> int:
        return int(self._producer[0] - self._consumer.value)

    def drain(self, handle: Callable[[memoryview], None], limit: int = 1 << 30) -> int:
        """Pass every committed record to ``handle`` (a memoryview valid only during the call)."""
        consumer = self._consumer
        cons = consumer.value
        n = 0
        data = self._data
        mask = self._mask
        u32 = _U32.unpack_from
        try:
            while n < limit:
                prod = self._producer[0]
                if cons >= prod:
                    break
                while cons < prod and n < limit:
                    off = cons & mask
                    hdr = u32(data, off)[0]
                    if hdr & _BUSY:
                        return n  # the producer is still writing this one
                    length = hdr & _LEN_MASK
                    cons += (length + _HDR + 7) & ~7  # past it before handling: a bad record is not re-read
                    if not hdr & _DISCARD:
                        start = off + _HDR
                        handle(data[start : start + length])
                        n += 1
                        if n & 63 == 0:
                            # release space as we go (a ctypes store per record would cost more than the
                            # record), so the kernel can reuse it while we decode the rest
                            consumer.value = cons
        finally:
            consumer.value = cons
        return n

    def close(self) -> None:
        self._epoll.close()
        self._producer.release()
        self._data.release()
        self._view.release()
        del self._consumer
        self._cons_map.close()
        self._data_map.close()
