"""One bounded reconcile pass of one cluster: lease, load, observe, run the open steps, write status, commit.

Called by the Celery task ``provider.reconcile_cluster`` (``provider.tasks``) and by tests. A pass never
sleeps: it returns ``PassResult.requeue_after`` and the task re-queues itself with that countdown, carrying
the ticket the pass's commit wrote. The lease is taken in its own short transaction and renewed by a
heartbeat while the pass runs; everything else the pass writes (conditions, phase, nodes, operation
progress, webhook outbox rows, the cluster's next due time, the lease release) goes out in one commit at the
end, fenced on still holding the lease. If the process dies mid-pass nothing is written, the lease runs out
within ``lease_seconds``, the due-scan (``provider.reconciler.due``) queues the cluster again, and the next
pass finds the cloud resources by tag: steps are idempotent.

A message that finds the lease held (``locked``) or its ticket superseded is dropped, not re-queued: the
holder's commit schedules the next pass, and a dead holder's cluster is the due-scan's. So there is never
more than one live re-queue chain per cluster.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from kaas_core.db.models import (
    UNFINISHED_OPERATION_STATES,
    Cluster,
    ClusterAgent,
    ClusterPhase,
    Node,
    NodePool,
    NodeRole,
    Operation,
    OperationKind,
    OperationState,
    Quota,
    Region,
)
from provider.addons.catalog import AddonInputs
from provider.addons.join_tokens import bootstrap_token_secret
from provider.addons.kube_client import AddonApplyError
from provider.addons.reconcile import ADDONS_READY, AddonsOutcome, reconcile_addons
from provider.audit import record_provider_action
from provider.bootstrap.cloud_init import BootstrapError
from provider.bootstrap.node_binaries import IMAGE, NodeBinaries, NodeBinariesError
from provider.bootstrap.pki import PkiError
from provider.cloud.errors import (
    CloudCredentialsRefused,
    CloudError,
    CloudPermanentError,
    CloudTemporaryError,
)
from provider.reconciler.agent_gate import check_agent
from provider.reconciler.boot_report import NODE_BOOTSTRAP_FAILED, first_boot_failure
from provider.reconciler.context import ProviderContext, ReconcileLimits
from provider.reconciler.lease import (
    LeaseHeartbeat,
    acquire_lease,
    release_after_failure,
    release_and_schedule,
    why_not_leased,
)
from provider.reconciler.pki_store import (
    current_join_token,
    ensure_cluster_pki,
    mark_published,
    retire_join_tokens,
    unpublished_join_tokens,
)
from provider.reconciler.plan import (
    CONTROL_PLANE_READY,
    NETWORK_READY,
    NODES_READY,
    STEP_CONDITION,
    plan_steps,
    progress_of,
)
from provider.reconciler.status import (
    Condition,
    finish_operation,
    report_progress,
    set_conditions,
    start_operation,
    sync_nodes,
)
from provider.reconciler.steps import (
    STEP_FUNCTIONS,
    ClusterBootstrap,
    JoinWaveToken,
    PassState,
    create_member,
)
from provider.rollout.autoscale import ScaleDecision
from provider.rollout.health import NODES_HEALTHY
from provider.rollout.run import AutoscaleInputs, NodeOps, NodeOpsError, RolloutOutcome, run_rollout
from provider.webhooks.outbox import record_operation_finished, record_operation_paused

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    """What a pass did. ``requeue_after`` is None when the cluster needs no further pass for now."""

    # converged | progressing | paused | retrying | failed | deleted | deleting | skipped, and without a pass:
    # locked (another pass holds the lease), superseded (a pass ran since the message was sent), lost (our
    # lease was taken over mid-pass: nothing committed)
    outcome: str
    requeue_after: float | None = None
    message: str = ""
    queue: str | None = None  # the cluster's region queue, where a re-queue goes
    ticket: int | None = None  # the reconcile ticket the re-queue message carries
    # webhook deliveries this pass added to its transaction; the task sends them after the commit
    deliveries: tuple[str, ...] = ()


DELETE_STEP = "delete_resources"  # the one step of a deletion pass, as metrics name it
_T = TypeVar("_T")

_JITTER = random.Random()  # noqa: S311 (jitter spreads retries; nothing secret)


def backoff_seconds(failures: int, *, base: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at ``maximum``."""
    ceiling = min(maximum, base * float(2 ** max(0, failures - 1)))
    source = rng if rng is not None else _JITTER
    jitter = float(source.uniform(0, ceiling / 2))
    return ceiling / 2 + jitter


