"""The rollout's link to the model registry: resolve ``MODEL@SEMVER`` to the backend that
serves it (through the control plane's gate) and record the outcome on the version.

* start: the version must be registered and allowed by the route's ``require_stage``
  (:func:`control.gate.may_serve`); the promotion that put it in its stage is kept in the
  ``rollout.started`` audit event.
* success: ``model.deployed`` (with that promotion id) is written in the same transaction
  as ``rollout.succeeded`` (:func:`control.gate.record_deployment`).
* rollback: ``model.rolled_back`` with the reason, for the compliance report.
"""

from __future__ import annotations

from control.gate import GateRefusedError, may_serve, record_deployment
from control.store import Store, Transaction
from control.versions import check_name, parse_version
from proxy.errors import InvalidInputError, NotFoundError


def split_ref(ref: str) -> tuple[str, str]:
    """``"sentiment@2.1.0"`` -> ``("sentiment", "2.1.0")``, validated (422 otherwise)."""
    model, sep, version = ref.partition("@")
    if not sep:
        raise InvalidInputError(f"{ref!r} is not MODEL@SEMVER", field="version")
    check_name(model, "version")
    parse_version(version, "version")
    return model, version


async def resolve_version(store: Store, ref: str, required_stage: str | None,
                          ) -> tuple[str, str | None]:
    """(backend, promotion id) for a registered version the gate lets serve."""
    model, version = split_ref(ref)
    decision = await may_serve(store, model, version, required_stage or "development")
    if decision.stage is None:
        raise NotFoundError(f"{ref} is not registered")
    if not decision.allowed:
        raise GateRefusedError(f"{ref} may not take traffic here: {decision.reason}")
    from control.registry import Registry

    found = await Registry(store).find(model, version)
    assert found is not None
    return found.backend, decision.promotion_id


async def record_outcome(store: Store, tx: Transaction, ref: str, route: str, actor: str,
                         required_stage: str | None, *, succeeded: bool,
                         reason: str | None) -> None:
    model, version = split_ref(ref)
    if succeeded:
        await record_deployment(store, tx, model, version, route, actor,
                                required_stage=required_stage or "development")
    else:
        await store.audit.append(tx, "model.rolled_back", actor, f"model/{model}@{version}",
                                 {"model": model, "version": version, "route": route,
                                  "reason": reason}, severity="warning")
