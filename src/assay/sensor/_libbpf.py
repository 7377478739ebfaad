"""A small ctypes binding to Debian's ``libbpf.so.1``: open, configure, load and attach a CO-RE object.

Why ctypes and not BCC or a compiled extension: BCC needs kernel headers and LLVM on every host (it does not
work on the target kernel at all), and a C extension needs a compiler at install time. libbpf is a 385 kB
Debian package and CO-RE relocates the prebuilt object against the running kernel's BTF.

libbpf 1.x returns NULL or a negative errno and sets ``errno``; every call here goes through :func:`_check`
so a failure becomes a :class:`SensorError` that names the call, the object and the errno, with libbpf's own
log lines (the verifier's complaint, a missing BTF type) attached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Iterator
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_void_p,
)
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import SensorError, Source

_BTF_KIND_VAR = 14
_BTF_KIND_DATASEC = 15
_BPF_OBJ_NAME_LEN = 16
_PROG_INFO_NAME_OFFSET = 64  # offsetof(struct bpf_prog_info, name), stable UAPI
_PROG_INFO_SIZE = 256
_LIBBPF_INFO = 1  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
_VA_LIST_SIZE = 24  # sizeof(va_list) on x86-64 (struct __va_list_tag[1]), the only ABI the sensor loads on

# libbpf's print callback: (level, fmt, va_list). The va_list is passed through to vsnprintf untouched.
_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


class _VarSecinfo(ctypes.Structure):
    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


class _Lib:
    """The library, with argument and result types declared (ctypes defaults to int: wrong for pointers)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise SensorError(f"libbpf is not installed ({exc}); install Debian's libbpf1") from exc
        self.lib = lib
        self.libc = ctypes.CDLL(None, use_errno=True)
        sig: dict[str, tuple[object, list[object]]] = {
            "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
            "bpf_object__load": (c_int, [c_void_p]),
            "bpf_object__close": (None, [c_void_p]),
            "bpf_object__btf": (c_void_p, [c_void_p]),
            "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
            "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
            "bpf_program__name": (c_char_p, [c_void_p]),
            "bpf_program__set_autoload": (c_int, [c_void_p, c_bool]),
            "bpf_program__attach": (c_void_p, [c_void_p]),
            "bpf_program__fd": (c_int, [c_void_p]),
            "bpf_link__destroy": (c_int, [c_void_p]),
            "bpf_map__fd": (c_int, [c_void_p]),
            "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)]),
            "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
            "bpf_map__max_entries": (c_uint32, [c_void_p]),
            "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
            "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
            "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
            "bpf_prog_get_next_id": (c_int, [c_uint32, POINTER(c_uint32)]),
            "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
            "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
            "btf__find_by_name_kind": (ctypes.c_int32, [c_void_p, c_char_p, c_uint32]),
            "btf__type_by_id": (c_void_p, [c_void_p, c_uint32]),
            "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32]),
            "libbpf_num_possible_cpus": (c_int, []),
            "libbpf_set_print": (c_void_p, [c_void_p]),
        }
        for fn, (res, args) in sig.items():
            try:
                f = getattr(lib, fn)
            except AttributeError as exc:
                raise SensorError(f"libbpf lacks {fn}: libbpf >= 1.0 is needed") from exc
            f.restype = res
            f.argtypes = args
        self.libc.vsnprintf.restype = c_int
        self.libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
        # libbpf's log goes to our buffer (the verifier's messages explain a failed load), not to stderr.
        self.log: list[str] = []
        self._log_lock = threading.Lock()
        self._print_cb = _PRINT_FN(self._print)
        lib.libbpf_set_print(ctypes.cast(self._print_cb, c_void_p))

    def _print(self, level: int, fmt: bytes | None, va_list: int | None) -> int:
        if level > _LIBBPF_INFO or not va_list:
            return 0  # debug chatter (one line per CO-RE relocation) explains nothing we report
        # Measure, then format: one message can be a whole verifier log, whose *tail* holds the reason.
        # vsnprintf consumes the va_list; on x86-64 it is a 24-byte struct, so a byte copy is va_copy.
        saved = ctypes.string_at(va_list, _VA_LIST_SIZE)
        need = self.libc.vsnprintf(None, 0, fmt, va_list)
        ctypes.memmove(va_list, saved, _VA_LIST_SIZE)
        buf = ctypes.create_string_buffer(max(need, 0) + 1)
        self.libc.vsnprintf(buf, len(buf), fmt, va_list)
        text = buf.value.decode("utf-8", "replace").rstrip()
        with self._log_lock:
            self.log.append(text)
            del self.log[:-200]  # keep the tail: the verifier's last lines carry the reason
        return 0

    def take_log(self) -> list[str]:
        with self._log_lock:
            out, self.log[:] = list(self.log), []
        return out