def _current_operation(session: Session, cluster_id: str, now: datetime) -> Operation | None:
    """The newest unfinished operation; older unfinished ones are superseded by it."""
    unfinished = session.scalars(
        select(Operation)
        .where(
            Operation.cluster_id == cluster_id,
            Operation.state.in_(UNFINISHED_OPERATION_STATES),
        )
        .order_by(Operation.created_at.desc(), Operation.id)
    ).all()
    if not unfinished:
        return None
    current, *older = unfinished
    for operation in older:
        finish_operation(operation, succeeded=False, error=f"superseded by operation {current.id}", now=now)
    return current


def reconcile_cluster_once(
    ctx: ProviderContext,
    cluster_id: str,
    *,
    worker_id: str,
    ticket: int | None = None,
) -> PassResult:
    """One pass; returns what it did and when to come back. Counted and timed on ``ctx.metrics``.

    ``ticket``: the one the message carried (re-queues and due-scans send one, the API does not); a stale
    one means the message was superseded and the pass does not run.
    """
    started = time.perf_counter()
    outcome = "crashed"
    try:
        result = _lease_and_run(ctx, cluster_id, worker_id=worker_id, ticket=ticket)
        outcome = result.outcome
        return result
    finally:
        ctx.metrics.observe_pass(outcome=outcome, seconds=time.perf_counter() - started)


def next_due(
    limits: ReconcileLimits, result: PassResult, *, now: datetime, observed_in_bulk: bool = False
) -> datetime | None:
    """When the cluster's next pass must have started, after a pass that ended with ``result``.

    Its re-queue message should start one after ``requeue_after``; the grace on top is how late that
    message may be before the due-scan sends another. A converged cluster is the bulk observation's when
    ``observed_in_bulk`` (its periodic check is all cloud: no agent gate), so it gets no due time; else it
    is checked again after the resync interval (by the due-scan alone). Anything else waits for the API.
    """
    if result.requeue_after is not None:
        return now + timedelta(seconds=result.requeue_after + limits.requeue_grace_seconds)
    if result.outcome == "converged" and observed_in_bulk:
        return None
    if result.outcome in ("converged", "paused"):  # a paused rollout still gets its periodic check
        return now + timedelta(seconds=limits.resync_interval_seconds)
    return None


def _lease_and_run(
    ctx: ProviderContext, cluster_id: str, *, worker_id: str, ticket: int | None
) -> PassResult:
    limits = ctx.limits
    lease = acquire_lease(
        ctx.session_factory,
        cluster_id,
        owner=worker_id,
        lease_seconds=limits.lease_seconds,
        now=ctx.clock(),
        ticket=ticket,
    )
    if lease is None:
        why = why_not_leased(ctx.session_factory, cluster_id, ticket=ticket)
        if why == "missing":
            return PassResult("skipped", message="no such cluster")
        if why == "superseded":
            return PassResult("superseded", message="a pass ran since this message was sent")
        return PassResult("locked", message="another worker holds it; its commit schedules the next pass")
    heartbeat = LeaseHeartbeat(
        ctx.session_factory,
        lease,
        lease_seconds=limits.lease_seconds,
        interval=limits.lease_renew_seconds,
        clock=ctx.clock,
    )
    # The heartbeat is left only after the session's transaction ended (see LeaseHeartbeat).
    with heartbeat:
        session = ctx.session_factory()
        try:
            result = _run_pass(ctx, session, cluster_id)
            heartbeat.stop_renewing()
            session.flush()
            due = next_due(limits, result, now=ctx.clock(), observed_in_bulk=not ctx.require_agent)
            new_ticket = release_and_schedule(session, lease, due=due)
            if new_ticket is None:
                session.rollback()
                logger.warning("cluster %s: lease taken over mid-pass; nothing committed", cluster_id)
                return PassResult("lost", message="the lease was taken over mid-pass; nothing was committed")
            session.commit()
            return replace(result, ticket=new_ticket)
        except Exception:
            # A bug or a database error: nothing of this pass is written; the lease is given back and the
            # due-scan tries again after the longest backoff. (A BaseException such as SystemExit is a dying
            # worker: the lease is left to run out, as after a crash.)
            session.rollback()
            heartbeat.stop_renewing()
            try:
                release_after_failure(
                    ctx.session_factory,
                    lease,
                    due=ctx.clock() + timedelta(seconds=limits.retry_max_seconds),
                )
            except Exception:  # the database itself may be what failed; the lease runs out anyway
                logger.exception("could not release the lease of cluster %s", cluster_id)
            raise
        finally:
            session.close()


