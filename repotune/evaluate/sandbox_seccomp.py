"""The seccomp filter of a bubblewrap sandbox: one process, one thread, no new namespaces.

Resource limits alone do not bound a sandbox as root: the kernel exempts uid 0 from
``RLIMIT_NPROC``, and bubblewrap run by root maps the sandbox's user to uid 0 outside. So the
kernel itself refuses, with EPERM, every system call that starts a process or a thread
(``clone``, ``clone3``, ``fork``, ``vfork``), enters or makes a namespace (``unshare``,
``setns``), or reaches into another process (``ptrace``, ``process_vm_writev``,
``pidfd_getfd``). The python_test then is a single thread, so ``RLIMIT_AS`` bounds all the
memory it can take, and no audit hook is needed for either. A system call of another ABI (i386
or x32 calls on x86_64, which have other numbers) kills the process.

The program is classic BPF (``struct sock_filter``, as ``seccomp_export_bpf`` writes it), which
``bwrap --seccomp FD`` installs just before it starts the command; no library is needed to
build it. Architectures other than x86_64 and aarch64 get no filter (:func:`program` is None),
and then bubblewrap is not used (:mod:`repotune.evaluate.sandbox`).
"""

import errno
import platform
import struct

# BPF instruction classes and fields (linux/bpf_common.h) and seccomp return values
# (linux/seccomp.h).
_LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS: load 32 bits of struct seccomp_data
_JUMP_EQUAL = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_AT_LEAST = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000
_NUMBER = 0  # offsetof(struct seccomp_data, nr)
_ARCH = 4  # offsetof(struct seccomp_data, arch)
_X32 = 0x40000000  # __X32_SYSCALL_BIT

# machine -> (AUDIT_ARCH_* value, system call numbers refused), from the kernel's syscall tables.
ARCHITECTURES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "clone": 56,
            "fork": 57,
            "vfork": 58,
            "ptrace": 101,
            "unshare": 272,
            "setns": 308,
            "process_vm_writev": 311,
            "clone3": 435,
            "pidfd_getfd": 438,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "unshare": 97,
            "ptrace": 117,
            "clone": 220,
            "setns": 268,
            "process_vm_writev": 271,
            "clone3": 435,
            "pidfd_getfd": 438,
        },
    ),
}


def _instruction(code: int, jump_true: int, jump_false: int, value: int) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, value)


def program(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (default: this one) as bytes for ``bwrap --seccomp``, or
    None on an architecture it does not know."""
    known = ARCHITECTURES.get(machine or platform.machine())
    if known is None:
        return None
    arch, calls = known
    numbers = sorted(calls.values())
    checks = [(_JUMP_EQUAL, number) for number in numbers]
    if arch == ARCHITECTURES["x86_64"][0]:
        checks.insert(0, (_JUMP_AT_LEAST, _X32))
    # Layout: load arch, check it, load the number, one check per refused call, then ALLOW,
    # REFUSE and KILL. A jump offset counts the instructions skipped.
    body = [_instruction(_LOAD_WORD, 0, 0, _ARCH)]
    body.append(_instruction(_JUMP_EQUAL, 0, len(checks) + 3, arch))  # else to KILL
    body.append(_instruction(_LOAD_WORD, 0, 0, _NUMBER))
    for index, (code, value) in enumerate(checks):
        to_refuse = len(checks) - index  # past the remaining checks and ALLOW
        body.append(_instruction(code, to_refuse, 0, value))
    body.append(_instruction(_RETURN, 0, 0, _ALLOW))
    body.append(_instruction(_RETURN, 0, 0, _ERRNO | errno.EPERM))
    body.append(_instruction(_RETURN, 0, 0, _KILL_PROCESS))
    return b"".join(body)
