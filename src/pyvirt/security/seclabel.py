# SPDX-License-Identifier: LGPL-2.1-or-later
"""A domain's ``<seclabel>`` for one security model, as the labelling drivers use it.

The process layer hands a driver the domain's ``<seclabel>`` elements (the XML model's objects, or
anything with the same attributes); :func:`requested_label` applies libvirt's rules to pick and
check the one for the driver's model, and the driver returns the label it assigned as a
:class:`SecLabelSpec` whose :func:`to_xml` is what the live domain XML shows.

libvirt's rules, as facts:

* no ``<seclabel>`` for the model: ``type='dynamic' relabel='yes'`` when qemu.conf's
  ``security_default_confined`` is on (the default), ``type='none'`` (unconfined) otherwise;
* a ``<seclabel type='none'/>`` without a model applies to every model;
* ``security_require_confined`` refuses unconfined domains;
* ``dynamic`` always relabels (``relabel='no'`` is refused); ``static`` needs a ``<label>`` and
  relabels only when asked (``relabel`` defaults to ``no``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pyvirt.errors import ConfigUnsupported, OperationInvalid, XMLError, codes

if TYPE_CHECKING:
    from pyvirt.security.apparmor import RuntimePath
    from pyvirt.security.manager import SecurityStack
    from pyvirt.security.resources import DomainSecurityContext
    from pyvirt.xml.domain_os import SecLabel

__all__ = ["SecLabelSpec", "SecLabelLike", "requested_label", "to_xml", "from_xml", "gen_labels",
           "reserve_labels", "release_labels", "live_seclabels", "secmodels"]


class SecLabelLike(Protocol):
    """What is read of a ``<seclabel>`` (the XML model's SecLabel has these attributes)."""

    @property
    def type(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def relabel(self) -> bool | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def imagelabel(self) -> str | None: ...
    @property
    def baselabel(self) -> str | None: ...


@dataclass(frozen=True)
class SecLabelSpec:
    """One model's label of a domain: requested (``label`` may be unset) or assigned."""

    model: str
    type: str = "dynamic"       #: dynamic, static or none
    relabel: bool = True
    label: str | None = None    #: the process label (SELinux context, AppArmor profile name)
    imagelabel: str | None = None
    baselabel: str | None = None

    @property
    def confined(self) -> bool:
        return self.type != "none"


def requested_label(seclabels: Iterable[SecLabelLike], model: str, *, domain: str,
                    default_confined: bool = True, require_confined: bool = False) -> SecLabelSpec:
    """The label ``model`` is asked for by a domain's ``<seclabel>`` elements (libvirt's rules)."""
    mine: SecLabelLike | None = None
    for sec in seclabels:
        if sec.model == model:
            if mine is not None:
                raise XMLError(f"domain '{domain}': <seclabel model='{model}'> is given twice; keep "
                               "one")
            mine = sec
        elif sec.model is None and sec.type == "none" and mine is None:
            mine = sec
    if mine is None:
        spec = SecLabelSpec(model, "dynamic" if default_confined else "none",
                            relabel=default_confined)
    else:
        kind = mine.type or ("static" if mine.label else "dynamic")
        if kind == "dynamic":
            if mine.relabel is False:
                raise XMLError(f"domain '{domain}': <seclabel type='dynamic' model='{model}'> must "
                               "relabel resources; remove relabel='no' or use type='static'")
            spec = SecLabelSpec(model, "dynamic", True, baselabel=mine.baselabel)
        elif kind == "static":
            if not mine.label:
                raise XMLError(f"domain '{domain}': <seclabel type='static' model='{model}'> needs "
                               "a <label> (the label QEMU runs with)")
            relabel = bool(mine.relabel)
            spec = SecLabelSpec(model, "static", relabel, label=mine.label,
                                imagelabel=mine.imagelabel if relabel else None)
        else:
            spec = SecLabelSpec(model, "none", relabel=False)
    if not spec.confined and require_confined:
        raise ConfigUnsupported(f"domain '{domain}': unconfined guests are not allowed on this host "
                                "(security_require_confined = 1 in qemu.conf); remove <seclabel "
                                "type='none'> or turn security_default_confined on",
                                domain=codes.VIR_FROM_SECURITY)
    return spec


def from_xml(sec: SecLabelLike, model: str | None = None) -> SecLabelSpec:
    """A label read back from live (status) XML, to reserve it again after a driver restart."""
    name = sec.model or model
    if not name:
        raise OperationInvalid("a <seclabel> of live XML has no model", domain=codes.VIR_FROM_SECURITY)
    return SecLabelSpec(name, sec.type or "dynamic", bool(sec.relabel), sec.label, sec.imagelabel,
                        sec.baselabel)


def to_xml(spec: SecLabelSpec) -> SecLabel:
    """The ``<seclabel>`` the live domain XML shows for an assigned label."""
    from pyvirt.xml.domain_os import SecLabel

    if not spec.confined:
        return SecLabel(type="none", model=spec.model)
    return SecLabel(type=spec.type, model=spec.model, relabel=spec.relabel, label=spec.label,
                    imagelabel=spec.imagelabel if spec.relabel else None,
                    baselabel=spec.baselabel)


# --- the wiring: one call per phase over a whole stack ----------------------------------------------

def gen_labels(stack: SecurityStack, ctx: DomainSecurityContext, seclabels: Iterable[SecLabelLike],
               *, virt_type: str = "qemu", runtime: Iterable[RuntimePath] = ()) -> list[SecLabelSpec]:
    """Assign the labels of every labelling driver of ``stack`` (before ``set_all``); returns them
    for the live XML. If one driver refuses, those already assigned are released."""
    from pyvirt.security.apparmor import AppArmorDriver
    from pyvirt.security.selinux import SELinuxDriver

    runtime = tuple(runtime)
    done: list[SELinuxDriver | AppArmorDriver] = []
    specs: list[SecLabelSpec] = []
    seclabels = list(seclabels)
    try:
        for driver in stack.drivers:
            if isinstance(driver, SELinuxDriver):
                specs.append(driver.gen_label(ctx, seclabels, virt_type=virt_type))
                done.append(driver)
            elif isinstance(driver, AppArmorDriver):
                specs.append(driver.gen_label(ctx, seclabels, runtime=runtime))
                done.append(driver)
    except BaseException:
        for d in done:
            d.release_label(ctx)
        raise
    return specs


def reserve_labels(stack: SecurityStack, ctx: DomainSecurityContext, seclabels: Iterable[SecLabelLike],
                   *, runtime: Iterable[RuntimePath] = ()) -> None:
    """Take back the labels of a domain found running (its live XML's ``<seclabel>`` elements) when a
    driver reconnects, so that no new domain is given the same MCS categories."""
    from pyvirt.security.apparmor import AppArmorDriver
    from pyvirt.security.selinux import SELinuxDriver

    by_model = {sec.model: sec for sec in seclabels if sec.model}
    for driver in stack.drivers:
        sec = by_model.get(driver.name)
        if isinstance(driver, SELinuxDriver) and sec is not None:
            driver.reserve_label(ctx, from_xml(sec))
        elif isinstance(driver, AppArmorDriver) and sec is not None:
            driver.reserve_label(ctx, from_xml(sec), runtime=runtime)


def release_labels(stack: SecurityStack, ctx: DomainSecurityContext) -> None:
    """Give up the domain's labels (after ``restore_all``, once QEMU is gone)."""
    from pyvirt.security.apparmor import AppArmorDriver
    from pyvirt.security.selinux import SELinuxDriver

    for driver in stack.drivers:
        if isinstance(driver, SELinuxDriver | AppArmorDriver):
            driver.release_label(ctx)


def live_seclabels(stack: SecurityStack, uuid: str) -> list[SecLabel]:
    """The ``<seclabel>`` elements of the running domain ``uuid`` for its live XML."""
    from pyvirt.security.apparmor import AppArmorDriver
    from pyvirt.security.selinux import SELinuxDriver

    out = []
    for driver in stack.drivers:
        if isinstance(driver, SELinuxDriver | AppArmorDriver):
            spec = driver.label_of(uuid)
            if spec is not None:
                out.append(to_xml(spec))
    return out


def secmodels(stack: SecurityStack, dac_label: str) -> list[tuple[str, str, dict[str, str]]]:
    """The capabilities XML's ``<secmodel>`` list, (model, doi, base labels by domain type), in the
    stack's order; ``dac_label`` is ``+UID:+GID`` of qemu.conf's user and group."""
    from pyvirt.security.apparmor import AppArmorDriver
    from pyvirt.security.selinux import SELinuxDriver

    out: list[tuple[str, str, dict[str, str]]] = []
    for driver in stack.drivers:
        if isinstance(driver, SELinuxDriver | AppArmorDriver):
            out.append(driver.secmodel())
        elif driver.name == "dac":
            out.append(("dac", "0", {"kvm": dac_label, "qemu": dac_label}))
        else:
            out.append((driver.name, "0", {}))
    return out