def _run_pass(ctx: ProviderContext, session: Session, cluster_id: str) -> PassResult:
    now = ctx.clock()
    cluster = session.scalars(
        select(Cluster)
        .where(Cluster.id == cluster_id)
        .options(selectinload(Cluster.region), selectinload(Cluster.node_pools), selectinload(Cluster.nodes))
    ).one_or_none()
    if cluster is None:
        return PassResult("skipped", message="no such cluster")
    if cluster.phase == ClusterPhase.DELETED.value:
        return PassResult("skipped", message="deleted")
    if cluster.paused:
        return PassResult("skipped", message="paused")
    result = _reconcile_loaded(ctx, session, cluster, now=now)
    return replace(result, queue=cluster.region.queue)


def _reconcile_loaded(
    ctx: ProviderContext, session: Session, cluster: Cluster, *, now: datetime
) -> PassResult:
    after_step = ctx.after_step
    # First, while this pass's session has written nothing: the PKI and the join token are committed in
    # their own transactions (pki_store), which on SQLite would wait forever behind this session's write
    # lock. The steps below never query this session, so nothing is flushed before they ask for a token.
    bootstrap: ClusterBootstrap | None = None
    bootstrap_error: BootstrapError | None = None
    if cluster.phase != ClusterPhase.DELETING.value:
        try:
            bootstrap = _cluster_bootstrap(ctx, session, cluster, now=now)
        except BootstrapError as exc:
            bootstrap_error = exc
    operation = _current_operation(session, cluster.id, now)
    driver = ctx.driver(cluster.region.cloud)
    cluster.last_reconciled_at = now

    deleting = cluster.phase == ClusterPhase.DELETING.value or (
        operation is not None and operation.kind == OperationKind.DELETE.value
    )
    if deleting:
        return _delete_pass(ctx, session, cluster, operation, now=now)
    if cluster.phase == ClusterPhase.ERROR.value and operation is None:
        return PassResult("skipped", message="failed; waiting for a new operation")

    start_operation(operation, now=now)
    state = PassState(
        cluster=cluster,
        region=cluster.region,
        pools=list(cluster.node_pools),
        driver=driver,
        tunnel_url=ctx.tunnel_url,
        agent_token=None,
        server_error_retries=ctx.limits.server_error_retries,
        bootstrap=bootstrap,
        rollout_removes_surplus=bool(
            bootstrap is not None and bootstrap.initialized and ctx.node_ops is not None and ctx.require_agent
        ),
    )
    steps = plan_steps(cluster)
    reached: str | None = steps[0]
    waiting_for = ""
    error: CloudError | BootstrapError | None = None
    try:
        if bootstrap_error is not None:
            raise bootstrap_error
        state.agent_token = _agent_token(ctx, cluster)
        if bootstrap is not None:
            _publish_join_tokens(ctx, cluster.id, bootstrap, now=now)
        state.refresh_servers()
        with session.no_autoflush:  # see above: the join token's own transaction must not wait on this one
            for step in steps:
                reached = step
                outcome = _run_step(ctx, step, partial(STEP_FUNCTIONS[step], state), done=lambda o: o.done)
                if not outcome.done:
                    waiting_for = outcome.waiting_for
                    break
                if after_step is not None:
                    after_step(step)
            else:
                reached = None
    except CloudCredentialsRefused as exc:
        error = _of_region(cluster.region, exc)
    except (CloudError, BootstrapError) as exc:
        error = exc

    conditions = _conditions(state, steps, reached=reached, waiting_for=waiting_for, error=error)
    set_conditions(cluster, conditions, now=now)
    sync_nodes(
        cluster,
        list(cluster.nodes),
        state.servers.values(),
        {p.name: p for p in state.pools},
        session.add,
        session.delete,
    )
    if state.api_endpoint:
        cluster.api_endpoint = state.api_endpoint
    if state.new_cloud_credential is not None and state.new_cloud_credential.secret is not None:
        cluster.cloud_credential_id = state.new_cloud_credential.id
        cluster.cloud_credential_secret_encrypted = ctx.secret_box.encrypt(state.new_cloud_credential.secret)
    progress = progress_of(steps, reached)

    # refused region credentials are for an operator to fix, not the user's operation to fail: retried
    if error is not None and not isinstance(error, CloudTemporaryError | CloudCredentialsRefused):
        message = f"{reached}: {error}"
        cluster.phase = ClusterPhase.ERROR.value
        finish_operation(operation, succeeded=False, error=message, now=now)
        if operation is not None:
            operation.step = reached
        logger.warning("cluster %s failed permanently: %s", cluster.id, message)
        deliveries = record_operation_finished(session, operation, cluster, now=now)
        return PassResult("failed", message=message, deliveries=deliveries)

    if error is not None:
        cluster.reconcile_failures += 1
        delay = backoff_seconds(
            cluster.reconcile_failures,
            base=ctx.limits.retry_base_seconds,
            maximum=ctx.limits.retry_max_seconds,
        )
        report_progress(operation, step=reached or "done", progress=progress, error=f"{reached}: {error}")
        _mark_not_converged(cluster)
        return PassResult("retrying", requeue_after=delay, message=str(error))

    cluster.reconcile_failures = 0
    if reached is not None:
        report_progress(operation, step=reached, progress=progress, error=None)
        _mark_not_converged(cluster)
        return PassResult(
            "progressing",
            requeue_after=ctx.limits.poll_interval_seconds,
            message=f"waiting for {waiting_for}",
        )

    if ctx.require_agent:
        gate = check_agent(session, cluster, list(cluster.nodes), tunnel_url=ctx.tunnel_url)
        set_conditions(cluster, gate.conditions, now=now)
        if gate.connected:
            for node in cluster.nodes:  # the clock self-healing and the upgrade's Ready timeout read
                node.not_ready_since = None if node.ready else (node.not_ready_since or now)
        if not gate.ready:
            failed = _boot_failure(ctx, session, cluster, state, operation, now=now)
            if failed is not None:
                return failed
        # add-ons go in as soon as the agent is connected: the CNI is what makes the nodes Ready
        if gate.connected and gate.tunnel_address and ctx.addons is not None:
            addons = _reconcile_addons(ctx, session, cluster, state, gate.tunnel_address, now=now)
            set_conditions(
                cluster, [Condition(ADDONS_READY, addons.status, addons.reason, addons.message)], now=now
            )
            if addons.error is not None and not addons.error.temporary:
                message = f"addons: {addons.message}"
                cluster.phase = ClusterPhase.ERROR.value
                finish_operation(operation, succeeded=False, error=message, now=now)
                if operation is not None:
                    operation.step = "addons"
                logger.warning("cluster %s failed permanently: %s", cluster.id, message)
                deliveries = record_operation_finished(session, operation, cluster, now=now)
                return PassResult("failed", message=message, deliveries=deliveries)
            if not addons.ready:
                cluster.reconcile_failures += 1
                report_progress(operation, step="addons", progress=96, error=addons.message)
                _mark_not_converged(cluster)
                delay = backoff_seconds(
                    cluster.reconcile_failures,
                    base=ctx.limits.retry_base_seconds,
                    maximum=ctx.limits.retry_max_seconds,
                )
                return PassResult("retrying", requeue_after=delay, message=addons.message)
        if gate.connected and gate.tunnel_address:
            rollout = _rollout(ctx, session, cluster, state, operation, gate.tunnel_address, now=now)
            if rollout.health is not None:
                healthy = not rollout.health.unhealthy
                set_conditions(
                    cluster,
                    [
                        Condition(
                            NODES_HEALTHY,
                            healthy and not rollout.health.short_circuited,
                            "Healthy"
                            if healthy
                            else ("ShortCircuited" if rollout.health.short_circuited else "Replacing"),
                            rollout.health.message,
                        )
                    ],
                    now=now,
                )
            if rollout.paused:
                deliveries = record_operation_paused(session, operation, cluster, now=now)
                _mark_not_converged(cluster)
                return PassResult("paused", message=rollout.message, deliveries=deliveries)
            if operation is not None and operation.state == OperationState.CANCELLED.value:
                deliveries = record_operation_finished(session, operation, cluster, now=now)
            elif not rollout.done:
                report_progress(operation, step="rollout", progress=rollout.progress, error=None)
                _mark_not_converged(cluster)
                return PassResult(
                    "progressing", requeue_after=ctx.limits.poll_interval_seconds, message=rollout.message
                )
        if not gate.ready:
            report_progress(operation, step="agent", progress=95, error=None)
            _mark_not_converged(cluster)
            return PassResult(
                "progressing", requeue_after=ctx.limits.poll_interval_seconds, message=gate.message
            )

        # every node joined: the wave's tokens are handed out no more, and go from the cluster too
        _retire_join_tokens(ctx, session, cluster.id, gate.tunnel_address, now=now)

    cluster.phase = ClusterPhase.RUNNING.value
    cluster.observed_generation = max(cluster.observed_generation, cluster.generation)
    if operation is not None and operation.target_generation <= cluster.generation:
        finish_operation(operation, succeeded=True, error=None, now=now)
    return PassResult("converged", deliveries=record_operation_finished(session, operation, cluster, now=now))


