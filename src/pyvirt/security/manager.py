# SPDX-License-Identifier: LGPL-2.1-or-later
"""The security layer's one interface: a table of hooks, drivers implementing it, and a stack.

As in libvirt's ``src/security/``, every driver (DAC, SELinux, AppArmor; "none" does nothing)
implements the same hooks, and :class:`SecurityStack` composes them so that the process
layer calls one object and never knows which drivers are active:

* ``set_process_label(ctx, creds)``: what the QEMU child does before exec (identity, capabilities,
  later an exec label). Drivers never run code in the child: they fill a
  :class:`~pyvirt.security.privileges.ChildCredentials` that the exec shim applies (see
  :mod:`pyvirt.security.privileges` for why).
* ``set_all(ctx)`` / ``restore_all(ctx)``: label every host file of a domain on start, give them
  back on stop.
* ``set_image(ctx, resource)`` / ``restore_image(ctx, resource)``: one file, for hotplug.
* ``begin()`` / ``commit()`` / ``rollback()`` (or ``with transaction():``): group changes so that a
  failure half way undoes everything already done.

Transactions differ from libvirt's on purpose. libvirt queues chown()s and runs them all at commit
(so that they can run inside QEMU's mount namespace); pyvirt applies each change at once and
journals how to undo it, so that the checks that precede a change see the state left by the
previous one, and a failure anywhere (in a driver, or in the caller between two calls, e.g. QEMU
failing to start) is undone by :meth:`rollback`. Every ``set_*`` call outside a transaction is its
own transaction: it either completes or changes nothing. A transaction belongs to the thread that
began it (like libvirt's thread-local one), so domains can start concurrently.

Restoring is best effort, as in libvirt: a file that cannot be given back must not stop the others
nor the domain's shutdown, so ``restore_*`` return the problems as messages instead of raising.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pyvirt.errors import InternalError, NotSupported, PyvirtError, codes
from pyvirt.security.privileges import ChildCredentials
from pyvirt.security.resources import DomainSecurityContext, Resource

if TYPE_CHECKING:
    from pyvirt.conf.qemu_conf import QemuConf
    from pyvirt.security.apparmor import ProfileLoader
    from pyvirt.security.selinux import LabelStore

__all__ = ["SecurityDriver", "NoneDriver", "SecurityStack", "build_security_stack"]

log = logging.getLogger(__name__)


class _Journal:
    """The undo steps of one open transaction, in the order the changes were made."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []


class SecurityDriver(abc.ABC):
    """One security model. Subclasses implement the ``_set_*``/``_restore_*`` hooks and call
    :meth:`journal` before each change they make; the transaction logic lives here."""

    #: libvirt's model name ("dac", "selinux", "apparmor", "none")
    name: str = ""

    def __init__(self) -> None:
        self._local = threading.local()

    # --- the hooks drivers implement ---------------------------------------------------------------

    def set_process_label(self, ctx: DomainSecurityContext, creds: ChildCredentials) -> ChildCredentials:
        """Return ``creds`` amended with what this driver needs the QEMU child to do."""
        return creds

    @abc.abstractmethod
    def _set_all(self, ctx: DomainSecurityContext) -> None: ...

    @abc.abstractmethod
    def _restore_all(self, ctx: DomainSecurityContext) -> list[str]: ...

    @abc.abstractmethod
    def _set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None: ...

    @abc.abstractmethod
    def _restore_image(self, ctx: DomainSecurityContext, resource: Resource) -> list[str]: ...

    # --- the public operations ---------------------------------------------------------------------

    def set_all(self, ctx: DomainSecurityContext) -> None:
        """Label every resource of ``ctx``; on error nothing stays changed (unless inside an open
        transaction, whose rollback then undoes it)."""
        with self._atomic():
            self._set_all(ctx)

    def restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        """Give every resource back; returns the problems met (it goes on past them)."""
        return self._restore_all(ctx)

    def set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        with self._atomic():
            self._set_image(ctx, resource)

    def restore_image(self, ctx: DomainSecurityContext, resource: Resource) -> list[str]:
        return self._restore_image(ctx, resource)

    # --- transactions ------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "journal", None) is not None

    def begin(self) -> None:
        if self.in_transaction:
            raise InternalError(f"security driver '{self.name}': a relabel transaction is already "
                                "open in this thread")
        self._local.journal = _Journal()

    def commit(self) -> None:
        """Keep every change made since :meth:`begin`."""
        if not self.in_transaction:
            raise InternalError(f"security driver '{self.name}': commit without a transaction")
        self._local.journal = None

    def rollback(self) -> list[str]:
        """Undo every change made since :meth:`begin`, newest first; returns what could not be
        undone (it goes on past failures, so that as much as possible is put back)."""
        journal: _Journal | None = getattr(self._local, "journal", None)
        if journal is None:
            raise InternalError(f"security driver '{self.name}': rollback without a transaction")
        self._local.journal = None
        problems: list[str] = []
        for what, undo in reversed(journal.steps):
            try:
                undo()
            except Exception as e:  # noqa: BLE001 - keep undoing the rest whatever happened
                problems.append(f"could not undo {what}: {e}")
                log.warning("security driver '%s': could not undo %s: %s", self.name, what, e)
        return problems

    def journal(self, what: str, undo: Callable[[], None]) -> None:
        """Record how to undo a change about to be made (a no-op outside transactions, which only
        restore operations run in)."""
        journal: _Journal | None = getattr(self._local, "journal", None)
        if journal is not None:
            journal.steps.append((what, undo))

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        if self.in_transaction:
            yield  # the open transaction's rollback covers it
            return
        self.begin()
        try:
            yield
        except BaseException as e:
            for problem in self.rollback():
                e.add_note(problem)
            raise
        self.commit()


