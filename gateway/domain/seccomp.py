"""The seccomp filter of a job: a classic-BPF program that bubblewrap loads (`--seccomp FD`).

No maintained Python binding of libseccomp installs from the project's registries into its
virtual environment, and the program is short, so it is built here, instruction by instruction,
and tested by running jobs under it (tests/jobs/test_jail.py). It:
1. kills the process if the system call comes from another architecture's ABI (a 32-bit call
   through `int 0x80` has other numbers: `socketcall` would get past a check of `socket`);
2. refuses every x32 call on x86-64 (the same calls with bit 30 set);
3. refuses, with EPERM, the calls that open a way out or into the kernel the namespaces do not
   cover: `socket` (no socket at all, not even a Unix one), io_uring (which creates sockets
   without the `socket` call), the kernel keyrings (not namespaced), `bpf` and `perf_event_open`;
4. allows the rest (the namespaces, the uid and the limits hold those).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
EPERM = 1
X32_SYSCALL_BIT = 0x40000000
_NR_OFFSET, _ARCH_OFFSET = 0, 4


@dataclass(frozen=True, slots=True)
class Abi:
    audit_arch: int
    refused: dict[str, int]
    """System call names and their numbers in this ABI."""
    x32_bit: bool


_IO_URING = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
ABIS = {
    "x86_64": Abi(
        0xC000003E,
        {
            "socket": 41,
            "socketpair": 53,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "perf_event_open": 298,
            "bpf": 321,
            "memfd_create": 319,  # memory in files no process maps: the memory watch cannot see it
            "shmget": 29,  # SysV shared memory held while unmapped: the same
        }
        | _IO_URING,
        x32_bit=True,
    ),
    "aarch64": Abi(
        0xC00000B7,
        {
            "socket": 198,
            "socketpair": 199,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "perf_event_open": 241,
            "bpf": 280,
            "memfd_create": 279,
            "shmget": 194,
        }
        | _IO_URING,
        x32_bit=False,
    ),
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def job_filter(machine: str) -> bytes:
    """The program for `machine` (`platform.machine()`), as the bytes of its `sock_filter`s."""
    abi = ABIS.get(machine)
    if abi is None:
        raise ValueError(f"no seccomp filter for the {machine} architecture")
    refuse = _op(_RET_K, RET_ERRNO | EPERM)
    program = [
        _op(_LD_W_ABS, _ARCH_OFFSET),
        _op(_JEQ_K, abi.audit_arch, jt=1, jf=0),
        _op(_RET_K, RET_KILL_PROCESS),
        _op(_LD_W_ABS, _NR_OFFSET),
    ]
    if abi.x32_bit:
        program += [_op(_JGE_K, X32_SYSCALL_BIT, jt=0, jf=1), refuse]
    for number in abi.refused.values():
        program += [_op(_JEQ_K, number, jt=0, jf=1), refuse]
    program.append(_op(_RET_K, RET_ALLOW))
    return b"".join(program)