def _rollout(
    ctx: ProviderContext,
    session: Session,
    cluster: Cluster,
    state: PassState,
    operation: Operation | None,
    tunnel_address: str,
    *,
    now: datetime,
) -> RolloutOutcome:
    """The day-2 part of the pass (``provider.rollout.run``): replacements, drains, scale-downs."""
    agent = session.get(ClusterAgent, cluster.id)
    reported = {
        str(n.get("name")): str(n.get("kubelet_version"))
        for n in (agent.nodes if agent is not None else []) or []
        if n.get("kubelet_version")
    }

    def delete_server(server_id: str) -> None:
        state.driver.delete_server(server_id)
        for name, server in list(state.servers.items()):
            if server.id == server_id:
                del state.servers[name]

    def record_repair(names: list[str]) -> None:
        if operation is None:  # no operation in hand: the replacement is one of its own
            session.add(
                Operation(
                    cluster_id=cluster.id,
                    project_id=cluster.project_id,
                    kind=OperationKind.REPAIR.value,
                    state=OperationState.RUNNING.value,
                    step="repair",
                    params={"replaced": sorted(names)},
                    target_generation=cluster.generation,
                    created_at=now,
                    started_at=now,
                )
            )
        record_provider_action(
            session,
            cluster,
            action="cluster.nodes.repair",
            route="provider.rollout.health",
            detail={"replaced": sorted(names), "reason": "NotReady longer than the health threshold"},
            now=now,
        )

    def nodes_left_in_quota() -> int | None:
        quota = session.get(Quota, cluster.project_id)
        if quota is None or quota.max_nodes is None:
            return None
        live = (
            select(Cluster.id)
            .where(Cluster.project_id == cluster.project_id, Cluster.phase != ClusterPhase.DELETED.value)
            .scalar_subquery()
        )
        pools = session.scalar(
            select(func.coalesce(func.sum(NodePool.count), 0)).where(NodePool.cluster_id.in_(live))
        )
        planes = session.scalar(
            select(func.coalesce(func.sum(Cluster.control_plane_count), 0)).where(
                Cluster.project_id == cluster.project_id, Cluster.phase != ClusterPhase.DELETED.value
            )
        )
        return max(0, quota.max_nodes - int(pools or 0) - int(planes or 0))

    def record_scale(decision: ScaleDecision) -> None:
        record_provider_action(
            session,
            cluster,
            action="cluster.node_pools.autoscale",
            route="provider.rollout.autoscale",
            resource_type="node_pool",
            resource_id=decision.pool,
            detail={"count": decision.count, "remove": list(decision.remove), "reason": decision.reason},
            now=now,
        )

    autoscale = AutoscaleInputs(
        flavors={
            str(f.get("name")): (int(f.get("vcpus") or 0), int(f.get("ram_mb") or 0))
            for f in cluster.region.flavors or []
        },
        nodes_left_in_quota=nodes_left_in_quota,
        scale_down_after=ctx.autoscale_scale_down_after,
        record=record_scale,
    )

    def act(node_ops: NodeOps | None) -> RolloutOutcome:
        return run_rollout(
            cluster=cluster,
            pools=state.pools,
            nodes=list(cluster.nodes),
            servers=list(state.servers.values()),
            operation=operation,
            node_ops=node_ops,
            create_server=partial(create_member, state),
            delete_server=delete_server,
            defaults=ctx.rollout_defaults,
            health_policy=ctx.health_policy,
            record_repair=record_repair,
            reported_versions=reported,
            now=now,
            autoscale=autoscale,
        )

    if ctx.node_ops is None:
        return act(None)
    try:
        with ctx.node_ops(tunnel_address, cluster.id) as node_ops:
            return act(node_ops)
    except NodeOpsError as exc:
        return RolloutOutcome(False, message=f"the cluster did not answer: {exc}")