def create_empty_file(driver: SecurityDriver, path: str) -> None:
    """Create ``path`` empty (a log QEMU appends to), journalled in ``driver``'s transaction: a
    rollback removes it if it is still that file and still empty. O_EXCL: a file that appeared
    meanwhile is not ours to remove."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    os.close(fd)
    st = os.stat(path)

    def undo() -> None:
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) and now.st_size == 0:
            os.unlink(path)

    driver.journal(f"creating {path}", undo)


class NoneDriver(SecurityDriver):
    """No confinement: libvirt's 'none' model (security_driver = "none")."""

    name = "none"

    def _set_all(self, ctx: DomainSecurityContext) -> None:
        return None

    def _restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        return []

    def _set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        return None

    def _restore_image(self, ctx: DomainSecurityContext, resource: Resource) -> list[str]:
        return []


class SecurityStack:
    """The drivers of one driver instance, called as one; the process layer's only entry point.

    Order is libvirt's: the configured model first (the primary, e.g. SELinux or "none"), DAC last.
    Set operations run in that order; restores too (as libvirt's stack does). A failure in any
    driver rolls back the drivers before it, newest change first.
    """

    def __init__(self, drivers: Sequence[SecurityDriver]) -> None:
        if not drivers:
            raise InternalError("a security stack needs at least one driver")
        names = [d.name for d in drivers]
        if len(set(names)) != len(names):
            raise InternalError(f"security driver listed twice in the stack: {names}")
        self.drivers: tuple[SecurityDriver, ...] = tuple(drivers)

    @property
    def primary(self) -> SecurityDriver:
        return self.drivers[0]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.drivers)

    def get(self, name: str) -> SecurityDriver | None:
        return next((d for d in self.drivers if d.name == name), None)

    # --- the child ---------------------------------------------------------------------------------

    def child_credentials(self, ctx: DomainSecurityContext) -> ChildCredentials:
        """What the QEMU child of ``ctx`` must do before exec, every driver having had its say."""
        creds = ChildCredentials()
        for driver in self.drivers:
            creds = driver.set_process_label(ctx, creds)
        return creds

    def wrap_command(self, ctx: DomainSecurityContext, argv: Sequence[str]) -> list[str]:
        """``argv`` turned into the command the process layer spawns (through the exec shim when the
        child must change anything; see :func:`pyvirt.security.privileges.wrap_command`)."""
        from pyvirt.security.privileges import wrap_command

        return wrap_command(argv, self.child_credentials(ctx))

    # --- labels ------------------------------------------------------------------------------------

    def set_all(self, ctx: DomainSecurityContext) -> None:
        with self._atomic():
            for driver in self.drivers:
                driver.set_all(ctx)

    def restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        problems: list[str] = []
        for driver in self.drivers:
            problems += driver.restore_all(ctx)
        return problems

    def set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        with self._atomic():
            for driver in self.drivers:
                driver.set_image(ctx, resource)

    def restore_image(self, ctx: DomainSecurityContext, resource: Resource) -> list[str]:
        problems: list[str] = []
        for driver in self.drivers:
            problems += driver.restore_image(ctx, resource)
        return problems

    # --- transactions ------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return any(d.in_transaction for d in self.drivers)

    def begin(self) -> None:
        begun: list[SecurityDriver] = []
        try:
            for driver in self.drivers:
                driver.begin()
                begun.append(driver)
        except PyvirtError:
            for driver in reversed(begun):
                driver.rollback()
            raise

    def commit(self) -> None:
        for driver in self.drivers:
            driver.commit()

    def rollback(self) -> list[str]:
        problems: list[str] = []
        for driver in reversed(self.drivers):
            if driver.in_transaction:
                problems += driver.rollback()
        return problems

    @contextmanager
    def transaction(self) -> Iterator[SecurityStack]:
        """``with stack.transaction():`` commits on success; any exception rolls back everything
        done inside the block (by every driver), and the rollback's problems become notes on the
        exception."""
        self.begin()
        try:
            yield self
        except BaseException as e:
            for problem in self.rollback():
                e.add_note(problem)
            raise
        self.commit()

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        if self.in_transaction:
            yield
            return
        with self.transaction():
            yield


