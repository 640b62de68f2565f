"""The ``kaas`` command: assembles the sub-commands."""

from __future__ import annotations

import typer

from kaas_cli.commands import admin, api_token, cluster, node_pool, operation, project, region, webhook
from kaas_cli.commands.common import Wiring, use_wiring
from kaas_cli.commands.kubeconfig import kubeconfig, token_app
from kaas_cli.commands.login import login
from kaas_cli.commands.serve import api, beat, db_app, tunnel, worker
from kaas_cli.commands.token import token
from kaas_cli.commands.up import up

app = typer.Typer(
    help="kaas: self-service Kubernetes clusters on OpenStack.", no_args_is_help=True, add_completion=False
)


@app.callback()
def _wire(context: typer.Context) -> None:
    # the caller's wiring (an in-process transport) for the command about to run; a shell passes none
    use_wiring(context.obj if isinstance(context.obj, Wiring) else Wiring())


app.command(help="Start everything on embedded defaults (SQLite, in-process worker, simulated cloud).")(up)
app.command(help="Run the API server.")(api)
app.command(help="Run a provider worker.")(worker)
app.command(help="Run the periodic sweep scheduler.")(beat)
app.command(help="Run a tunnel server for cluster agents.")(tunnel)
app.command(help="Save the API URL and token for the next commands.")(login)
app.command(help="Print an ExecCredential for kubectl (the exec plugin of `kubeconfig --exec`).")(token)
app.add_typer(db_app, name="db")
app.add_typer(admin.app, name="admin")
app.add_typer(project.app, name="project")
cluster.app.command(name="kubeconfig", help="Download a kubeconfig that reaches the cluster through kaas.")(
    kubeconfig
)
cluster.app.add_typer(node_pool.app, name="node-pool")
cluster.app.add_typer(token_app, name="kubeconfig-token")
app.add_typer(cluster.app, name="cluster")
app.add_typer(operation.app, name="operation")
app.add_typer(region.app, name="region")
app.add_typer(api_token.app, name="api-token")
app.add_typer(webhook.app, name="webhook")

if __name__ == "__main__":
    app()