def _boot_failure(
    ctx: ProviderContext,
    session: Session,
    cluster: Cluster,
    state: PassState,
    operation: Operation | None,
    *,
    now: datetime,
) -> PassResult | None:
    """A node whose boot reported a failure on its console fails the operation (cloud-init runs once: the
    node never joins by itself), with the node, the step and why on its condition and the operation."""
    ready = {node.name for node in cluster.nodes if node.ready}
    failure = first_boot_failure(state.driver, state.servers.values(), ready=ready)
    if failure is None:
        return None
    condition = CONTROL_PLANE_READY if failure.role == NodeRole.CONTROL_PLANE.value else NODES_READY
    set_conditions(cluster, [Condition(condition, False, NODE_BOOTSTRAP_FAILED, failure.message)], now=now)
    message = f"bootstrap: {failure.message}"
    cluster.phase = ClusterPhase.ERROR.value
    finish_operation(operation, succeeded=False, error=message, now=now)
    if operation is not None:
        operation.step = "bootstrap"
    logger.warning("cluster %s failed permanently: %s", cluster.id, message)
    deliveries = record_operation_finished(session, operation, cluster, now=now)
    return PassResult("failed", message=message, deliveries=deliveries)


def _run_step(ctx: ProviderContext, step: str, run: Callable[[], _T], *, done: Callable[[_T], bool]) -> _T:
    """Run one step, counting and timing it on ``ctx.metrics`` by how it ended."""
    started = time.perf_counter()
    outcome = "crashed"
    try:
        result = run()
        outcome = "converged" if done(result) else "progressing"
        return result
    except CloudTemporaryError:
        outcome = "temporary_error"
        raise
    except (CloudError, BootstrapError):
        outcome = "permanent_error"
        raise
    finally:
        ctx.metrics.observe_step(step=step, outcome=outcome, seconds=time.perf_counter() - started)