_LIB: _Lib | None = None
_LIB_LOCK = threading.Lock()


def lib() -> _Lib:
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            _LIB = _Lib()
        return _LIB


def _errno_text(code: int) -> str:
    code = abs(code)
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


@dataclass
class BpfObject:
    """An opened (and later loaded and attached) BPF object file. Not thread-safe; one owner."""

    path: Path
    _obj: int | None = None
    _links: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        lb = lib()
        lb.take_log()
        if not self.path.is_file():
            raise SensorError("BPF object not found", Source(file=str(self.path)))
        obj = lb.lib.bpf_object__open_file(str(self.path).encode(), None)
        if not obj:
            raise self._error("bpf_object__open_file", ctypes.get_errno())
        self._obj = obj

    # --- errors -----------------------------------------------------------------------------------------
    def _error(self, call: str, code: int, what: str = "") -> SensorError:
        log = [line for line in lib().take_log() if line]
        detail = f"{call}{' ' + what if what else ''} failed: {_errno_text(code)}"
        if log:
            detail += "; libbpf: " + " | ".join(log[-12:])
        return SensorError(detail, Source(file=str(self.path)))

    @property
    def handle(self) -> int:
        if self._obj is None:
            raise SensorError("BPF object is closed", Source(file=str(self.path)))
        return self._obj

    # --- before load ------------------------------------------------------------------------------------
    def map_ptr(self, name: str) -> int:
        m = lib().lib.bpf_object__find_map_by_name(self.handle, name.encode())
        if not m:
            raise SensorError(f"map {name!r} not in the object", Source(file=str(self.path)))
        return int(m)

    def set_max_entries(self, name: str, entries: int) -> None:
        rc = lib().lib.bpf_map__set_max_entries(self.map_ptr(name), entries)
        if rc:
            raise self._error("bpf_map__set_max_entries", rc, name)

    def rodata_vars(self) -> dict[str, tuple[int, int]]:
        """Offsets and sizes of the ``const volatile`` globals in .rodata, from the object's BTF DATASEC."""
        lb = lib().lib
        btf = lb.bpf_object__btf(self.handle)
        if not btf:
            raise SensorError("the object has no BTF (was it stripped of .BTF?)", Source(file=str(self.path)))
        sec_id = lb.btf__find_by_name_kind(btf, b".rodata", _BTF_KIND_DATASEC)
        if sec_id < 0:
            return {}
        t = _BtfType.from_address(lb.btf__type_by_id(btf, sec_id))
        vlen = t.info & 0xFFFF
        base = lb.btf__type_by_id(btf, sec_id) + ctypes.sizeof(_BtfType)
        out: dict[str, tuple[int, int]] = {}
        for i in range(vlen):
            si = _VarSecinfo.from_address(base + i * ctypes.sizeof(_VarSecinfo))
            vt = _BtfType.from_address(lb.btf__type_by_id(btf, si.type))
            if (vt.info >> 24) & 0x1F != _BTF_KIND_VAR:
                continue
            name = lb.btf__name_by_offset(btf, vt.name_off) or b""
            out[name.decode()] = (si.offset, si.size)
        return out

    def set_rodata(self, values: dict[str, int]) -> None:
        """Patch ``const volatile`` configuration (little-endian integers) before load."""
        layout = self.rodata_vars()
        size = c_size_t()
        ptr = lib().lib.bpf_map__initial_value(self.map_ptr(".rodata"), ctypes.byref(size))
        if not ptr:
            raise SensorError(".rodata has no initial value", Source(file=str(self.path)))
        for name, value in values.items():
            if name not in layout:
                raise SensorError(
                    f"no configuration variable {name!r} in .rodata", Source(file=str(self.path))
                )
            off, width = layout[name]
            if off + width > size.value:
                raise SensorError(
                    f".rodata variable {name!r} lies outside the section", Source(file=str(self.path))
                )
            ctypes.memmove(ptr + off, value.to_bytes(width, "little"), width)

    def programs(self) -> Iterator[tuple[str, int]]:
        lb = lib().lib
        prog = lb.bpf_object__next_program(self.handle, None)
        while prog:
            yield (lb.bpf_program__name(prog) or b"").decode(), int(prog)
            prog = lb.bpf_object__next_program(self.handle, prog)

    # --- load and attach --------------------------------------------------------------------------------
    def load(self) -> None:
        rc = lib().lib.bpf_object__load(self.handle)
        if rc:
            raise self._error("bpf_object__load", rc)
        lib().take_log()

    def attach_all(self) -> list[str]:
        """Attach every program by its SEC() name; on failure detach what was attached, then raise."""
        names = []
        for name, prog in self.programs():
            link = lib().lib.bpf_program__attach(prog)
            if not link:
                code = ctypes.get_errno()
                self.detach()
                raise self._error("bpf_program__attach", code, name)
            self._links.append(int(link))
            names.append(name)
        return names

    def program_ids(self) -> list[int]:
        """Kernel ids of the loaded programs (to check later that they are gone)."""
        ids = []
        for _, prog in self.programs():
            fd = int(lib().lib.bpf_program__fd(prog))
            if fd >= 0:
                ids.append(prog_id(fd))
        return ids

    def map_fd(self, name: str) -> int:
        fd = int(lib().lib.bpf_map__fd(self.map_ptr(name)))
        if fd < 0:
            raise self._error("bpf_map__fd", fd, name)
        return fd

    def detach(self) -> None:
        lb = lib().lib
        while self._links:
            lb.bpf_link__destroy(self._links.pop())

    def close(self) -> None:
        self.detach()
        if self._obj is not None:
            lib().lib.bpf_object__close(self._obj)
            self._obj = None


