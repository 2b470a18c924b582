# SPDX-License-Identifier: LGPL-2.1-or-later
"""KVM: *present* (``/dev/kvm`` exists and the emulator has the kvm accelerator) versus *usable*
(a guest really runs under it).

Why a real test: a host can expose ``/dev/kvm`` on which ordinary guests cannot run. The CI machine
is such a host: a nested PVM hypervisor (``kvm_pvm``) where QEMU starts, SeaBIOS even runs, but as
soon as the guest enables paging the vCPU stops making progress (other boots of it made QEMU abort
with "failed to set MSR 0x10a"). libvirt offers ``<domain type='kvm'>`` there anyway; pyvirt must
not offer a domain type that cannot start a guest.

The test boots a tiny payload as the machine's firmware (``-bios``) under ``-accel kvm``. It is the
smallest thing every OS does: real mode -> protected mode -> PAE paging -> touch 2 MiB of memory,
then it exits QEMU through ``isa-debug-exit``. It reports its progress on ``isa-debugcon``: ``S``
when the vCPU starts, ``P`` once paging is on. A healthy KVM finishes in a few milliseconds after
``S``; the deadline after ``S`` is generous (:data:`RUN_DEADLINE`) yet keeps a broken KVM from
slowing the cold probe. QEMU start-up is not counted (it depends on the machine's load, not KVM).

The result is cached with the capabilities, keyed by :func:`kvm_key`: the emulator's identity, the
identity of ``/dev/kvm`` and the boot id, so a reboot or a new kernel module re-runs the test.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

DEV_KVM = "/dev/kvm"
BOOT_ID = "/proc/sys/kernel/random/boot_id"

#: seconds the payload gets between its first instruction and its exit
RUN_DEADLINE = 0.3
#: seconds QEMU gets to reach the payload's first instruction
START_DEADLINE = 10.0

# The payload's code, loaded at the start of a 64 KiB BIOS image (physical 0xF0000); the reset
# vector at 0xFFFF0 jumps to it. Assembled with GNU as (--32) from this source:
#
#         .set ROM, 0xF0000 ; .set PDPT, 0x10000 ; .set PD, 0x11000
#         .code16
# start:  cli
#         movb $'S', %al ; movw $0x402, %dx ; outb %al, %dx       # "vCPU started"
#         lgdtl %cs:(gdtr - start)
#         movl %cr0, %eax ; orl $1, %eax ; movl %eax, %cr0         # protected mode
#         ljmpl $0x08, $(ROM + pm32 - start)
#         .code32
# pm32:   movw $0x10, %ax ; movw %ax, %ds ; movw %ax, %es ; movw %ax, %ss
#         movl $PDPT, %edi ; movl $2048, %ecx ; xorl %eax, %eax ; rep stosl
#         movl $(PD + 1), PDPT                                     # PAE: 4 x 2 MiB identity map
#         movl $0x00000083, PD ; movl $0x00200083, PD + 8
#         movl $0x00400083, PD + 16 ; movl $0x00600083, PD + 24
#         movl %cr4, %eax ; orl $0x20, %eax ; movl %eax, %cr4      # CR4.PAE
#         movl $PDPT, %eax ; movl %eax, %cr3
#         movl %cr0, %eax ; orl $0x80000000, %eax ; movl %eax, %cr0  # paging on
#         movb $'P', %al ; movw $0x402, %dx ; outb %al, %dx       # "paging works"
#         movl $0x100000, %edi ; movl $512, %ecx                   # touch 512 pages from 1 MiB
# 1:      movl %ecx, (%edi) ; addl $4096, %edi ; decl %ecx ; jnz 1b
#         movb $0x2a, %al ; outb %al, $0xf4                        # isa-debug-exit: status 85
# 2:      hlt ; jmp 2b
#         .p2align 3
# gdt:    .quad 0 ; .quad 0x00CF9B000000FFFF ; .quad 0x00CF93000000FFFF
# gdtr:   .word 23 ; .long ROM + gdt - start
_PAYLOAD_CODE = bytes.fromhex(
    "fab053ba0204ee2e660f0116c8000f20c06683c8010f22c066ea20000f00080066b810008ed88ec08ed0bf000001"
    "00b90008000031c0f3abc7050000010001100100c7050010010083000000c7050810010083002000c70510100100"
    "83004000c70518100100830060000f20e083c8200f22e0b8000001000f22d80f20c00d000000800f22c0b05066ba"
    "0204eebf00001000b900020000890f81c7001000004975f5b02ae6f4f4ebfd8db426000000000000000000000000"
    "ffff0000009bcf00ffff00000093cf001d00b0000f00")
_RESET_VECTOR = bytes.fromhex("ea000000f0")  # ljmp $0xF000, $0
#: isa-debug-exit turns the value 0x2a into the exit status (0x2a << 1) | 1
PAYLOAD_EXIT_STATUS = 85


def payload_image() -> bytes:
    """The 64 KiB firmware image QEMU loads with ``-bios``."""
    image = bytearray(0x10000)
    image[:len(_PAYLOAD_CODE)] = _PAYLOAD_CODE
    image[0xFFF0:0xFFF0 + len(_RESET_VECTOR)] = _RESET_VECTOR
    return bytes(image)


class KvmStatus(NamedTuple):
    """What pyvirt knows of KVM for one emulator binary."""

    present: bool   # /dev/kvm exists and the emulator has the kvm accelerator
    usable: bool    # a test guest really ran under KVM
    reason: str     # why not usable (or how it was found usable), for humans

    def to_json(self) -> dict[str, Any]:
        return {"present": self.present, "usable": self.usable, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KvmStatus:
        return cls(bool(data["present"]), bool(data["usable"]), str(data["reason"]))


def dev_kvm_identity() -> list[int] | None:
    """Identity of /dev/kvm (None if absent): a reloaded module or a new node changes it."""
    try:
        st = os.stat(DEV_KVM)
    except OSError:
        return None
    return [st.st_rdev, st.st_ino, st.st_ctime_ns]


def boot_id() -> str:
    try:
        with open(BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def kvm_key(binary_identity: list[Any]) -> list[Any]:
    """The cache key of a KVM test result."""
    return [binary_identity, dev_kvm_identity(), boot_id()]


def absent_reason() -> str | None:
    """Why KVM cannot even be tried on this host (None when /dev/kvm is there and accessible)."""
    if not os.path.exists(DEV_KVM):
        return (f"{DEV_KVM} does not exist: load the kvm module (kvm_intel or kvm_amd) and enable "
                "virtualization in the firmware")
    if not os.access(DEV_KVM, os.R_OK | os.W_OK):
        return (f"{DEV_KVM} is not readable and writable by this user: add the user to the group "
                "that owns it (usually 'kvm')")
    return None


async def test_usable(binary: str, machine: str, *, run_deadline: float = RUN_DEADLINE,
                      start_deadline: float = START_DEADLINE, accel: str = "kvm") -> tuple[bool, str]:
    """Boot the payload under KVM with ``binary`` and machine type ``machine``.

    Returns (usable, reason). Never leaves a QEMU process behind. ``accel`` exists for the tests,
    which check with ``tcg`` that the payload itself completes.
    """
    import asyncio
    import socket
    import tempfile

    from pyvirt.qemu.probe import reap  # the cold path only: it imports asyncio

    # The firmware must be a file (-bios takes a name); a private temporary file keeps concurrent
    # probes from racing on a shared path.
    with tempfile.NamedTemporaryFile(prefix="pyvirt-kvm-test-", suffix=".bin") as fw:
        fw.write(payload_image())
        fw.flush()
        ours, theirs = socket.socketpair()
        proc: asyncio.subprocess.Process | None = None
        try:
            argv = [binary, "-machine", f"{machine},accel={accel}", "-m", "16", "-nodefaults",
                    "-no-user-config", "-display", "none", "-bios", fw.name,
                    "-chardev", f"socket,id=dbg,fd={theirs.fileno()}",
                    "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
                    "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),))
            theirs.close()
            reader, writer = await asyncio.open_connection(sock=ours)
            try:
                return await _watch(proc, reader, run_deadline, start_deadline)
            finally:
                writer.close()
        except OSError as e:
            return False, f"cannot run {binary} to test KVM: {e}"
        finally:
            theirs.close()
            ours.close()
            if proc is not None:
                await reap(proc)


async def _watch(proc: Any, reader: Any, run_deadline: float, start_deadline: float) -> tuple[bool, str]:
    import asyncio

    progress = b""
    eof = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + start_deadline
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(16), remaining)
        except TimeoutError:
            break
        if not chunk:  # QEMU is exiting: the socket closes with it
            eof = True
            break
        if not progress:
            deadline = loop.time() + run_deadline  # the guest runs from now on
        progress += chunk
    try:
        status = await asyncio.wait_for(proc.wait(), 2.0 if eof else 0.05)
    except TimeoutError:
        status = None
    if status == PAYLOAD_EXIT_STATUS:
        return True, "a test guest ran under KVM (protected mode, paging, memory access)"
    if status is None:
        proc.kill()
        if not progress:
            return False, f"QEMU did not start a KVM guest within {start_deadline:g} s"
        stage = "after enabling paging" if b"P" in progress else "while enabling paging"
        return False, (f"a test guest stopped making progress under KVM {stage} (no exit within "
                       f"{run_deadline:g} s; a healthy KVM needs milliseconds): /dev/kvm is present "
                       "but cannot run guests, e.g. a nested hypervisor without full support")
    err = b""
    if proc.stderr is not None:
        err = await proc.stderr.read(2000)
    text = " ".join(err.decode(errors="replace").split())
    return False, f"QEMU exited with status {status} running a test guest under KVM: {text or 'no message'}"