def _cluster_bootstrap(
    ctx: ProviderContext, session: Session, cluster: Cluster, *, now: datetime
) -> ClusterBootstrap:
    """The PKI (generated on the first pass), the region's node-binaries choice and the join token source.

    New PKI and tokens are committed in their own transactions (``pki_store`` says why); the pass's session
    has written nothing yet here, so they never wait on it."""
    region = cluster.region
    try:
        pki = ensure_cluster_pki(ctx.session_factory, cluster.id, box=ctx.secret_box, now=now)
        binaries = NodeBinaries(
            source=region.node_binaries or IMAGE,
            base_image=region.image,
            images=dict(region.node_images or {}),
            mirror_url=region.package_mirror_url,
            mirror_key=region.package_mirror_key,
        )
    except (PkiError, NodeBinariesError) as exc:
        raise BootstrapError(str(exc)) from exc
    agent = session.get(ClusterAgent, cluster.id)
    initialized = cluster.observed_generation > 0 or (agent is not None and agent.connected_at is not None)

    def join_token() -> JoinWaveToken:
        try:
            token = current_join_token(ctx.session_factory, cluster.id, box=ctx.secret_box, now=now)
        except PkiError as exc:
            raise BootstrapError(str(exc)) from exc
        # Without an applier (ProviderSettings.manage_addons off) nothing can put the token into the cluster:
        # the wave goes ahead rather than wait for ever (a scale-up of `kaas up`'s stand-ins did).
        published = token.published or ctx.addons is None
        return JoinWaveToken(value=token.value, expires_at=token.expires_at, published=published)

    def token_created_by_init(token: JoinWaveToken) -> None:
        mark_published(ctx.session_factory, cluster.id, [token.value.split(".", 1)[0]], now=now)

    # where kaas reaches the cluster, while its agent is connected
    tunnel_address = agent.tunnel_address if agent is not None and agent.connected else None
    return ClusterBootstrap(
        token_created_by_init=token_created_by_init,
        tunnel_address=tunnel_address,
        pki=pki,
        binaries=binaries,
        initialized=initialized,
        join_token=join_token,
        agent_image=ctx.agent_image,
        now=now,
    )