def map_update(fd: int, key: bytes, value: bytes, what: str) -> None:
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value, len(value))
    if lib().lib.bpf_map_update_elem(fd, kb, vb, 0):
        raise SensorError(f"bpf_map_update_elem({what}) failed: {_errno_text(ctypes.get_errno())}")


def map_delete(fd: int, key: bytes) -> bool:
    kb = ctypes.create_string_buffer(key, len(key))
    return bool(lib().lib.bpf_map_delete_elem(fd, kb) == 0)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value_size)
    if lib().lib.bpf_map_lookup_elem(fd, kb, vb):
        return None
    return vb.raw


def possible_cpus() -> int:
    n = int(lib().lib.libbpf_num_possible_cpus())
    if n <= 0:
        raise SensorError(f"libbpf_num_possible_cpus failed: {_errno_text(n)}")
    return n


def _prog_info(fd: int) -> bytes | None:
    info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    ln = c_uint32(_PROG_INFO_SIZE)
    if lib().lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(ln)) != 0:
        return None
    return info.raw


def prog_id(fd: int) -> int:
    raw = _prog_info(fd)
    if raw is None:
        raise SensorError(f"bpf_obj_get_info_by_fd({fd}) failed: {_errno_text(ctypes.get_errno())}")
    return int.from_bytes(raw[4:8], "little")  # bpf_prog_info.id


def program_exists(prog_id_: int) -> bool:
    """Whether a BPF program with this id is still loaded anywhere on the host."""
    fd = lib().lib.bpf_prog_get_fd_by_id(prog_id_)
    if fd < 0:
        return False
    os.close(fd)
    return True


def loaded_program_names() -> list[str]:
    """Names of every BPF program loaded on the host (to check that a stopped or killed sensor left none)."""
    lb = lib().lib
    names: list[str] = []
    cur = c_uint32(0)
    nxt = c_uint32(0)
    while lb.bpf_prog_get_next_id(cur.value, ctypes.byref(nxt)) == 0:
        cur.value = nxt.value
        fd = lb.bpf_prog_get_fd_by_id(cur.value)
        if fd < 0:
            continue  # released between the two calls
        try:
            info = _prog_info(fd)
            if info is not None:
                raw = info[_PROG_INFO_NAME_OFFSET : _PROG_INFO_NAME_OFFSET + _BPF_OBJ_NAME_LEN]
                names.append(raw.split(b"\0", 1)[0].decode("ascii", "replace"))
        finally:
            os.close(fd)
    return names