def build_security_stack(models: Sequence[str] | None, dac: SecurityDriver, *,
                         conf: QemuConf | None = None, apparmor_dir: str | None = None,
                         selinux_store: LabelStore | None = None,
                         apparmor_loader: ProfileLoader | None = None) -> SecurityStack:
    """The stack for qemu.conf's ``security_driver`` (``models``), with ``dac`` always last.

    ``None`` (not set) means "probe the host", as libvirt does: SELinux if the kernel enforces it,
    else AppArmor if the kernel has it, else "none". ``conf`` gives ``security_default_confined``
    and ``security_require_confined``; ``apparmor_dir`` is where the AppArmor driver writes its
    profiles. ``selinux_store`` / ``apparmor_loader`` replace the host's label store and profile
    loader (tests); without them a model the host lacks is an error naming the fix.
    """
    from pyvirt.security.apparmor import apparmor_status
    from pyvirt.security.selinux import selinux_status

    if models is None:
        if selinux_status() is None:
            models = ("selinux",)
        elif apparmor_status() is None and apparmor_dir is not None:
            models = ("apparmor",)
        else:
            models = ("none",)
    confined = conf.security_default_confined if conf is not None else True
    required = conf.security_require_confined if conf is not None else False
    drivers: list[SecurityDriver] = []
    for model in models:
        if model == "none":
            drivers.append(NoneDriver())
        elif model == "selinux":
            from pyvirt.security.selinux import SELinuxContexts, SELinuxDriver, XattrLabelStore

            contexts = None
            if selinux_store is None:
                why = selinux_status()
                if why is not None:
                    from pyvirt.security.selinux import _unavailable

                    raise _unavailable(why)
                selinux_store, contexts = XattrLabelStore(), SELinuxContexts.from_host()
            drivers.append(SELinuxDriver(selinux_store, contexts=contexts, default_confined=confined,
                                         require_confined=required))
        elif model == "apparmor":
            from pyvirt.security.apparmor import AppArmorDriver, ParserLoader, ProfileSet
            from pyvirt.security.apparmor import _unavailable as _aa_unavailable

            if apparmor_dir is None:
                raise InternalError("the AppArmor driver needs the directory of its profiles")
            if apparmor_loader is None:
                why = apparmor_status()
                if why is not None:
                    raise _aa_unavailable(why)
                apparmor_loader = ParserLoader()
            drivers.append(AppArmorDriver(ProfileSet(apparmor_dir), apparmor_loader,
                                          default_confined=confined, require_confined=required))
        else:
            raise NotSupported(f"unknown security driver '{model}' (known: none, selinux, apparmor)",
                               domain=codes.VIR_FROM_SECURITY)
    if dac.name in (d.name for d in drivers):
        raise InternalError("the DAC driver is always stacked last; do not list it")
    return SecurityStack([*drivers, dac])