def _publish_join_tokens(
    ctx: ProviderContext, cluster_id: str, bootstrap: ClusterBootstrap, *, now: datetime
) -> None:
    """Put the Secrets of live, unpublished join tokens into an initialized cluster through its agent (their
    servers wait for it: ``steps._join_token_pending``). Best effort: a failure is logged and the steps
    say what they wait for."""
    if not bootstrap.initialized or bootstrap.tunnel_address is None or ctx.addons is None:
        return
    try:
        tokens = unpublished_join_tokens(ctx.session_factory, cluster_id, box=ctx.secret_box, now=now)
        if not tokens:
            return
        with ctx.addons(bootstrap.tunnel_address, cluster_id) as applier:
            for token in tokens:
                applier.apply(
                    bootstrap_token_secret(
                        cluster_id=cluster_id,
                        token_id=token.token_id,
                        secret=token.secret,
                        expires_at=token.expires_at,
                    )
                )
        mark_published(ctx.session_factory, cluster_id, [t.token_id for t in tokens], now=now)
    except (AddonApplyError, PkiError) as exc:
        logger.warning("cluster %s: join tokens not published yet: %s", cluster_id, exc)


def _retire_join_tokens(
    ctx: ProviderContext, session: Session, cluster_id: str, tunnel_address: str | None, *, now: datetime
) -> None:
    retired = retire_join_tokens(session, cluster_id, now=now, all_joined=True)
    if not retired or tunnel_address is None or ctx.addons is None:
        return
    try:
        with ctx.addons(tunnel_address, cluster_id) as applier:
            for token_id in retired:
                applier.delete("v1", "Secret", f"bootstrap-token-{token_id}", "kube-system")
    except AddonApplyError as exc:  # the controller manager's token cleaner deletes it when it expires
        logger.warning(
            "cluster %s: a retired join token's Secret stays until it expires: %s", cluster_id, exc
        )


def _reconcile_addons(
    ctx: ProviderContext,
    session: Session,
    cluster: Cluster,
    state: PassState,
    tunnel_address: str,
    *,
    now: datetime,
) -> AddonsOutcome:
    """The add-on step's inputs from what the pass knows, then the step (``provider.addons.reconcile``)."""
    assert ctx.addons is not None
    new = state.new_cloud_credential
    try:
        if new is not None and new.secret is not None:
            credential_id, secret = new.id, new.secret
        elif cluster.cloud_credential_id and cluster.cloud_credential_secret_encrypted:
            credential_id = cluster.cloud_credential_id
            secret = ctx.secret_box.decrypt(cluster.cloud_credential_secret_encrypted)
        else:
            raise AddonApplyError("the cluster has no cloud credential yet", temporary=True)
        if state.agent_token is None:
            raise AddonApplyError("the cluster has no agent token", temporary=False)
        endpoint = state.driver.cloud_endpoint()
        inputs = AddonInputs(
            cluster_id=cluster.id,
            pod_cidr=cluster.pod_cidr,
            auth_url=endpoint.auth_url,
            region_name=endpoint.region_name,
            credential_id=credential_id,
            credential_secret=secret,
            subnet_id=state.network.subnet_id if state.network else None,
            external_network_id=None,
            tunnel_url=ctx.tunnel_url,
            agent_token=state.agent_token,
            agent_image=ctx.agent_image,
        )
    except (ValueError, CloudError) as exc:  # a secret that no longer decrypts, a cloud that does not answer
        error = AddonApplyError(str(exc), temporary=isinstance(exc, CloudTemporaryError))
        return AddonsOutcome(False, False, "AddonInputsUnavailable", str(exc), error=error)
    except AddonApplyError as exc:
        return AddonsOutcome(False, False, "AddonInputsUnavailable", str(exc), error=exc)
    return reconcile_addons(
        session,
        cluster.id,
        inputs=inputs,
        tunnel_address=tunnel_address,
        open_applier=ctx.addons,
        now=now,
        addons=ctx.addon_catalog,
    )


def _agent_token(ctx: ProviderContext, cluster: Cluster) -> str | None:
    if not cluster.agent_token_encrypted:
        return None
    try:
        return ctx.secret_box.decrypt(cluster.agent_token_encrypted)
    except ValueError as exc:
        raise BootstrapError(str(exc)) from exc


def _of_region(region: Region, exc: CloudCredentialsRefused) -> CloudCredentialsRefused:
    """The refusal, saying which region's credentials it is about (the driver knows only its cloud)."""
    return CloudCredentialsRefused(f"credentials of region {region.name!r}: {exc}")


def _mark_not_converged(cluster: Cluster) -> None:
    """Provisioning until the cluster first converged; updating (a change or a repair) after that."""
    cluster.phase = (
        ClusterPhase.PROVISIONING.value if cluster.observed_generation == 0 else ClusterPhase.UPDATING.value
    )


def _conditions(
    state: PassState, steps: list[str], *, reached: str | None, waiting_for: str, error: Exception | None
) -> list[Condition]:
    """Each condition is True when all of its steps are done, else False with the reason it is not."""
    result = []
    for condition_type in (NETWORK_READY, CONTROL_PLANE_READY, NODES_READY):
        own = [s for s in steps if STEP_CONDITION[s] == condition_type]
        done = reached is None or steps.index(reached) > steps.index(own[-1])
        if done and condition_type == CONTROL_PLANE_READY and reached is not None:
            done = _control_plane_active(state)
            if not done:
                result.append(
                    Condition(
                        condition_type,
                        False,
                        "Waiting",
                        "waiting for the control-plane servers to become ACTIVE",
                    )
                )
                continue
        if done:
            result.append(Condition(condition_type, True, "Ready", ""))
        elif reached is not None and STEP_CONDITION[reached] == condition_type and error is not None:
            result.append(Condition(condition_type, False, type(error).__name__, f"{reached}: {error}"))
        elif reached is not None and STEP_CONDITION[reached] == condition_type:
            result.append(Condition(condition_type, False, "Waiting", f"waiting for {waiting_for}"))
        else:
            result.append(Condition(condition_type, False, "Pending", f"waiting for step {reached}"))
    return result


def _control_plane_active(state: PassState) -> bool:
    servers = [s for s in state.servers_of(NodeRole.CONTROL_PLANE.value) if s.status != "ERROR"]
    return len(servers) >= state.cluster.control_plane_count and all(s.status == "ACTIVE" for s in servers)


def _delete_pass(
    ctx: ProviderContext, session: Session, cluster: Cluster, operation: Operation | None, *, now: datetime
) -> PassResult:
    start_operation(operation, now=now)
    cluster.phase = ClusterPhase.DELETING.value
    driver = ctx.driver(cluster.region.cloud)
    try:
        left = _run_step(
            ctx, DELETE_STEP, partial(driver.delete_cluster_resources, cluster.id), done=lambda left: not left
        )
    except (CloudTemporaryError, CloudCredentialsRefused) as exc:
        if isinstance(exc, CloudCredentialsRefused):
            exc = _of_region(cluster.region, exc)
        cluster.reconcile_failures += 1
        report_progress(operation, step="delete_resources", progress=10, error=str(exc))
        set_conditions(cluster, [Condition(NETWORK_READY, False, type(exc).__name__, str(exc))], now=now)
        delay = backoff_seconds(
            cluster.reconcile_failures,
            base=ctx.limits.retry_base_seconds,
            maximum=ctx.limits.retry_max_seconds,
        )
        return PassResult("retrying", requeue_after=delay, message=str(exc))
    except CloudPermanentError as exc:
        cluster.phase = ClusterPhase.ERROR.value
        finish_operation(operation, succeeded=False, error=f"delete: {exc}", now=now)
        deliveries = record_operation_finished(session, operation, cluster, now=now)
        return PassResult("failed", message=str(exc), deliveries=deliveries)
    cluster.reconcile_failures = 0
    if left:
        kinds = sorted({r.kind for r in left})
        report_progress(operation, step="delete_resources", progress=50, error=None)
        set_conditions(
            cluster,
            [
                Condition(t, False, "Deleting", f"{len(left)} resources left: {', '.join(kinds)}")
                for t in (NETWORK_READY, CONTROL_PLANE_READY, NODES_READY)
            ],
            now=now,
        )
        return PassResult("deleting", requeue_after=ctx.limits.poll_interval_seconds)
    for node in session.scalars(select(Node).where(Node.cluster_id == cluster.id)):
        session.delete(node)
    cluster.phase = ClusterPhase.DELETED.value
    cluster.observed_generation = cluster.generation
    cluster.deleted_at = cluster.deleted_at or now
    cluster.api_endpoint = None
    cluster.cloud_credential_id = cluster.cloud_credential_secret_encrypted = None  # deleted with the rest
    set_conditions(
        cluster,
        [Condition(t, False, "Deleted", "") for t in (NETWORK_READY, CONTROL_PLANE_READY, NODES_READY)],
        now=now,
    )
    finish_operation(operation, succeeded=True, error=None, now=now)
    return PassResult("deleted", deliveries=record_operation_finished(session, operation, cluster, now=now))


__all__ = ["NodePool", "PassResult", "Region", "backoff_seconds", "next_due", "reconcile_cluster_once"]
